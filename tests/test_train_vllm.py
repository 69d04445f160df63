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
    """The chain on real weights, each stage checked against a plain transformers forward of the weights it
    started from (or wrote), not against values that hold for any model: SFT's step-1 loss is the base
    model's token-mean NLL of the assistant tokens, the RM's normalisation makes its own saved model's
    rewards mean 0 / std 1, and DPO's step-1 log-probs are the SFT model's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from cai.data.layout import read_config
    from cai.models import resolve_model
    from cai.train import data as tdata
    from cai.train import train_dpo, train_rm, train_sft
    base = str(resolve_model("smollm2-135m"))
    # batch 4 = every row, so step 1 sees exactly the rows computed below
    run = {"max_steps": 1, "batch_size": 4, "micro_batch_size": 2, "progress": False, "save_every": 0}
    data = {"max_length": 160, "eval_fraction": 0}
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"])  # LoRA keeps 135M-parameter AdamW steps cheap
    sft_rows = make_sft_dataset(tmp_path / "s", 4)
    sft = train_sft(SFTConfig(model=base, data=DataConfig(path=str(sft_rows), **data),
                              run=RunConfig(output_dir=str(tmp_path / "sft"), **run), lora=lora))
    prefs = make_prefs_dataset(tmp_path / "p", 4)
    rm = train_rm(RMConfig(model=str(sft), data=DataConfig(path=str(prefs), **data),
                           run=RunConfig(output_dir=str(tmp_path / "rm"), **run), lora=lora))
    dpo = train_dpo(DPOConfig(model=str(sft), data=DataConfig(path=str(prefs), **data),
                              run=RunConfig(output_dir=str(tmp_path / "dpo"), **run), optim=OptimConfig(lr=1e-6),
                              lora=lora, ref_cache_dir=str(tmp_path / "ref")))
    tok = AutoTokenizer.from_pretrained(base)
    first = lambda out: json.loads((out / "metrics.jsonl").read_text().splitlines()[0])  # noqa: E731

    def scored_logps(model_dir, seqs):  # [(ids, mask)] -> per-sequence sums of log p(token) where mask is 1
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        out = []
        for ids, mask in seqs:
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)  # (T, V)
            out.append((sum(logp[t - 1, ids[t]].item() for t in range(1, len(ids)) if mask[t]),
                        sum(mask[1:])))
        return out

    # SFT: the adapter starts at zero, so step 1's loss is the base model's NLL per assistant token
    exs = [tdata.tokenize_sft(tok, r["messages"], 160, tdata.Counts()) for r in read_config(sft_rows, "sft")]
    got = scored_logps(base, [(e.input_ids, e.labels_mask) for e in exs])
    nll = -sum(s for s, _ in got) / sum(n for _, n in got)
    assert first(sft)["loss"] == pytest.approx(nll, rel=1e-4)
    # DPO: the policy starts as the SFT model: its step-1 log-probs are the SFT model's, summed per response
    pairs = [tdata.tokenize_pair_dpo(tok, r, 160, "keep_start", tdata.Counts()) for r in read_config(prefs, "prefs")]
    chosen = scored_logps(sft, [(e.chosen_ids, e.chosen_mask) for e in pairs])
    rejected = scored_logps(sft, [(e.rejected_ids, e.rejected_mask) for e in pairs])
    step1 = first(dpo)
    assert step1["logps/chosen"] == pytest.approx(sum(s for s, _ in chosen) / 4, rel=1e-4)
    assert step1["logps/rejected"] == pytest.approx(sum(s for s, _ in rejected) / 4, rel=1e-4)
    assert step1["loss"] == pytest.approx(0.693147, abs=1e-4)  # and the policy is its reference: h = 0
    # RM: gain and bias make the saved model's rewards of the 8 training responses mean 0, std 1
    norm = json.loads((rm / "reward_normalization.json").read_text())
    model = AutoModelForSequenceClassification.from_pretrained(rm, dtype=torch.float32).eval()
    rewards = []
    for r in read_config(prefs, "prefs"):
        e = tdata.tokenize_pair_rm(tok, r, 160, tdata.Counts())
        for ids in (e.chosen_ids, e.rejected_ids):
            with torch.no_grad():
                rewards.append(model(torch.tensor([ids])).logits[0, 0].item())  # (1, 1): one sequence, no padding
    r = torch.tensor(rewards, dtype=torch.float64)
    assert norm["n"] == 8 and r.std() > 1e-3  # the rewards differ: the normalisation is not degenerate
    assert norm["gain"] == pytest.approx(1 / r.std(unbiased=False).item(), rel=1e-3)
    assert norm["bias"] == pytest.approx(-r.mean().item() / r.std(unbiased=False).item(), rel=1e-3, abs=1e-3)
