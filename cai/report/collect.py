"""Read a pipeline run directory into plain facts for the report (no plotting, no HTML).

Sources, all optional except `pipeline.json`:
- `RUN_DIR/pipeline.json`: stages, their kinds, keys, inputs, status and wall time (`cai run` writes it);
- each stage's `manifest.json` (dataset stages): counts kept / filtered / errors, principle counts;
- each stage's `metrics.jsonl` (trainers): one JSON object per step;
- `prefs` tables of label/rlaif stages: per-principle statistics and judge preference vs length;
- `trace` tables of critique stages: answers before and after critique, with the critique trace;
- `values.json` of an eval stage (shape below) and its examples.

`values.json` (written by the `eval.values` stage) holds each role's metrics, optionally the paired change::

    {"baseline": {"refusal_rate": {"value": 0.42, "ci_low": 0.35, "ci_high": 0.49}, ...},   # before
     "model":    {"refusal_rate": {"value": 0.71, "ci_low": 0.64, "ci_high": 0.77}, ...},   # after
     "delta":    {"refusal_rate": {"value": 0.29, "ci_low": 0.21, "ci_high": 0.37}, ...},   # optional
     "figures":  {"refusal_rate": "share of harmful prompts refused"},                     # optional
     "examples": [{"prompt": "...", "baseline": "...", "model": "..."}, ...],                 # optional
     "openings": {"benign": {"baseline": {"n", "template_share", "distinct_openings",
                                          "top": [{"opening", "count", "share"}]}, "model": {...}}},  # optional
     "warnings": ["model: 38 of 40 benign answers (95%) open with \"sure\" ..."],              # optional
     "checks":   [{"id", "grader", "applies_to", "want", "description", "skipped", "detector_class",
                   "sets": {"harmful": {"baseline": {value, ci_low, ci_high, n}, "model": ..., "delta": ...}}}],
     "detector_card": {"refusal": {"precision", "recall", "n"}, ...} | null,               # optional
     "detector_classes": {"refusal_rate": "refusal", ...}}                                 # optional

Roles are `baseline` (or `before`) and `model` (or `after`); a metric may be a bare number or carry
`ci: [lo, hi]` and `n`; a missing `delta` is computed as after − before without an interval. Every other
key (counts, hashes, config) is ignored. Examples may instead be `answers.jsonl` next to it, one row per
(prompt, role): `{"id", "role": "baseline"|"model", "prompt", "answer", "set"?}`; the report also counts
the most common answer openings of each role in it, per prompt set.
"""
from __future__ import annotations

import itertools
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from cai.data.layout import read_config
from cai.errors import InputError
from cai.evaluate.openings import N_WORDS, opening

ROLE_ORDER = ("baseline", "before", "model", "after")
N_EXAMPLES = 10
N_TRACES = 3


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def read_jsonl(path: Path) -> list[dict]:
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for ln in lines:
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _table(out: Path, config: str) -> list[dict]:
    try:
        return read_config(out, config) if (out / config).is_dir() else []
    except (InputError, OSError):
        return []


