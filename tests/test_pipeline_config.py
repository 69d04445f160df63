"""The shared config loader (`cai.config`): tuples, nested frozen dataclasses, round trips through plain
data (how a pipeline hands a stage config to its child process), and FILE:LINE:COL errors."""
from __future__ import annotations

import pytest

from cai.config import from_data, load_config, to_dict
from cai.critique.config import CritiqueConfig, CritiqueStage
from cai.engine.base import SamplingParams
from cai.engine.config import EngineSpec
from cai.errors import InputError
from cai.feedback.config import LabelStage
from cai.train.config import DPOConfig
from cai.yamlio import load_yaml


def test_tuples_and_nested_frozen_dataclasses_round_trip():
    cfg = from_data(LabelStage, {"data": "d", "clamp": [0.3, 0.7], "principles": 2,
                                 "engine": {"backend": "hf", "base_urls": [], "args": {"tensor_parallel_size": 2}}})
    assert cfg.clamp == (0.3, 0.7) and isinstance(cfg.clamp, tuple)
    assert cfg.engine == EngineSpec(backend="hf", args={"tensor_parallel_size": 2})
    with pytest.raises(AttributeError):  # still frozen
        cfg.engine.backend = "vllm"
    assert from_data(LabelStage, to_dict(cfg)) == cfg

    crit = from_data(CritiqueStage, {"rounds": 3, "filters": ["empty"], "answer": {"max_tokens": 32, "stop": ["\n"]}})
    assert crit.filters == ("empty",) and crit.answer == SamplingParams(max_tokens=32, stop=("\n",))
    assert crit.critique == CritiqueConfig().critique  # untouched steps keep their (per-step) defaults
    again = from_data(CritiqueStage, to_dict(crit))
    assert again == crit and again.answer.stop == ("\n",)


def test_errors_name_file_line_column_and_field(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("stages:\n  label:\n    data: d\n    clamp: [0.3, 0.5, 0.7]\n")
    data, marks = load_yaml(f)
    with pytest.raises(InputError) as e:
        from_data(LabelStage, data["stages"]["label"], file=str(f), marks=marks, prefix=("stages", "label"))
    assert str(e.value) == f"{f}:4:12: stages.label.clamp: must be a list of 2 values, got 3"

    # a __post_init__ that raises ValueError (SamplingParams) is located at its mapping
    f.write_text("stages:\n  c:\n    rounds: 1\n    answer:\n      temperature: -1\n")
    data, marks = load_yaml(f)
    with pytest.raises(InputError) as e:
        from_data(CritiqueStage, data["stages"]["c"], file=str(f), marks=marks, prefix=("stages", "c"))
    assert str(e.value) == f"{f}:5:7: stages.c.answer: temperature must be >= 0"

    # a post-init InputError(field=...) of a nested stage config, and an unknown key
    f.write_text("beta: 0.1\nrun:\n  batch_size: 0\n")
    with pytest.raises(InputError) as e:
        load_config(DPOConfig, f)
    assert str(e.value) == f"{f}:3:15: run.batch_size: must be >= 1"
    with pytest.raises(InputError) as e:
        load_config(DPOConfig, None, ["optim.lrr=1"])
    assert str(e.value).startswith("optim.lrr: unknown key (expected one of: betas, eps, lr,")
    assert str(e.value).endswith("(from the command line)")


def test_a_partial_nested_mapping_changes_only_the_keys_it_names():
    # `revision: {stop: [...]}` keeps the revision step's own budget (160), not a bare SamplingParams' (256);
    # `optim: {warmup_steps: 3}` keeps DPO's own lr (5e-7), not OptimConfig's
    cfg = from_data(CritiqueConfig, {"revision": {"stop": ["\n\n"]}, "answer": {"temperature": 0.9}})
    assert tuple(cfg.revision.stop) == ("\n\n",) and cfg.revision.max_tokens == CritiqueConfig().revision.max_tokens == 160
    assert cfg.answer.temperature == 0.9 and cfg.answer.max_tokens == 96 and cfg.critique.max_tokens == 64
    dpo = load_config(DPOConfig, None, ["optim.warmup_steps=3", "run.epochs=2"])
    assert dpo.optim.warmup_steps == 3 and dpo.optim.lr == DPOConfig().optim.lr == 5e-7
    assert dpo.run.epochs == 2 and dpo.run.output_dir == DPOConfig().run.output_dir
    # a wrong key inside the partial mapping is still named
    with pytest.raises(InputError, match="revision.bogus"):
        from_data(CritiqueConfig, {"revision": {"bogus": 1}})
