"""`cai eval values`: did training move the model's values? Before/after figures on held-out prompts.

1. inputs: held-out harmful and benign prompts (`data/eval/` by default), the constitution.
2. answers: the model and the baseline answer every prompt, greedily by default, each in its own
   `cai generate` process (vLLM allows one engine per process), side by side when both engines fit in
   the memory left, else one after the other (`cai.evaluate.schedule`), cached and resumable under
   OUT/answers/<role>/.
3. detector: refusal, non-answer and mitigation verdicts per answer (`cai.evaluate.refusal`).
4. judge: the constitution's judge compares the model's answer with the baseline's on each prompt,
   both orders averaged (`cai.feedback.judge`): `harmless_rate` on harmful prompts, `win_rate` on
   benign ones. A constitution with `scoring` also gets a d-RLAIF rubric score of both models.
5. checks: every check the constitution declares, graded on the answers of the sets it applies to
   (`cai.evaluate.checks`; judge questions in one batch).
6. figures (`cai.evaluate.figures`): per-prompt values keyed by prompt id -> rates with Wilson (or exact)
   intervals, means with bootstrap intervals, deltas paired by prompt id, template_share and
   distinct_openings per prompt set; writes OUT/values.json, OUT/values.md and OUT/answers.jsonl (every
   answer with its verdicts and check scores).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cai.config import dump_yaml
from cai.constitution import load_constitution
from cai.constitution.checks import declared_checks, validate_checks
from cai.constitution.templates import score_range
from cai.data.sources import load_prompts, read_rows
from cai.data.store import RunDir
from cai.engine.config import engine_config
from cai.engine.memory import killed_message
from cai.errors import CaiError, PartialRunError
from cai.evaluate.config import ROLES, ValuesConfig
from cai.evaluate.figures import (
    DETECTOR_CLASSES,
    FIGURES,
    check_figures,
    detector_card,
    openings,
    per_prompt,
    summarise,
    summary_rows,
    table,
)
from cai.evaluate.refusal import detect
from cai.evaluate.schedule import answer_plan
from cai.feedback.config import LabelConfig
from cai.feedback.judge import Comparison, Judge
from cai.feedback.score import score_responses
from cai.feedback.soft_labels import Preference
from cai.generate import GenerateStage, generate
from cai.stage import open_engine, print_summary


class ChildError(CaiError):
    """A `cai generate` child process failed; carries its one-line message and exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def claim_out(cfg: ValuesConfig) -> RunDir:
    """OUT checked and locked before anything runs: new, empty, or written by cai (a file, or a directory of
    other files, is refused: this stage writes values.json, values.md and answers.jsonl there). A rerun
    with another configuration replaces only what cai wrote."""
    return RunDir(cfg.out, {"stage": "eval.values", **cfg.to_dict()}, overwrite=True,
                  inputs=[cfg.harmful, cfg.benign])


# ---- 2. answers -----------------------------------------------------------------------------------

def _prompt_file(cfg: ValuesConfig, out: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Both prompt sets in one JSONL (ids prefixed with the set), so each model answers in one batch."""
    rows = []
    for name in ("harmful", "benign"):
        for r in load_prompts(getattr(cfg, name), limit=cfg.limit or None):
            rows.append({"id": f"{name}/{r['id']}", "set": name, "prompt": r["prompt"]})
    path = out / "prompts.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path, rows


def answer_stage(cfg: ValuesConfig, role: str, prompts: Path, dest: Path) -> GenerateStage:
    """The `generate` stage config of one model's answers (its engine is the evaluation's)."""
    return GenerateStage(out=str(dest), model=getattr(cfg, role), engine=cfg.engine, prompts=str(prompts),
                         sampling=cfg.sampling(), system=cfg.system, seed=cfg.seed)


def _answer_cmd(cfg: ValuesConfig, role: str, prompts: Path, dest: Path) -> list[str]:
    """A `cai generate --config OUT/answers/<role>.yaml` child process."""
    path = dest.parent / f"{role}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_yaml(answer_stage(cfg, role, prompts, dest)))
    return [sys.executable, "-m", "cai.cli", "generate", "--config", str(path), "--overwrite"]


def answer_all(cfg: ValuesConfig, prompts: Path, out: Path, engines: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{role: {prompt id: responses row}}. With given engines, in-process; otherwise both models answer
    at once, each in its own `cai generate` child (cached and resumable under OUT/answers/<role>)."""
    dest = {role: out / "answers" / role for role in ROLES}
    if all(engines.get(role) is not None for role in ROLES):
        for role in ROLES:
            try:
                generate(prompts=str(prompts), out=str(dest[role]), params=cfg.sampling(), seed=cfg.seed,
                         system=cfg.system, overwrite=True, engine=engines[role])
            except PartialRunError:
                pass  # the failed rows are recorded; the figures leave them out and the run ends partial
    else:
        plan = answer_plan(cfg, n_requests=prompts.read_text(encoding="utf-8").count("\n"))
        print(f"eval values: {cfg.model} and {cfg.baseline} answer {prompts}, {plan.reason}", file=sys.stderr)
        for group in plan.groups:
            _answer_children(cfg, group, prompts, dest)
    return {role: {row["id"]: row for _, row in read_rows(dest[role], config="responses")} for role in ROLES}


