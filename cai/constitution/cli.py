"""`cai constitution lint|show|diff|import|list`: check, inspect, compare and import constitutions.

Registration imports nothing heavy; the handlers import the constitution modules when they run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from cai.constitution import available, constitutions_dir, load_constitution
from cai.constitution.checks import declared_checks, validate_checks
from cai.constitution.diff import diff, format_diff
from cai.constitution.importers import IMPORTERS, to_yaml
from cai.constitution.lint import lint
from cai.constitution.schema import Id
from cai.constitution.starter import starter
from cai.errors import InputError
from cai.resources import is_shipped_copy


def register(subparsers) -> None:
    p = subparsers.add_parser("constitution", help="lint, show, diff and import constitutions")
    sub = p.add_subparsers(dest="constitution_command", metavar="ACTION", required=True,
                           parser_class=type(p))

    q = sub.add_parser("lint", help="validate constitutions and warn about weak principles or examples")
    q.add_argument("files", nargs="+", metavar="FILE", help="constitution name or path")
    q.add_argument("--strict", action="store_true", help="exit 2 on warnings too")
    q.set_defaults(func=cmd_lint)

    q = sub.add_parser("show", help="print the resolved constitution (after extends) with its hashes")
    q.add_argument("file", metavar="FILE")
    q.add_argument("--json", action="store_true", help="machine-readable JSON")
    q.set_defaults(func=cmd_show)

    q = sub.add_parser("diff", help="list principles added, removed and changed between A and B")
    q.add_argument("a", metavar="A")
    q.add_argument("b", metavar="B")
    q.add_argument("--json", action="store_true")
    q.add_argument("--exit-code", action="store_true", help="exit 1 when the constitutions differ")
    q.set_defaults(func=cmd_diff)

    q = sub.add_parser("import", help="convert a constitution from another format into cai YAML")
    q.add_argument("--format", required=True, choices=["anthropic-paper", "hf-recipe"])
    q.add_argument("src", metavar="SRC", help="the paper's prompts/ directory, or the recipe's JSON file")
    q.add_argument("--out", required=True, metavar="FILE.yaml")
    q.add_argument("--name", help="constitution name (default: from the source)")
    q.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    q.set_defaults(func=cmd_import)

    q = sub.add_parser("new", help="write a commented starter constitution to edit (lints clean)",
                       description="Write NAME.yaml: critique and comparison principles, RLCD framings, a "
                       "rubric and an example of checks, each commented. In a source checkout it goes to "
                       "constitutions/, where `vars.constitution=NAME` finds it. An existing file is never "
                       "replaced.")
    q.add_argument("name", metavar="NAME", help="the constitution's name (letters, digits, . _ -)")
    q.add_argument("--out", metavar="FILE.yaml", help="where to write it (default: constitutions/NAME.yaml in a "
                   "source checkout, else ./NAME.yaml)")
    q.set_defaults(func=cmd_new)

    q = sub.add_parser("list", help="list the shipped constitutions")
    q.set_defaults(func=cmd_list)


def cmd_lint(args: argparse.Namespace) -> int:
    rc = 0
    for f in args.files:
        try:
            c = load_constitution(f)
            validate_checks(c)  # imports each python grader: an error, not a warning
        except InputError as e:
            print(f"cai: error: {e}", file=sys.stderr)
            rc = 2
            continue
        warnings = lint(c)
        for w in warnings:
            print(w, file=sys.stderr)
        if warnings and args.strict:
            rc = 2
        print(f"{f}: {'ok' if not warnings else f'{len(warnings)} warning(s)'} "
              f"({len(c.critiques)} critiques, {len(c.comparisons)} comparisons, {len(declared_checks(c))} checks, "
              f"hash {c.hash[:12]})")
    return rc


def resolved_dict(c) -> dict:
    """The resolved constitution as plain data, with the constitution's and each principle's hash."""
    d = {"name": c.name, "version": c.version, "hash": c.hash, "description": c.description,
         "source_path": str(c.source_path) if c.source_path else None, "parents": c.parents}
    d["critiques"] = [{"id": p.id, "hash": p.hash, **_principle(p)} for p in c.critiques]
    d["comparisons"] = [{"id": p.id, "hash": p.hash, **_principle(p)} for p in c.comparisons]
    d.update(c.model_dump(mode="json", include={"system_prompt", "scoring", "templates", "few_shot", "checks"}))
    return d


def _principle(p) -> dict:
    return p.model_dump(mode="json", exclude={"id"} | ({"checks"} if not p.checks else set()))


def cmd_show(args: argparse.Namespace) -> int:
    d = resolved_dict(load_constitution(args.file))
    print(json.dumps(d, indent=2, ensure_ascii=False) if args.json else to_yaml(d), end="\n" if args.json else "")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    d = diff(load_constitution(args.a), load_constitution(args.b))
    print(json.dumps(d, indent=2) if args.json else format_diff(d))
    return 1 if args.exit_code and d["a_hash"] != d["b_hash"] else 0


def cmd_import(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        raise InputError("already exists; pass --force to overwrite", file=out)
    data = IMPORTERS[args.format](Path(args.src), args.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_yaml(data, header=f"Imported by `cai constitution import --format {args.format}` "
                                        f"from {args.src}"), encoding="utf-8")
    c = load_constitution(out)  # the written file must load; a failure here is a bug in the importer
    warnings = lint(c)
    for w in warnings:
        print(w, file=sys.stderr)
    fs = c.few_shot
    print(f"wrote {out}: {len(c.critiques)} critiques, {len(c.comparisons)} comparisons, "
          f"{len(fs.critique)} critique examples, {len(fs.comparison)} comparison examples, hash {c.hash[:12]}")
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    try:
        TypeAdapter(Id).validate_python(args.name)
    except ValidationError:
        raise InputError(f"{args.name!r} is not a constitution name (letters, digits, '.', '_', '-'; a letter or "
                         "digit first)", field="NAME") from None
    d = constitutions_dir()
    in_checkout = args.out is None and d.is_dir() and not is_shipped_copy(d)
    out = Path(args.out) if args.out else (d / f"{args.name}.yaml" if in_checkout else Path(f"{args.name}.yaml"))
    ref = args.name if in_checkout else str(out)
    try:
        with open(out, "x", encoding="utf-8") as f:  # "x": an existing file is never replaced, even in a race
            f.write(starter(args.name, ref))
    except FileExistsError:
        raise InputError("already exists; edit it, or choose another NAME or --out", file=out) from None
    except OSError as e:
        raise InputError(f"cannot write it ({e.strerror})", file=out) from None
    c = load_constitution(out)  # the starter must load and lint clean; a failure here is a bug in it
    warnings = lint(c)
    for w in warnings:
        print(w, file=sys.stderr)
    print(f"wrote {out}: {len(c.critiques)} critiques, {len(c.comparisons)} comparisons, hash {c.hash[:12]}; "
          f"lint {'ok' if not warnings else f'{len(warnings)} warning(s)'}")
    print(f"next: edit it, then `cai run configs/quickstart.yaml vars.constitution={ref}`")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    for name in available():
        c = load_constitution(name)
        print(f"{name:20s} v{c.version:8s} {len(c.critiques):3d} critiques {len(c.comparisons):3d} comparisons  "
              f"{c.hash[:12]}")
    if not available():
        print(f"no constitutions in {constitutions_dir()}", file=sys.stderr)
    return 0
