"""The small types of the engine interface: `Scored` rows and the `WeightSync` ability."""
from __future__ import annotations

import pytest

from cai.engine.base import Scored, WeightSync
from cai.engine.hf_engine import HFEngine
from cai.engine.openai_engine import OpenAIEngine
from cai.engine.vllm_engine import VLLMEngine
from cai.engine.weight_sync import sync_weights


def test_scored_is_a_value_or_an_error():
    good, bad = Scored({7: -0.5}), Scored(error="too_long: 5000 tokens")
    assert good.ok and good.value == {7: -0.5} and good.error is None
    assert not bad.ok and bad.value is None and bad.error == "too_long: 5000 tokens"
    assert Scored([1.0]) == Scored([1.0]) and Scored([1.0]) != Scored(error="x")


def test_in_process_engines_can_take_weights_and_http_cannot():
    assert issubclass(HFEngine, WeightSync) and issubclass(VLLMEngine, WeightSync)
    assert not issubclass(OpenAIEngine, WeightSync)

    class Remote:
        name = "openai"

    with pytest.raises(ValueError, match="'openai' cannot receive weights"):
        sync_weights(Remote(), object())


def test_hf_engine_loads_weights_it_is_given(tiny_model):
    import torch
    engine = HFEngine(str(tiny_model), dtype="float32")
    weights = [(k, torch.zeros_like(v)) for k, v in engine.model.state_dict().items()]
    engine.load_weights(weights)
    assert all(float(v.abs().sum()) == 0.0 for v in engine.model.state_dict().values())