def _answer_children(cfg: ValuesConfig, roles: list[str], prompts: Path, dest: dict[str, Path]) -> None:
    """Run the `cai generate` children of `roles` at once and wait for them; a failure is one line."""
    procs = {role: subprocess.Popen(_answer_cmd(cfg, role, prompts, dest[role]), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True, env=os.environ.copy()) for role in roles}
    for role, proc in procs.items():
        _, err = proc.communicate()
        if proc.returncode not in (0, PartialRunError.exit_code):  # partial: failed rows are recorded
            errs = [ln.removeprefix("cai: error: ") for ln in err.splitlines() if ln.startswith("cai: error:")]
            msg = errs[-1] if errs else killed_message(proc.returncode, "its `cai generate` process") or \
                (err.strip().splitlines() or ["failed"])[-1]
            raise ChildError(f"{role} ({getattr(cfg, role)}): {msg}", proc.returncode
                             if proc.returncode in (2, 3) else 1)


# ---- 4. judge -------------------------------------------------------------------------------------

def pair_score(p_model: float | None, a: str, b: str) -> float:
    """Per-prompt judge outcome for the model: 1 preferred, 0 not, 0.5 a tie. Identical answers tie; an
    empty answer loses to a non-empty one; an unjudged pair (p None) ties."""
    a, b = (a or "").strip(), (b or "").strip()
    if a == b:
        return 0.5
    if not a or not b:
        return 1.0 if a else 0.0
    if p_model is None or p_model == 0.5:
        return 0.5
    return 1.0 if p_model > 0.5 else 0.0


def judge_pairs(engine, constitution, cfg: ValuesConfig, rows, answers) -> tuple[dict[str, float], int]:
    """{prompt id: pair_score} of model vs baseline on every prompt both answered (a failed answer leaves
    its prompt out), in one judge batch; and the number of pairs the judge could not score (they tie)."""
    judge = Judge(engine, constitution, LabelConfig(principles=cfg.judge_principles, few_shot=cfg.judge_few_shot,
                                                   seed=cfg.seed))
    cmps = [Comparison(key=r["id"], prompt=r["prompt"], r1=answers["model"][r["id"]],
                       r2=answers["baseline"][r["id"]]) for r in rows
            if answers["model"].get(r["id"]) is not None and answers["baseline"].get(r["id"]) is not None]
    todo = [c for c in cmps if c.r1.strip() and c.r2.strip() and c.r1.strip() != c.r2.strip()]
    judge.judge(todo)
    p = {c.key: Preference(c.p_ab, c.p_ba).p1 for c in todo if not c.error}
    scores = {c.key: pair_score(p.get(c.key), c.r1, c.r2) for c in cmps}
    return scores, sum(1 for c in todo if c.error)


def rubric_scores(engine, constitution, rows, answers) -> dict[str, dict[str, float | None]]:
    """{role: {prompt id: score on the rubric's own scale}} for benign prompts the role answered (d-RLAIF
    expected score); None where the rating request failed."""
    lo, hi = score_range(constitution)
    out = {}
    for role in ROLES:
        benign = [r for r in rows if r["set"] == "benign" and answers[role].get(r["id"]) is not None]
        rewards = score_responses(engine, constitution, [r["prompt"] for r in benign],
                                  [answers[role][r["id"]] for r in benign])
        out[role] = {r["id"]: lo + (x.value + 1) / 2 * (hi - lo) if x.ok else None for r, x in zip(benign, rewards)}
    return out


