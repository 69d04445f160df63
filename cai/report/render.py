"""The report as one offline HTML file (figures embedded as base64 PNG) and as Markdown next to it.

Every piece of text that came from a model, a dataset or a config goes through `esc` (HTML) or `md_text`
(Markdown, which renderers also read as HTML), so a response containing `<script>` shows as text.
"""
from __future__ import annotations

import base64
import html
import json
import platform
from typing import Any

import yaml

from cai import __version__
from cai.report.collect import OPENING_WORDS

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;
vertical-align:top}th{background:#f3f3f3}pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:12px;
white-space:pre-wrap}.ex td{width:50%}.ex pre{max-height:18em}.num{text-align:right}h2{border-bottom:1px solid #ddd}
.small{color:#666;font-size:12px}details{margin:.3em 0 .8em}"""


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def md_text(x: Any) -> str:
    """Text for a Markdown table cell or quote: HTML-escaped, one line, pipes escaped."""
    return esc(x).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:.0f}"
    return str(x)


def metric_cell(m: dict | None) -> str:
    if not m:
        return "–"
    s = fmt(m["value"])
    if m.get("ci_low") is not None and m.get("ci_high") is not None:
        s += f" [{fmt(m['ci_low'])}, {fmt(m['ci_high'])}]"
    return s


def _rows(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{esc(c)}</th>" for c in head)
    b = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{b}</table>"


def _md_rows(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def run_facts(facts: dict) -> dict[str, Any]:
    """The report's "how this was made" table: cai and Python versions, platform, pipeline file, run dir, times."""
    return {"cai": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "pipeline file": facts.get("file"), "run dir": facts.get("run_dir"),
            "started": facts.get("started_at"), "finished": facts.get("finished_at")}


def _stage_rows(facts: dict) -> list[list[Any]]:
    rows = []
    for s in facts["stages"]:
        inputs = s.get("inputs", {})
        models = ", ".join(f"{k}={v[:12]}" for k, v in inputs.get("models", {}).items())
        consts = ", ".join(f"{k}={v[:8]}" for k, v in inputs.get("constitution", {}).items())
        rows.append([s["name"], s["kind"], s.get("status"), fmt(s.get("seconds")), s.get("key"), models, consts,
                     str(s["out"])])
    return rows


STAGE_HEAD = ["stage", "kind", "status", "seconds", "key", "model weights (sha256)", "constitution parts", "output"]
YIELD_HEAD = ["stage", "kind", "in", "kept", "filtered", "errors", "steps", "seconds"]
PRINCIPLE_HEAD = ["principle", "critique rounds", "comparisons", "order agreement", "A wins", "longer wins",
                  "mean p_chosen"]


def _yield_rows(facts: dict) -> list[list[Any]]:
    return [[y["stage"], y["kind"], fmt(y["in"]), fmt(y["kept"]), fmt(y["filtered"]), fmt(y["errors"]),
             fmt(y.get("steps")), fmt(y["seconds"])] for y in facts["yield"]]


PRINCIPLE_KEYS = ["principle", "critique_rounds", "comparisons", "order_agreement", "a_win_rate", "longer_win_rate",
                  "mean_p_chosen"]


def _principle_table(facts: dict) -> tuple[list[str], list[list[str]]]:
    """The per-principle columns this run has figures for: a column empty or zero for every principle (order
    statistics of pairs labelled by construction, critique rounds of a run without critique) is left out."""
    ps = facts["principles"]
    counts = ("critique_rounds", "comparisons")
    keep = [i for i, k in enumerate(PRINCIPLE_KEYS)
            if i == 0 or any(p[k] not in ((None, 0) if k in counts else (None,)) for p in ps)]
    return ([PRINCIPLE_HEAD[i] for i in keep],
            [[fmt(p[PRINCIPLE_KEYS[i]]) for i in keep] for p in ps])


def _opening_tables(facts: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per prompt set: rank, the baseline's opening and count, the model's opening and count."""
    out = []
    for o in facts.get("top_openings") or []:
        rows = []
        for i in range(max(len(o["baseline"]), len(o["model"]))):
            b = o["baseline"][i] if i < len(o["baseline"]) else ("", None)
            m = o["model"][i] if i < len(o["model"]) else ("", None)
            rows.append([str(i + 1), b[0], fmt(b[1]), m[0], fmt(m[1])])
        title = f"{o['set']} ({o['n'].get('baseline', 0)} answers before, {o['n'].get('model', 0)} after)"
        out.append((title, ["#", "before: opening", "answers", "after: opening", "answers"], rows))
    return out


NO_SCATTER = {True: "Labels by construction (p_chosen is 0 or 1 for every pair): nothing to plot against length.",
              False: "No rewards or labelled pairs to plot."}


def change_cell(d: dict | None) -> str:
    if d is None:
        return "–"
    return f"{d['value']:+.3g}" + (f" [{d['ci_low']:+.3g}, {d['ci_high']:+.3g}]"
                                   if d["ci_low"] is not None and d["ci_high"] is not None else "")


def n_cell(*ms: dict | None) -> str:
    """"40 / 40 / 40": the prompts each figure rests on (before, after, paired), when values.json says."""
    ns = [str(m["n"]) if m and m.get("n") is not None else "–" for m in ms]
    return "" if all(n == "–" for n in ns) else " / ".join(ns)


def detector_cell(card: dict | None, cls: str | None) -> str:
    """The detector's measured precision and recall for a figure it produces; "not measured" without a card."""
    if not cls:
        return ""
    m = (card or {}).get(cls)
    if not isinstance(m, dict) or not isinstance(m.get("precision"), (int, float)) or \
            not isinstance(m.get("recall"), (int, float)):
        return "not measured"
    return f"P {m['precision']:.2f} / R {m['recall']:.2f}" + (f" (n={m['n']})" if m.get("n") is not None else "")


def _eval_rows(ev: dict, card: dict | None = None) -> tuple[list[str], list[list[str]]]:
    head = ["metric", *[f"{r} [CI]" for r in ev["roles"]], "change [CI]", "what it measures", "n (before / after / paired)",
            "detector P / R"]
    rows = []
    for r in ev["rows"]:
        rows.append([r["metric"], *[metric_cell(r[role]) for role in ev["roles"]], change_cell(r["delta"]), r["about"],
                     n_cell(*[r[role] for role in ev["roles"]], r["delta"]),
                     detector_cell(card, r.get("detector_class"))])
    return head, rows


OPENING_HEAD = ["prompt set", "template_share before", "template_share after", "distinct openings before",
                "distinct openings after", "n (before / after)", "most common openings after"]


def _opening_rows(facts: dict) -> list[list[str]]:
    def share(x):
        return "–" if x is None else f"{100 * x:.1f}%"
    rows = []
    for r in facts.get("openings") or []:
        b, m = r["baseline"], r["model"]
        top = "; ".join(f"\"{t.get('opening', '')}\" ×{t.get('count')}" for t in m["top"][:5])
        rows.append([r["set"], share(b["template_share"]), share(m["template_share"]), fmt(b["distinct"]),
                     fmt(m["distinct"]), f"{fmt(b['n'])} / {fmt(m['n'])}", top])
    return rows


CHECK_HEAD = ["check", "prompt set", "grader", "passes when", "before [CI]", "after [CI]", "change [CI]",
              "n (before / after / paired)", "detector P / R"]


def _check_rows(facts: dict) -> list[list[str]]:
    card = facts.get("detector_card")
    rows = []
    for c in facts.get("checks") or []:
        if c["skipped"]:
            rows.append([c["id"], c["set"], c["grader"], c["about"], f"skipped: {c['skipped']}", "", "", "", ""])
            continue
        rows.append([c["id"], c["set"], c["grader"], c["about"], metric_cell(c["baseline"]), metric_cell(c["model"]),
                     change_cell(c["delta"]), n_cell(c["baseline"], c["model"], c["delta"]),
                     detector_cell(card, c.get("detector_class"))])
    return rows


def detector_line(card: dict | None) -> str:
    """One sentence on what the detector figures cannot see: its measured precision and recall."""
    if not card:
        return ("Detector precision/recall on labelled answers: not measured (no detector card); refusal and "
                "non-answer figures are pattern counts.")
    parts = [f"{cls} {detector_cell(card, cls)}" for cls in ("refusal", "non_answer", "mitigation") if cls in card]
    src = f" ({card['source']}{', ' + str(card['split']) if card.get('split') else ''})" if card.get("source") else ""
    return "Detector precision/recall on labelled answers: " + "; ".join(parts) + src + "."


def render_html(facts: dict, figures: dict[str, bytes]) -> str:
    e = esc
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>cai report: {e(facts['name'])}</title>"
             f"<style>{CSS}</style></head><body><h1>cai report: {e(facts['name'])}</h1>"]
    parts.append("<h2>Stages</h2>" + _rows(STAGE_HEAD, [[e(c) for c in r] for r in _stage_rows(facts)]))
    parts.append("<h2>Evaluation</h2>")
    if facts["eval"]:
        head, rows = _eval_rows(facts["eval"], facts.get("detector_card"))
        parts.append(_rows(head, [[e(c) for c in r] for r in rows]))
        parts.append(f"<p class=small>{e(detector_line(facts.get('detector_card')))}</p>")
    else:
        parts.append("<p class=small>No evaluation stage in this pipeline (add an <code>eval.values</code> stage).</p>")
    if facts.get("openings"):
        parts.append("<h2>Template learning</h2><p class=small>template_share: the share of answers whose first 8 "
                     "words (lower case, punctuation dropped) are the most common opening.</p>")
        parts.append(_rows(OPENING_HEAD, [[e(c) for c in r] for r in _opening_rows(facts)]))
    parts += [f"<p><b>warning</b>: {e(w)}</p>" for w in facts.get("warnings") or []]
    if facts.get("checks"):
        parts.append("<h2>Checks</h2><p class=small>Each check the constitution declares: the share of answers "
                     "that pass it, before and after.</p>")
        parts.append(_rows(CHECK_HEAD, [[e(c) for c in r] for r in _check_rows(facts)]))
    openings = _opening_tables(facts)
    if openings:
        parts.append(f"<h2>Most common openings</h2><p class=small>The first {OPENING_WORDS} words of each answer "
                     "(lower case, no punctuation), before and after: one opening holding most answers means the "
                     "model answers with a template.</p>")
        for title, head, rows in openings:
            parts.append(f"<h3>{e(title)}</h3>" + _rows(head, [[e(c) for c in r] for r in rows]))
    parts.append("<h2>Training curves</h2>")
    curves = [k for k in figures if k.startswith("train:")]
    parts += [_img(figures[k], k) for k in curves] or ["<p class=small>No training stage logged metrics.</p>"]
    if "scatter" in figures:
        parts.append("<h2>Reward vs length</h2>" + _img(figures["scatter"], "reward vs length"))
    else:
        parts.append(f"<p class=small>Reward vs length: {e(NO_SCATTER[bool(facts.get('by_construction'))])}</p>")
    parts.append("<h2>Per principle</h2>")
    if facts["principles"]:
        head, rows = _principle_table(facts)
        parts.append(_rows(head, [[e(c) for c in r] for r in rows]))
        notes = {"order agreement": "both presentation orders prefer the same response",
                 "A wins": "the response shown first won (0.5 = no position bias)",
                 "longer wins": "the longer response won"}
        parts.append("<p class=small>" + "; ".join(f"{k}: {v}" for k, v in notes.items() if k in head) + ".</p>")
    else:
        parts.append("<p class=small>No principles were sampled by these stages.</p>")
    parts.append("<h2>Data yield</h2>" + _rows(YIELD_HEAD, [[e(c) for c in r] for r in _yield_rows(facts)]))
    ex = facts["examples"]
    parts.append(f"<h2>Examples</h2><p class=small>{e(ex['source'] or 'no examples')}</p>")
    for i, p in enumerate(ex["pairs"], 1):
        parts.append(f"<h3>{i}. {e(p['prompt'][:200])}</h3><table class=ex><tr><th>before</th><th>after</th></tr>"
                     f"<tr><td><pre>{e(p['before'])}</pre></td><td><pre>{e(p['after'])}</pre></td></tr></table>")
        if p["trace"]:
            body = "".join(f"<p><b>round {e(t['round'])}, principle {e(t['principle'])}</b></p>"
                           f"<pre>{e(t['critique_request'])}</pre><p>critique:</p><pre>{e(t['critique'])}</pre>"
                           f"<p>revision:</p><pre>{e(t['revision'])}</pre>" for t in p["trace"])
            parts.append(f"<details><summary>critique trace</summary>{body}</details>")
    parts.append("<h2>Config and provenance</h2>")
    parts.append(_rows(["", ""], [[e(k), e(v)] for k, v in run_facts(facts).items()]))
    parts.append(f"<pre>{e(yaml.safe_dump(facts['source'], sort_keys=False))}</pre>")
    parts.append("<details><summary>stage inputs (what each key hashes)</summary><pre>"
                 + e(json.dumps({s["name"]: s.get("inputs") for s in facts["stages"]}, indent=1, default=str))
                 + "</pre></details></body></html>")
    return "\n".join(parts)


def render_md(facts: dict, figures: dict[str, str]) -> str:
    """Markdown; `figures` maps a figure name to its PNG file name next to report.md."""
    m = md_text
    out = [f"# cai report: {m(facts['name'])}\n", "## Stages\n",
           _md_rows(STAGE_HEAD, [[m(c) for c in r] for r in _stage_rows(facts)]), "## Evaluation\n"]
    if facts["eval"]:
        head, rows = _eval_rows(facts["eval"], facts.get("detector_card"))
        out.append(_md_rows(head, [[m(c) for c in r] for r in rows]))
        out.append(m(detector_line(facts.get("detector_card"))) + "\n")
    else:
        out.append("No evaluation stage in this pipeline.\n")
    if facts.get("openings"):
        out += ["## Template learning\n", _md_rows(OPENING_HEAD, [[m(c) for c in r] for r in _opening_rows(facts)])]
    out += [f"> **warning**: {m(w)}\n" for w in facts.get("warnings") or []]
    if facts.get("checks"):
        out += ["## Checks\n", _md_rows(CHECK_HEAD, [[m(c) for c in r] for r in _check_rows(facts)])]
    openings = _opening_tables(facts)
    if openings:
        out.append(f"## Most common openings\n\nThe first {OPENING_WORDS} words of each answer, before and after.\n")
        for title, head, rows in openings:
            out += [f"### {m(title)}\n", _md_rows(head, [[m(c) for c in r] for r in rows])]
    out.append("## Training curves\n")
    out += [f"![{k}]({v})\n" for k, v in figures.items() if k.startswith("train:")]
    if "scatter" in figures:
        out.append(f"## Reward vs length\n\n![reward vs length]({figures['scatter']})\n")
    if facts["principles"]:
        head, rows = _principle_table(facts)
        out += ["## Per principle\n", _md_rows(head, [[m(c) for c in r] for r in rows])]
    out += ["## Data yield\n", _md_rows(YIELD_HEAD, [[m(c) for c in r] for r in _yield_rows(facts)])]
    ex = facts["examples"]
    out.append(f"## Examples\n\n{m(ex['source'] or 'no examples')}\n")
    for i, p in enumerate(ex["pairs"], 1):
        out.append(f"### {i}. {m(p['prompt'][:200])}\n")
        out.append(_md_rows(["before", "after"], [[m(p["before"]), m(p["after"])]]))
        for t in p["trace"]:
            out.append(f"- round {m(t['round'])} ({m(t['principle'])}): critique: {m(t['critique'])}<br>"
                       f"revision: {m(t['revision'])}\n")
    out.append("## Config and provenance\n")
    out.append(_md_rows(["", ""], [[m(k), m(v)] for k, v in run_facts(facts).items()]))
    out.append("```yaml\n" + yaml.safe_dump(facts["source"], sort_keys=False).replace("```", "'''") + "```\n")
    return "\n".join(out)
