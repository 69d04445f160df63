"""The `prefs` config written by `cai critique` goes into TRL unchanged: `datasets.load_dataset(DIR, "prefs")`,
then one DPOTrainer step on the tiny model."""
from __future__ import annotations

from pathlib import Path

from cai.critique import CritiqueConfig, critique
from cai.engine.base import SamplingParams

REPO = Path(__file__).resolve().parents[1]


def test_trl_dpo_trainer_takes_prefs_for_one_step(vllm_engine, tiny_model, tmp_path, cache_path):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    sp = SamplingParams(temperature=0.8, max_tokens=8)
    critique(prompts=str(REPO / "data" / "red_team.jsonl"), limit=2, out=tmp_path / "out", engine=vllm_engine,
             cache=cache_path, progress=False,
             config=CritiqueConfig(rounds=1, answer=sp, critique=sp, revision=sp, filters=()))
    ds = datasets.load_dataset(str(tmp_path / "out"), "prefs", split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 2 and ds[0]["prompt"][0]["role"] == "user" and ds[0]["chosen"][0]["role"] == "assistant"

    tok = AutoTokenizer.from_pretrained(tiny_model)
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, report_to=[],
                     logging_steps=1, save_strategy="no", use_cpu=True)
    out = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args, train_dataset=ds,
                     processing_class=tok).train()
    assert out.global_step == 1 and out.training_loss > 0