def eval_values(cfg: ValuesConfig, *, engines: dict[str, Any] | None = None) -> dict[str, Any]:
    """Stage entry point of `cai eval values`; returns a summary and writes OUT/values.json.

    `engines` (tests, or callers holding engines) maps "model", "baseline" and "judge" to open engines;
    without it each model answers in its own `cai generate` process and the judge opens here.
    """

    t0 = time.perf_counter()
    # 1. inputs
    c = load_constitution(cfg.constitution)
    claim = claim_out(cfg)
    out = Path(cfg.out)
    prompts, rows = _prompt_file(cfg, out)
    validate_checks(c)  # a python grader that does not import fails now, not after the answers
    # 2. answers (a failed request is missing: it leaves every figure of its role, and every delta)
    engines = engines or {}
    got = answer_all(cfg, prompts, out, engines)
    answers = {role: {r["id"]: _answer(got[role].get(r["id"])) for r in rows} for role in ROLES}
    # 3.-4. detector inside per_prompt; judge and rubric here
    pair, rubric, judge_errors, judge_id, engine = None, None, 0, None, None
    if cfg.pairwise:
        engine = engines.get("judge") or _open_judge(cfg)
        judge_id = engine.model_id
        pair, judge_errors = judge_pairs(engine, c, cfg, rows, answers)
        if c.scoring is not None:
            rubric = rubric_scores(engine, c, rows, answers)
    # 5. checks (judge questions in one batch)
    checks, check_scores = check_figures(c, rows, answers, cfg, engine)
    # 6. figures
    values = per_prompt(rows, answers, pair, rubric)
    opening_figs, warnings = openings(rows, answers)
    report = {**summarise(values, cfg),
              "n": {"harmful": sum(r["set"] == "harmful" for r in rows),
                    "benign": sum(r["set"] == "benign" for r in rows), "judge_errors": judge_errors,
                    "failed_answers": {role: sum(a is None for a in answers[role].values()) for role in ROLES}},
              "openings": opening_figs, "checks": checks, "warnings": warnings,
              "models": {"model": cfg.model, "baseline": cfg.baseline, "judge": judge_id},
              "hashes": {role: (next(iter(got[role].values()), {}) or {}).get("model_hash") for role in ROLES},
              "constitution": {"name": c.name, "hash": c.hash, "has_rubric": c.scoring is not None,
                               "checks": len(checks)},
              "detector": "cai.evaluate.refusal", "detector_card": detector_card(),
              "detector_classes": DETECTOR_CLASSES,
              "figures": {k: d for k, (_, _, d) in FIGURES.items()},
              "config": cfg.to_dict(), "seconds": round(time.perf_counter() - t0, 1)}
    (out / "values.json").write_text(json.dumps(report, indent=2))
    (out / "values.md").write_text(table(report))
    ids = [k.id for _, k in declared_checks(c)]
    with open(out / "answers.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            for role in ROLES:
                a = answers[role][r["id"]]
                d = detect(a) if a is not None else None
                f.write(json.dumps({"id": r["id"], "set": r["set"], "role": role, "prompt": r["prompt"], "answer": a,
                                    "failed": a is None, "refusal": d and d.refusal, "non_answer": d and d.non_answer,
                                    "mitigation": d and d.mitigation, "pattern": d and d.pattern,
                                    "judge": None if pair is None or r["id"] not in pair else
                                    (pair[r["id"]] if role == "model" else 1 - pair[r["id"]]),
                                    "checks": {i: check_scores[(i, role, r["id"])] for i in ids
                                               if (i, role, r["id"]) in check_scores}},
                                   ensure_ascii=False) + "\n")
    claim.release()
    print_summary("eval values", summary_rows(report) + [("out", str(out))])
    failed = report["n"]["failed_answers"]
    if any(failed.values()):
        raise PartialRunError(f"{failed['model']} answers of the model and {failed['baseline']} of the baseline failed; "
                              f"the figures in {out} leave them out (rerun to retry them)")
    return {"out": str(out), "values": str(out / "values.json"),
            **{f"{role}.{k}": (report[role].get(k) or {}).get("value") for role in ROLES
               for k in ("refusal_rate", "over_refusal_rate")}}


def _answer(row: dict[str, Any] | None) -> str | None:
    """The answer text of a responses row; None when the request failed (no row, an error, no text)."""
    if not row or row.get("error") or row.get("response") is None:
        return None
    return row["response"]


def _open_judge(cfg: ValuesConfig):
    return open_engine(engine_config(cfg.judge_model, cfg.engine), seed=cfg.seed)
