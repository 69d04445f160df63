"""CLI of human feedback: `cai label-ui`, `cai labels export`, `cai eval agreement`. Import-light."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label-ui", help="serve a page for humans to compare responses (labels -> SQLite)")
    p.add_argument("--data", required=True, help="dataset dir from cai rlaif, label, sample or critique")
    p.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1; others need --allow-remote)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--db", default="", help="label store (default DATA/human_labels.sqlite)")
    p.add_argument("--allow-remote", action="store_true", help="permit a non-loopback --host (needs --tokens)")
    p.add_argument("--tokens", default="", help="file of `NAME TOKEN` lines; annotators then sign in by token")
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

    # `cai eval` may gain sub-commands from other stages: reuse its sub-parsers when it exists.
    ev = sub.choices.get("eval")
    if ev is None:
        ev = sub.add_parser("eval", help="evaluate models and judges")
        ev._cai_sub = ev.add_subparsers(dest="eval_command", metavar="WHAT", parser_class=type(ev))
    a = ev._cai_sub.add_parser("agreement", help="AI vs human labels: accuracy, Cohen's kappa, calibration")
    a.add_argument("--data", required=True, help="the labelled dataset dir")
    a.add_argument("--db", default="", help="label store (default DATA/human_labels.sqlite)")
    a.add_argument("--out", default="", help="output dir for agreement.json and calibration.png "
                   "(default DATA/agreement)")
    a.add_argument("--bins", type=int, default=5, help="calibration bins over p_chosen in [0.5, 1]")
    a.set_defaults(func=_cmd_agreement)


def _cmd_serve(args) -> int:
    from cai.labelui.server import ServerConfig, serve
    serve(ServerConfig(data=args.data, db=args.db, host=args.host, port=args.port, allow_remote=args.allow_remote,
                       tokens=args.tokens, constitution=args.constitution))
    return 0


def _cmd_export(args) -> int:
    from cai.labelui.export import ExportConfig, export_labels
    from cai.stage import print_summary
    m = export_labels(ExportConfig(data=args.data, out=args.out, db=args.db, policy=args.policy,
                                   overwrite=args.overwrite))
    print_summary("labels export", [("pairs", m["pairs"]), ("rows", m["rows"]),
                                    *[(k, v) for k, v in sorted(m["sources"].items())],
                                    ("annotators", len(m["annotators"])), ("stale labels", m["stale_labels"]),
                                    ("out", m["out"])])
    return 0


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _cmd_agreement(args) -> int:
    from cai.evaluate.agreement import AgreementConfig, eval_agreement
    cfg = AgreementConfig(data=args.data, db=args.db, out=args.out, bins=args.bins)
    r = eval_agreement(cfg)
    rows = [("overall", r["overall"])] + list(r["per_principle"].items())
    print(f"{'principle':<28} {'pairs':>6} {'voted':>6} {'acc_n':>6} {'AI acc':>7} {'k(h,AI)':>8} {'k(h,h)':>7}")
    for name, s in rows:
        print(f"{name[:28]:<28} {s['pairs']:>6} {s['human_labelled']:>6} {s['accuracy_n']:>6} "
              f"{_fmt(s['ai_accuracy']):>7} {_fmt(s['kappa_human_ai']):>8} {_fmt(s['kappa_annotators']['mean']):>7}")
    cal = r["overall"]["calibration"]
    print(f"calibration (ECE {_fmt(cal['ece'])}, {cal['n']} pairs): " + ", ".join(
        f"[{b['lo']:.2f},{b['hi']:.2f}) n={b['n']} p={_fmt(b['mean_p'])} human={_fmt(b['human_rate'])}"
        for b in cal["bins"]))
    print(f"wrote {cfg.out}/agreement.json and {cfg.out}/calibration.png")
    return 0
