"""CLI of human feedback: `cai label-ui` and `cai labels export` (`cai eval agreement` is in cai/evaluate/cli.py)."""
from __future__ import annotations

import argparse

from cai.labelui.export import ExportConfig, export_labels
from cai.labelui.server import ServerConfig, serve
from cai.stage import print_summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label-ui", help="serve a page for humans to compare responses (labels -> SQLite)")
    p.add_argument("--data", required=True, help="dataset dir from cai rlaif, label, sample or critique")
    p.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1; others need --allow-remote)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--db", default="", help="label store (default DATA/human_labels.sqlite)")
    p.add_argument("--allow-remote", action="store_true",
                   help="permit a non-loopback --host (needs --tokens, and --certfile/--keyfile or --insecure)")
    p.add_argument("--tokens", default="", help="file of `NAME TOKEN` lines; annotators then sign in by token")
    p.add_argument("--certfile", default="", help="PEM certificate: serve HTTPS (with --keyfile)")
    p.add_argument("--keyfile", default="", help="PEM private key of --certfile")
    p.add_argument("--insecure", action="store_true",
                   help="permit plain HTTP on a non-loopback --host (tokens and labels travel unencrypted)")
    p.add_argument("--constitution", default=None, help="constitution whose principle texts are revealed "
                   "(default: the one the data names)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("labels", help="human labels: export")
    lsub = p.add_subparsers(dest="labels_command", metavar="WHAT", parser_class=type(p))
    e = lsub.add_parser("export", help="merge human and AI labels into a `prefs` dataset for cai train rm|dpo")
    e.add_argument("--data", required=True, help="the labelled dataset dir")
    e.add_argument("--out", required=True, help="output dataset dir")
    e.add_argument("--db", default="", help="label store (default DATA/human_labels.sqlite)")
    e.add_argument("--policy", default="human-overrides", choices=["human-overrides", "both", "human", "ai"],
                   help="human-overrides (default): human vote rate where humans voted, else the AI label; "
                        "both: their mean where both exist; human / ai: one source only")
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=_cmd_export)


def _cmd_serve(args) -> int:
    serve(ServerConfig(data=args.data, db=args.db, host=args.host, port=args.port, allow_remote=args.allow_remote,
                       tokens=args.tokens, constitution=args.constitution, certfile=args.certfile,
                       keyfile=args.keyfile, insecure=args.insecure))
    return 0


def _cmd_export(args) -> int:
    m = export_labels(ExportConfig(data=args.data, out=args.out, db=args.db, policy=args.policy,
                                   overwrite=args.overwrite))
    print_summary("labels export", [("pairs", m["pairs"]), ("rows", m["rows"]),
                                    *[(k, v) for k, v in sorted(m["sources"].items())],
                                    ("annotators", len(m["annotators"])), ("stale labels", m["stale_labels"]),
                                    ("out", m["out"])])
    return 0