def collect(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    record = read_json(run_dir / "pipeline.json")
    if not record.get("stages"):
        raise InputError("not a pipeline run directory (no pipeline.json with stages; run `cai run` first)",
                         file=run_dir)
    stages = []
    for name, st in record["stages"].items():
        out = Path(st.get("out", ""))
        stages.append({"name": name, **st, "out": out, "manifest": read_json(out / "manifest.json"),
                       "metrics": read_jsonl(out / "metrics.jsonl")})
    facts: dict[str, Any] = {"name": record.get("name", run_dir.name), "file": record.get("file"),
                             "source": record.get("source", {}), "run_dir": str(run_dir), "stages": stages,
                             "started_at": record.get("started_at"), "finished_at": record.get("finished_at")}
    facts["yield"] = [data_yield(s) for s in stages]
    facts["training"] = [{"stage": s["name"], "kind": s["kind"], "metrics": s["metrics"]}
                         for s in stages if s["metrics"]]
    prefs = [r for s in stages if s["kind"] in ("label", "rlaif", "contrast") for r in _table(s["out"], "prefs")]
    traces = [r for s in stages if s["kind"] == "critique" for r in _table(s["out"], "trace")]
    facts["principles"] = principle_stats(prefs, [s["manifest"].get("principle_counts", {}) for s in stages
                                                  if s["kind"] == "critique"])
    facts["scatter"] = reward_length_points(stages, prefs)
    evals = [s for s in stages if s["kind"].startswith("eval")]
    values = read_json(evals[-1]["out"] / "values.json") if evals else {}
    facts["eval"] = eval_table(values) if values else None
    facts["openings"] = opening_table(values)
    facts["checks"] = check_table(values)
    facts["warnings"] = [str(w) for w in values.get("warnings", []) if isinstance(w, str)] if values else []
    card = values.get("detector_card") if values else None
    facts["detector_card"] = card if isinstance(card, dict) else None
    facts["examples"] = examples(values, evals[-1]["out"] if evals else None, traces)
    facts["top_openings"] = answer_openings(evals[-1]["out"] if evals else None)
    facts["by_construction"] = facts["scatter"] is None and by_construction(prefs)
    return facts


# ---- data yield ----------------------------------------------------------------------------------------------

def _total(v: Any) -> int:
    if isinstance(v, dict):
        return sum(x for x in v.values() if isinstance(x, int))
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def data_yield(s: dict) -> dict[str, Any]:
    """Rows in, kept, filtered and failed, from whichever counts the stage's manifest has."""
    m = s["manifest"]
    rows_in = next((m[k] for k in ("conversations", "pairs", "prompts", "rows", "n_prompts") if isinstance(m.get(k), int)),
                   None)
    kept = next((m[k] for k in ("kept", "labelled", "pairs", "rows") if isinstance(m.get(k), int)), None)
    if s["kind"] == "sample":
        kept = m.get("pairs")
    filtered = _total(m.get("filtered", 0)) + _total(m.get("skipped", 0))
    row = {"stage": s["name"], "kind": s["kind"], "status": s.get("status"), "seconds": s.get("seconds"),
           "in": rows_in, "kept": kept, "filtered": filtered if m else None, "errors": m.get("errors") if m else None,
           "out": str(s["out"])}
    if s["metrics"]:
        steps = [r["step"] for r in s["metrics"] if isinstance(r.get("step"), int)]
        row["steps"] = max(steps) if steps else None
    return row


# ---- per principle -----------------------------------------------------------------------------------------

def _text(msgs: Any) -> str:
    if isinstance(msgs, str):
        return msgs
    if isinstance(msgs, list):
        return " ".join(str(m.get("content", "")) for m in msgs if isinstance(m, dict))
    return ""


def principle_stats(prefs: list[dict], critique_counts: list[dict]) -> list[dict[str, Any]]:
    """Per principle: critique rounds it was sampled for; comparisons it judged, the rate at which both
    orders agreed, the rate at which response A (first shown) won, the rate at which the longer response won
    (a length-bias check) and the mean soft label."""
    acc: dict[str, dict[str, Any]] = defaultdict(lambda: {"critique_rounds": 0, "comparisons": 0, "agree": 0,
                                                          "judged": 0, "a_wins": 0, "longer_wins": 0, "p_sum": 0.0})
    for counts in critique_counts:
        for pid, n in counts.items():
            acc[pid]["critique_rounds"] += int(n)
    for r in prefs:
        ids = r.get("principle_ids") or []
        for pid in (ids if isinstance(ids, list) else [ids]):
            a = acc[str(pid)]
            a["comparisons"] += 1
            # pairs labelled by construction (`cai contrast`, critique prefs) or in one order have no order check
            a["judged"] += r.get("order_consistent") is not None
            a["agree"] += bool(r.get("order_consistent"))
            a["a_wins"] += bool(r.get("chosen_is_a"))
            a["longer_wins"] += len(_text(r.get("chosen"))) > len(_text(r.get("rejected")))
            a["p_sum"] += float(r.get("p_chosen") or 0.0)
    out = []
    for pid, a in sorted(acc.items()):
        n, j = a["comparisons"], a["judged"]
        out.append({"principle": pid, "critique_rounds": a["critique_rounds"], "comparisons": n,
                    "order_agreement": a["agree"] / j if j else None, "a_win_rate": a["a_wins"] / j if j else None,
                    "longer_win_rate": a["longer_wins"] / n if n else None,
                    "mean_p_chosen": a["p_sum"] / n if n else None})
    return out


# ---- reward vs length -------------------------------------------------------------------------------------

def reward_length_points(stages: list[dict], prefs: list[dict]) -> dict[str, Any] | None:
    """Points (length in words, reward) for the scatter. Policy samples with a reward, written by RL stages
    as `samples.jsonl` (`{"response": str, "reward": float}` or `{"length": int, "reward": float}`), come
    first; otherwise the judge's preference for each response of each labelled pair (p_chosen for the
    chosen one, 1 - p_chosen for the rejected one) against its length."""
    pts = []
    for s in stages:
        for r in read_jsonl(s["out"] / "samples.jsonl"):
            reward = r.get("reward", r.get("score"))
            n = r.get("length") if isinstance(r.get("length"), (int, float)) else len(str(r.get("response", "")).split())
            if isinstance(reward, (int, float)):
                pts.append((float(n), float(reward)))
    if pts:
        return {"points": pts, "x": "response length (words)", "y": "reward", "source": "policy samples"}
    if by_construction(prefs):
        return None  # p is 0 or 1 for every pair: two horizontal lines, no information about length
    for r in prefs:
        p = r.get("p_chosen")
        if isinstance(p, (int, float)):
            pts.append((float(len(_text(r.get("chosen")).split())), float(p)))
            pts.append((float(len(_text(r.get("rejected")).split())), 1.0 - float(p)))
    if pts:
        return {"points": pts, "x": "response length (words)", "y": "judge p(this response is better)",
                "source": "labelled pairs"}
    return None


def by_construction(prefs: list[dict]) -> bool:
    """Pairs labelled by construction (RLCD, critique prefs): every `p_chosen` is exactly 0 or 1."""
    ps = [r.get("p_chosen") for r in prefs if isinstance(r.get("p_chosen"), (int, float))]
    return bool(ps) and all(p in (0, 1) for p in ps)


# ---- answer openings -------------------------------------------------------------------------------------

OPENING_WORDS = N_WORDS
N_OPENINGS = 10


def answer_openings(eval_out: Path | None, n: int = N_OPENINGS) -> list[dict[str, Any]]:
    """Per prompt set, the `n` most common openings of the baseline's and the model's answers (from the eval
    stage's answers.jsonl) with their counts: a trained model whose answers became a template shows one
    opening with most of the answers."""
    if eval_out is None:
        return []
    counts: dict[str, dict[str, Counter]] = defaultdict(lambda: {"baseline": Counter(), "model": Counter()})
    for r in read_jsonl(eval_out / "answers.jsonl"):
        role, text = r.get("role"), r.get("answer", r.get("response"))
        if role in ("baseline", "model") and isinstance(text, str):
            counts[str(r.get("set", "all"))][role][opening(text)] += 1
    return [{"set": name, "n": {k: sum(c.values()) for k, c in roles.items()},
             "baseline": roles["baseline"].most_common(n), "model": roles["model"].most_common(n)}
            for name, roles in counts.items()]


# ---- evaluation ------------------------------------------------------------------------------------------

def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _metric(v: Any) -> dict[str, float | None] | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return {"value": float(v), "ci_low": None, "ci_high": None}
    if isinstance(v, dict):
        val = v.get("value", v.get("mean"))
        if not isinstance(val, (int, float)) or isinstance(val, bool):
            return None
        lo, hi = v.get("ci_low"), v.get("ci_high")
        if isinstance(v.get("ci"), (list, tuple)) and len(v["ci"]) == 2:
            lo, hi = v["ci"]
        out = {"value": float(val), "ci_low": _num(lo), "ci_high": _num(hi)}
        if isinstance(v.get("n"), int) and not isinstance(v.get("n"), bool):
            out["n"] = v["n"]
        return out
    return None


def eval_table(values: dict) -> dict[str, Any] | None:
    """{"roles": [before, after], "rows": [{"metric", "about", role: {value, ci_low, ci_high} | None,
    "delta": {value, ci_low, ci_high} | None}]} from values.json (shape in the module docstring)."""
    roles = [r for r in ROLE_ORDER if isinstance(values.get(r), dict) and any(_metric(x) for x in values[r].values())]
    if not roles:
        return None
    metrics: list[str] = []
    for r in roles:
        metrics += [m for m, x in values[r].items() if _metric(x) and m not in metrics]
    deltas = values.get("delta") if isinstance(values.get("delta"), dict) else {}
    about = values.get("figures") if isinstance(values.get("figures"), dict) else {}
    detector = values.get("detector_classes") if isinstance(values.get("detector_classes"), dict) else {}
    rows = []
    for m in metrics:
        row: dict[str, Any] = {"metric": m, "about": str(about.get(m, "")),
                               **{r: _metric(values[r].get(m)) for r in roles}}
        if detector.get(m):
            row["detector_class"] = str(detector[m])
        first, last = row[roles[0]], row[roles[-1]]
        row["delta"] = _metric(deltas.get(m)) or (
            {"value": last["value"] - first["value"], "ci_low": None, "ci_high": None}
            if first and last and len(roles) > 1 else None)
        rows.append(row)
    return {"roles": roles, "rows": rows}


def opening_table(values: dict) -> list[dict[str, Any]]:
    """Per prompt set: each role's template_share, distinct_openings, n and most common openings."""
    op = values.get("openings") if isinstance(values.get("openings"), dict) else {}
    rows = []
    for s, by_role in op.items():
        if not isinstance(by_role, dict):
            continue
        row: dict[str, Any] = {"set": str(s)}
        for role in ("baseline", "model"):
            st = by_role.get(role) if isinstance(by_role.get(role), dict) else {}
            row[role] = {"template_share": _num(st.get("template_share")), "distinct": st.get("distinct_openings"),
                         "n": st.get("n"), "top": [t for t in st.get("top", []) if isinstance(t, dict)]}
        rows.append(row)
    return rows


def check_table(values: dict) -> list[dict[str, Any]]:
    """One row per (declared check, prompt set): pass rates before and after with intervals and n, the
    paired change; a check the run could not grade (e.g. a judge check under --no-judge) says why."""
    checks = values.get("checks") if isinstance(values.get("checks"), list) else []
    rows = []
    for c in checks:
        if not isinstance(c, dict):
            continue
        base = {"id": str(c.get("id")), "grader": str(c.get("grader")), "want": str(c.get("want", "pass")),
                "about": str(c.get("description", "")), "detector_class": c.get("detector_class")}
        if c.get("skipped"):
            rows.append({**base, "set": str(c.get("applies_to", "")), "skipped": str(c["skipped"])})
        for s, f in (c.get("sets") or {}).items():
            if isinstance(f, dict):
                rows.append({**base, "set": str(s), "skipped": None, "baseline": _metric(f.get("baseline")),
                             "model": _metric(f.get("model")), "delta": _metric(f.get("delta"))})
    return rows


# ---- examples -----------------------------------------------------------------------------------------------

def examples(values: dict, eval_out: Path | None, traces: list[dict]) -> dict[str, Any]:
    """Up to 10 answers before and after, side by side: the eval stage's examples (baseline vs trained
    model) when it wrote any, else the critique stage's initial answer vs final revision. The critique
    trace (each round's principle, critique and revision) is attached to the first few."""
    pairs = []
    raw = values.get("examples") if isinstance(values.get("examples"), list) else []
    if not raw and eval_out is not None:
        raw = read_jsonl(eval_out / "examples.jsonl")
    if not raw and eval_out is not None:
        raw = _answers_by_prompt(read_jsonl(eval_out / "answers.jsonl"))
    for r in raw[:N_EXAMPLES]:
        if isinstance(r, dict):
            before = r.get("baseline", r.get("before"))
            after = r.get("model", r.get("after"))
            pairs.append({"prompt": _text(r.get("prompt")), "before": _text(before), "after": _text(after),
                          "trace": []})
    source = "evaluation (baseline vs trained model)" if pairs else None
    if not pairs and traces:
        by_id: dict[str, list[dict]] = defaultdict(list)
        for t in traces:
            by_id[str(t.get("id"))].append(t)
        for rounds in list(by_id.values())[:N_EXAMPLES]:
            rounds.sort(key=lambda t: t.get("round") or 0)
            last = rounds[-1]
            pairs.append({"prompt": _text(last.get("prompt")), "before": _text(last.get("init_response")),
                          "after": _text(last.get("revision")), "status": last.get("status"),
                          "trace": [{"round": t.get("round"), "principle": t.get("principle_id"),
                                     "critique_request": _text(t.get("critique_request")),
                                     "critique": _text(t.get("critique")), "revision": _text(t.get("revision"))}
                                    for t in rounds]})
        source = "critique stage (initial answer vs final revision)"
    for i, p in enumerate(pairs):
        if i >= N_TRACES:
            p["trace"] = []
    return {"source": source, "pairs": pairs}


def _answers_by_prompt(rows: list[dict]) -> list[dict]:
    """answers.jsonl rows (one per prompt and role) -> {prompt, baseline, model}, alternating prompt sets
    (harmful, benign, ...) so that both kinds of prompt show."""
    by: dict[str, dict] = {}
    for r in rows:
        d = by.setdefault(str(r.get("id")), {"prompt": r.get("prompt"), "set": r.get("set")})
        if r.get("role") in ("baseline", "model"):
            d[r["role"]] = r.get("answer", r.get("response"))
    full = [d for d in by.values() if "baseline" in d and "model" in d]
    sets: dict[Any, list[dict]] = defaultdict(list)
    for d in full:
        sets[d["set"]].append(d)
    mixed = [d for group in itertools.zip_longest(*sets.values()) for d in group if d is not None]
    return mixed


def metric_groups(metrics: list[dict]) -> dict[str, list[str]]:
    """Metric keys of a trainer's metrics.jsonl by panel: loss, reward, accuracy, KL, length. A key goes to
    the first panel whose pattern it matches, in this order: accuracy, loss, KL, length, reward (so
    `rewards/accuracy`, a rate, does not share an axis with the rewards)."""
    keys = sorted({k for r in metrics for k, v in r.items() if isinstance(v, (int, float)) and k != "step"})
    pats = {"accuracy": r"accuracy", "loss": r"(^|/)loss$", "KL": r"(^|/|_)kl($|/|_)",
            "length": r"length|(^|/)len($|_)", "reward": r"reward|score"}
    groups: dict[str, list[str]] = {}
    for k in keys:
        g = next((g for g, p in pats.items() if re.search(p, k, re.I)), None)
        if g:
            groups.setdefault(g, []).append(k)
    return {g: groups[g] for g in ("loss", "reward", "accuracy", "KL", "length") if g in groups}
