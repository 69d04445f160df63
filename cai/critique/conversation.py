"""One SL-CAI conversation as a small state machine: answer -> (critique r -> revision r) for r = 1..N.

Step k is the answer (k = 0), the critique of round r (k = 2r - 1) or its revision (k = 2r). The chat
grows turn by turn after the constitution's few-shot conversations:

    [system] few-shot... user: prompt  assistant: answer  user: critique request 1  assistant: critique 1
    user: revision request 1  assistant: revision 1  user: critique request 2  ...

so round r critiques the latest revision. The principle of round r is drawn with key `"{id}:{r}"` and the
request seed from `"{id}:{step}:{r}"`: both independent of batching and of principle texts, which is
what lets a rerun after editing one principle hit the request cache everywhere that principle is absent.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cai.constitution.templates import render_critique_request, render_revision_request
from cai.critique.config import CritiqueConfig, first_filter
from cai.data.sources import as_messages, last_user
from cai.engine.base import Result, SamplingParams
from cai.prompts import critique_messages
from cai.stage import request_seed

# An engine error that means the conversation no longer fits the context (vLLM and hf engines' wording;
# OpenAI-compatible servers'): it would fail the same way on every rerun, so it is recorded, not retried.
_TOO_LONG = re.compile(r"prompt has \d+ tokens; the model's context is|maximum context length|context length")


def step_name(k: int) -> tuple[str, int]:
    """(step, round) of step index k."""
    return ("answer", 0) if k == 0 else ("critique" if k % 2 else "revision", (k + 1) // 2)


@dataclass
class Conversation:
    id: str
    prompt: Any  # str | list[{role, content}]
    principles: list  # CritiquePrinciple per round
    steps: list[dict[str, Any]] = field(default_factory=list)  # finished steps, in order
    error: str | None = None
    too_long: str | None = None  # the context overflowed: why (the conversation ends there)
    attempt: int = 0  # attempts of the current step that were sampled again
    discarded_tokens: int = 0  # tokens of the current step's discarded attempts
    settled: bool = False  # a later round's revision failed the filters: the last good revision stands
    early_stops: tuple[str, ...] = ()  # stop strings added to every revision request (`SCAFFOLD_STOPS`)
    examples: tuple[str, ...] = ()  # the few-shot turns' texts (the `copy` filter)

    @property
    def n_steps(self) -> int:
        return 1 + 2 * len(self.principles)

    @property
    def done(self) -> bool:
        return (self.error is not None or self.too_long is not None or self.settled
                or len(self.steps) == self.n_steps)

    def next_request(self, c, cfg: CritiqueConfig, attempt: int | None = None
                     ) -> tuple[str, list[dict], SamplingParams, str | None]:
        """(request id, chat messages, sampling params, rendered user request) of the next step; `attempt`
        (default: the current one) addresses a later attempt of a revision, sent ahead of its turn."""
        k = len(self.steps)
        step, r = step_name(k)
        a = self.attempt if attempt is None else attempt
        key = f"{self.id}:{step}:{r}" + (f":{a}" if a else "")  # a retry: another seed
        params = cfg.params(step, request_seed(cfg.seed, key))
        if step == "revision" and self.early_stops:
            params = params.replace(stop=tuple(params.stop) + self.early_stops)
        rid = f"{self.id}#{k}" + (f".{a}" if a else "")
        if step == "answer":
            return rid, as_messages(self.prompt, cfg.system), params, None
        # The answer, then every finished round whose revision stands (passes the filters), then round r:
        # a round whose revision was dropped is not built upon (its critique or ramble would steer the next
        # round), so the next round critiques the last response that stands.
        init = self.steps[0]
        response = init["text"]
        msgs = critique_messages(c, self.principles[0], self.prompt, response, cfg.few_shot)[:-1]
        for rr in range(1, r):
            crit, rev = self.steps[2 * rr - 1], self.steps[2 * rr]
            if first_filter(cfg.filters, rev, init, crit, self.examples):
                continue
            p = self.principles[rr - 1]
            msgs += [{"role": "user", "content": render_critique_request(c, p, self.prompt, response)},
                     {"role": "assistant", "content": crit["text"]},
                     {"role": "user", "content": render_revision_request(c, p, self.prompt, response, crit["text"])},
                     {"role": "assistant", "content": rev["text"]}]
            response = rev["text"]
        p = self.principles[r - 1]
        request = render_critique_request(c, p, self.prompt, response)
        if step == "revision":
            msgs += [{"role": "user", "content": request}, {"role": "assistant", "content": self.steps[k - 1]["text"]}]
            request = render_revision_request(c, p, self.prompt, response, self.steps[k - 1]["text"])
        return rid, msgs + [{"role": "user", "content": request}], params, request

    def advance(self, res: Result, request: str | None, cfg: CritiqueConfig | None = None) -> bool:
        """Take the result of the pending step. Returns False when a revision the filters would drop is
        to be sampled again with another seed (`cfg.retries`); the step stays pending."""
        step, r = step_name(len(self.steps))
        if not res.ok:
            where = f"{step} (round {r})" if r else step
            if _TOO_LONG.search(res.error or ""):
                self.too_long = f"{where}: {res.error}"
            else:
                self.error = f"{where}: {res.error}"
            return True
        o = res.outputs[0]
        text = o.text + o.stop if o.stop is not None and o.stop in self.early_stops else o.text  # keep the marker
        new = {"step": step, "round": r, "request": request, "text": text, "tokens": len(o.token_ids),
               "prompt_tokens": res.prompt_tokens, "finish_reason": o.finish_reason}
        if (step == "revision" and cfg is not None and self.attempt < cfg.retries
                and first_filter(cfg.filters, new, self.steps[0], self.steps[-1], self.examples)):
            self.attempt += 1
            self.discarded_tokens += new["tokens"]
            return False
        new.update(attempts=self.attempt + 1, discarded_tokens=self.discarded_tokens)
        self.attempt = self.discarded_tokens = 0
        self.steps.append(new)
        if step == "revision" and cfg is not None and r > 1:
            # Small models often answer a second critique by repeating it: a round that makes the answer
            # unusable is dropped, and critiquing it further would only waste tokens.
            result = final_round(cfg.filters, self.steps, self.examples)[0]
            self.settled = result is not None and result != r
        return True

    def record(self) -> dict[str, Any]:
        """The durable record appended to the run's log when the conversation finishes."""
        return {"key": self.id, "id": self.id, "principle_ids": [p.id for p in self.principles],
                "principle_hashes": [p.hash for p in self.principles], "steps": self.steps, "error": self.error,
                "too_long": self.too_long}


