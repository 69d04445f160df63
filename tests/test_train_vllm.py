"""A trained policy directory loads in vLLM (in a subprocess: one vLLM engine per process) and in
transformers; and the SFT -> RM -> DPO chain runs on real SmolLM2-135M (integration)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from cai.testing import make_prefs_dataset, make_sft_dataset, make_tiny_model
from cai.train import DataConfig, DPOConfig, LoraConfig, OptimConfig, RMConfig, RunConfig, SFTConfig

VLLM_SCRIPT = textwrap.dedent("""
    import json, sys
    from vllm import LLM, SamplingParams
    llm = LLM(model=sys.argv[1], enforce_eager=True, max_model_len=512, kv_cache_memory_bytes=128 * 2**20,
              max_num_seqs=4, gpu_memory_utilization=0.3)
    out = llm.generate(["Hello"], SamplingParams(max_tokens=4, temperature=0))
    print(json.dumps({"n_tokens": len(out[0].outputs[0].token_ids)}))
""")


@pytest.mark.vllm
def test_sft_output_loads_in_vllm(tmp_path):
    import vllm  # noqa: F401 - a missing vllm fails the test rather than skipping it

    from cai.train.sft import train
    out = train(SFTConfig(model=str(make_tiny_model()), data=DataConfig(path=str(make_sft_dataset(tmp_path / "d", 8)),
                                                                       eval_fraction=0),
                          run=RunConfig(output_dir=str(tmp_path / "o"), max_steps=1, batch_size=4, progress=False)))
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    r = subprocess.run([sys.executable, "-c", VLLM_SCRIPT, str(out)], capture_output=True, text=True, env=env,
                       timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["n_tokens"] >= 1


@pytest.mark.integration
def test_sft_rm_dpo_on_smollm2(tmp_path):
    from cai.models import resolve_model
    from cai.train import train_dpo, train_rm, train_sft
    base = str(resolve_model("smollm2-135m"))
    run = {"max_steps": 1, "batch_size": 2, "micro_batch_size": 2, "progress": False, "save_every": 0}
    data = {"max_length": 160, "eval_fraction": 0}
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"])  # LoRA keeps 135M-parameter AdamW steps cheap
    sft = train_sft(SFTConfig(model=base, data=DataConfig(path=str(make_sft_dataset(tmp_path / "s", 4)), **data),
                              run=RunConfig(output_dir=str(tmp_path / "sft"), **run), lora=lora))
    prefs = make_prefs_dataset(tmp_path / "p", 4)
    rm = train_rm(RMConfig(model=str(sft), data=DataConfig(path=str(prefs), **data),
                           run=RunConfig(output_dir=str(tmp_path / "rm"), **run), lora=lora))
    dpo = train_dpo(DPOConfig(model=str(sft), data=DataConfig(path=str(prefs), **data),
                              run=RunConfig(output_dir=str(tmp_path / "dpo"), **run), optim=OptimConfig(lr=1e-6),
                              lora=lora, ref_cache_dir=str(tmp_path / "ref")))
    assert json.loads((rm / "reward_normalization.json").read_text())["n"] == 8
    first = json.loads((dpo / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(0.693147, abs=1e-4) and first["logps/chosen"] < 0
