"""The `cai` command line. Each pipeline stage registers its own subcommands; this module only
dispatches and turns `CaiError`s into one-line messages with their exit codes (2 input, 3 partial)."""
from __future__ import annotations

import argparse
import importlib
import sys

from cai import __version__, quiet
from cai.errors import CaiError

# Modules that provide `register(subparsers)`. Registration must stay import-light (no torch):
# heavy imports happen inside the command handlers.
COMMAND_MODULES = [
    "cai.models",
    "cai.generate.cli",
    "cai.constitution.cli",
    "cai.critique.cli",
    "cai.feedback.cli",
    "cai.labelui",
    "cai.contrast.cli",
    "cai.evaluate.cli",
    "cai.train.cli",
    "cai.pipeline.cli",
    "cai.report.cli",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message and exits 2; keep it to one line
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cai", description="Constitutional AI and RLAIF: constitutions, critique and "
                     "revision, AI feedback, and training stages.")
    parser.add_argument("--version", action="version", version=f"cai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):  # stage not built yet
                continue
            raise
        mod.register(sub)
    for leaf in _leaf_parsers(parser):
        leaf.add_argument("--verbose", action="store_true", help="show the engines' and libraries' start-up "
                          "logs and warnings (default: hidden; also CAI_VERBOSE=1)")
    return parser


def _leaf_parsers(parser: argparse.ArgumentParser):
    """Every parser that runs a command (`cai run`, `cai train sft`, ...), so each takes `--verbose`."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
    for a in subs:
        for child in dict.fromkeys(a.choices.values()):  # aliases map to the same parser
            yield from _leaf_parsers(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet.configure(True if getattr(args, "verbose", False) else None)  # before any heavy import
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        rc = args.func(args)
    except CaiError as e:
        print(f"cai: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("cai: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