def final_round(filters: tuple[str, ...], steps: list[dict[str, Any]], examples: tuple[str, ...] = ()
                ) -> tuple[int | None, str | None]:
    """(round whose revision is the conversation's result, None) or (None, filter that drops the last round).

    The result is the last revision that passes the filters, so a later round that made the answer worse
    (a copied critique, a truncation) does not discard an earlier good revision.
    """
    rounds = (len(steps) - 1) // 2  # steps: answer, then (critique, revision) per finished round
    reasons = [first_filter(filters, steps[2 * r], steps[0], steps[2 * r - 1], examples) for r in range(1, rounds + 1)]
    good = [r for r, reason in enumerate(reasons, 1) if reason is None]
    return (good[-1], None) if good else (None, reasons[-1] if reasons else None)


def new_conversation(row: dict[str, Any], sampler, rounds: int, early_stops: tuple[str, ...] = (),
                     examples: tuple[str, ...] = ()) -> Conversation:
    return Conversation(row["id"], row["prompt"], [sampler.sample(key=f"{row['id']}:{r}")[0]
                                                   for r in range(1, rounds + 1)], early_stops=early_stops,
                        examples=examples)


# ---- records -> dataset rows -------------------------------------------------------------------------

def rows_of(rec: dict[str, Any], row: dict[str, Any], cfg: CritiqueConfig, prov: dict[str, Any],
            status: str, filtered_by: str | None, final: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """The `sft`, `prefs` and `trace` rows of one finished conversation record; `final` is the round whose
    revision is the result (see `final_round`; default the last)."""
    steps, prompt = rec["steps"], row["prompt"]
    prov = {**prov, "principle_ids": rec["principle_ids"]}
    extra = {k: v for k, v in row.items() if k not in ("id", "prompt")}
    init = steps[0] if steps else None
    rounds = [(steps[2 * r - 1] if len(steps) > 2 * r - 1 else None, steps[2 * r] if len(steps) > 2 * r else None)
              for r in range(1, len(rec["principle_ids"]) + 1)]
    # A failed or overflowing conversation has rows up to the round that stopped (its error on every row).
    stopped = rec["error"] or rec.get("too_long")
    upto = max(1, step_name(len(steps))[1]) if stopped else max(1, (len(steps) - 1) // 2)  # settled: fewer
    final = final or upto
    trace = []
    for r, (crit, rev) in enumerate(rounds[:upto], 1):
        trace.append({
            "id": rec["id"], "round": r, "status": status, "filtered_by": filtered_by, "error": stopped,
            "prompt": last_user(prompt), "principle_id": rec["principle_ids"][r - 1],
            "principle_hash": rec["principle_hashes"][r - 1],
            "init_response": init and init["text"], "init_tokens": init and init["tokens"],
            "init_finish_reason": init and init["finish_reason"],
            "critique_request": crit and crit["request"], "critique": crit and crit["text"],
            "critique_tokens": crit and crit["tokens"], "critique_finish_reason": crit and crit["finish_reason"],
            "revision_request": rev and rev["request"], "revision": rev and rev["text"],
            "revision_tokens": rev and rev["tokens"], "revision_finish_reason": rev and rev["finish_reason"],
            "revision_attempts": rev and rev.get("attempts", 1), "final": status == "kept" and r == final,
            **extra, **prov})
    out: dict[str, list[dict[str, Any]]] = {"sft": [], "prefs": [], "trace": trace}
    if status != "kept":
        return out
    crit, rev = rounds[final - 1]
    user = as_messages(prompt, cfg.system)
    answer = {"role": "assistant", "content": rev["text"]}
    recipe = {"init_prompt": last_user(prompt), "init_response": init["text"],  # HF cai-conversation-harmless
              "critic_prompt": crit["request"], "critic_response": crit["text"],
              "revision_prompt": rev["request"], "revision_response": rev["text"], "final_round": final}
    out["sft"].append({"id": rec["id"], "prompt": last_user(prompt), "messages": user + [answer],
                       **recipe, **extra, **prov})
    out["prefs"].append({"id": rec["id"], "prompt": user, "chosen": [answer],
                         "rejected": [{"role": "assistant", "content": init["text"]}], **recipe, **extra, **prov})
    return out
