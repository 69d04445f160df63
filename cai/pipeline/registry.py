"""Stage kinds a pipeline can run: kind -> entry point as a lazy "module:attr" string.

An entry point takes one config dataclass (the type annotation of its first parameter; that is how a
stage's YAML mapping is built) and writes everything under the directory named by the config's `out`
field, or `run.output_dir` for trainers. Nothing is imported until a pipeline uses the kind, so kinds
whose modules are not installed (or not written yet) cost nothing until then.

`CONSTITUTION_PARTS` says which parts of a constitution each kind reads, so that editing a comparison
principle does not rerun a critique stage; a kind not listed there depends on the whole constitution.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing
from dataclasses import dataclass
from typing import Any

from cai.errors import InputError

KINDS: dict[str, str | tuple[str, ...]] = {
    "generate": "cai.generate.run:run_generate",
    "critique": "cai.critique.stage:run_critique",
    "sample": "cai.feedback.sample:run_sample",
    "label": "cai.feedback.label:run_label",
    "rlaif": "cai.feedback.label:run_rlaif",
    "train.sft": "cai.train:train_sft",
    "train.rm": "cai.train:train_rm",
    "train.dpo": "cai.train:train_dpo",
    # the first importable candidate wins (the trainers' public names settle when issue #12 merges)
    "train.ppo": ("cai.train.ppo:train_ppo", "cai.train:train_ppo", "cai.train.ppo:train"),
    "train.rloo": ("cai.train.rloo:train_rloo", "cai.train:train_rloo", "cai.train.rloo:train"),
    "contrast": "cai.contrast:contrast",
    "eval.values": "cai.evaluate.values:eval_values",
    "labels.export": "cai.labelui.export:export_labels",
}

# Dotted paths into `Constitution.canonical()` each kind reads (few-shot examples and template files are
# split per use, so a comparison edit stays away from critique and the reverse).
_JUDGE = ("comparisons", "few_shot.comparison", "system_prompt", "templates", "template_files.compare",
          "template_files.compare_cot")
CONSTITUTION_PARTS: dict[str, tuple[str, ...]] = {
    "critique": ("critiques", "few_shot.critique", "system_prompt", "template_files.critique",
                 "template_files.revision"),
    "label": _JUDGE,
    "rlaif": _JUDGE,
}

# Config fields that name a model (their weights hash keys the stage's output).
MODEL_FIELDS = ("model", "judge", "ref_model", "baseline", "reward_model", "value_model", "policy")


@dataclass(frozen=True)
class StageKind:
    name: str
    fn: Any
    config_cls: type

    @property
    def out_field(self) -> str:
        names = {f.name for f in dataclasses.fields(self.config_cls)}
        if "out" in names:
            return "out"
        if "run" in names:
            return "run.output_dir"
        raise InputError(f"stage kind {self.name!r}: its config has neither `out` nor `run.output_dir`",
                         field="kind")

    @property
    def resumable(self) -> bool:
        """Trainers take `resume=`; dataset stages resume from their record logs by themselves."""
        return "resume" in inspect.signature(self.fn).parameters


class KindUnavailable(InputError):
    """A known kind whose module is not installed here (a stage marked `optional: true` is then skipped)."""


def load_kind(kind: str) -> StageKind:
    """Import a kind's entry point; an unknown kind or a missing module is an `InputError`."""
    if kind not in KINDS:
        raise InputError(f"unknown stage kind {kind!r} (known: {', '.join(KINDS)})", field="kind")
    targets = KINDS[kind] if isinstance(KINDS[kind], tuple) else (KINDS[kind],)
    fn, why = None, ""
    for target in targets:
        module, _, attr = target.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
            break
        except ModuleNotFoundError as e:
            if not e.name or not module.startswith(e.name):  # the module exists but one of its imports is missing
                raise
            why = f"{target}: {e}"
        except AttributeError as e:
            why = f"{target}: {e}"
    if fn is None:
        raise KindUnavailable(f"stage kind {kind!r} is not available in this installation ({why})", field="kind")
    params = list(inspect.signature(fn).parameters.values())
    hints = typing.get_type_hints(fn)
    cls = hints.get(params[0].name) if params else None
    if cls is None or not dataclasses.is_dataclass(cls):
        raise InputError(f"stage kind {kind!r}: {fn.__module__}.{fn.__name__} does not take a config dataclass", field="kind")
    return StageKind(kind, fn, cls)


def constitution_parts(kind: str) -> tuple[str, ...] | None:
    """The parts of the constitution a kind reads; None means all of it."""
    return CONSTITUTION_PARTS.get(kind)
