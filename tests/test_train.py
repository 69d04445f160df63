"""Training stages end to end on a tiny random Llama with SmolLM2's tokenizer and chat template:
assistant-only masking on a real tokenised example, TRL-style truncation counts, config and data
errors (one line, exit 2, file:line:field), and SFT -> RM -> DPO runs with their outputs."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cai.errors import InputError
from cai.testing import make_prefs_dataset, make_sft_dataset, make_tiny_model
from cai.train import DPOConfig, RMConfig, SFTConfig, load_config

PY = sys.executable


@pytest.fixture(scope="module")
def tiny():
    return str(make_tiny_model())


@pytest.fixture(scope="module")
def tok(tiny):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny)


def cai(*args, **kw):
    return subprocess.run([PY, "-m", "cai.cli", *args], capture_output=True, text=True, check=False, **kw)


# ---- data ---------------------------------------------------------------------------------------------


def test_sft_mask_covers_exactly_the_assistant_turns(tok):
    from cai.train import data
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Goodbye."}]
    ex = data.tokenize_sft(tok, msgs, 512, data.Counts())
    text = tok.decode(ex.input_ids)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    trained = [tok.decode([t for t, m in zip(ex.input_ids, ex.labels_mask) if m])]
    # the two assistant contents with their end-of-turn token, nothing else (no role headers, no user text)
    assert trained == ["Hello!<|im_end|>Goodbye.<|im_end|>"]
    spans, cur = [], []
    for t, m in zip(ex.input_ids, ex.labels_mask):
        if m:
            cur.append(t)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    assert spans == ["Hello!<|im_end|>", "Goodbye.<|im_end|>"]
    # the token before each span is the newline after "<|im_start|>assistant"
    first = ex.labels_mask.index(1)
    assert tok.decode(ex.input_ids[:first]).endswith("Hi there<|im_end|>\n<|im_start|>assistant\n")
    # truncation keeps the start and is counted
    counts = data.Counts()
    short = data.tokenize_sft(tok, msgs, first + 2, counts)
    assert counts.truncated == 1 and len(short.input_ids) == first + 2 and sum(short.labels_mask) == 2


def test_dpo_truncation_and_drops_are_counted(tok, tmp_path):
    from cai.train import data
    d = make_prefs_dataset(tmp_path / "p", 8, long_every=4)
    rows = data.read_split(str(d), "prefs").rows
    counts = data.Counts()
    out = [data.tokenize_pair_dpo(tok, r, 60, "keep_start", counts) for r in rows]
    assert counts.rows == 8 and counts.dropped == 2  # the long prompts fill max_length: dropped like TRL
    assert counts.truncated > 0 and all(e is None or len(e.chosen_ids) <= 60 for e in out)
    rm_counts = data.Counts()
    data_rm = [data.tokenize_pair_rm(tok, r, 200, rm_counts) for r in rows]
    assert rm_counts.dropped == 2 and sum(e is not None for e in data_rm) == 6


def test_packing_keeps_examples_apart(tok):
    import torch

    from cai.train import batching, common, data, forward
    model = forward.CompletionLogps(common.load_causal_lm(Path(make_tiny_model()), "float32"))
    exs = [data.tokenize_sft(tok, [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": "A" * i}],
                             512, data.Counts()) for i in range(1, 4)]
    packed = batching.pack_sft(exs, 512)
    assert len(packed) == 1
    with torch.no_grad():
        b = batching.collate_sft(exs, tok.pad_token_id)
        sep, _ = model(b["input_ids"], b["attention_mask"], b["completion_mask"])
        p = batching.collate_sft(packed, tok.pad_token_id)
        packed_logps, _ = model(p["input_ids"], None, p["completion_mask"], position_ids=p["position_ids"])
    assert packed_logps.sum().item() == pytest.approx(sep.sum().item(), abs=1e-3)


def test_completion_logps_equals_full_logits(tok):
    import torch

    from cai.train import batching, common, data, forward, losses
    lm = common.load_causal_lm(Path(make_tiny_model()), "float32")
    exs = [data.tokenize_pair_dpo(tok, r, 512, "keep_start", data.Counts())
           for r in data.read_split(str(make_prefs_dataset(Path(tok.name_or_path).parent / "_lp", 4)), "prefs").rows]
    b = batching.collate_pairs(exs, tok.pad_token_id)
    with torch.no_grad():
        ours, n = forward.CompletionLogps(lm)(b["input_ids"], b["attention_mask"], b["completion_mask"])
        full = losses.shifted_completion_logps(lm(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                                               b["input_ids"], b["completion_mask"])
    assert torch.allclose(ours, full, atol=1e-4)
    assert torch.equal(n, b["completion_mask"][:, 1:].sum(-1))


# ---- configs and bad input ----------------------------------------------------------------------------


def test_config_yaml_errors_name_file_line_and_field(tmp_path):
    cfgf = tmp_path / "c.yaml"
    cfgf.write_text("model: x\noptim:\n  lr: 1e-5\n  lrr: 2\n")
    with pytest.raises(InputError) as e:
        load_config(DPOConfig, cfgf)
    assert str(e.value).startswith(f"{cfgf}:4:8: optim.lrr: unknown key")
    cfgf.write_text("loss_type: ipo\nlabel_smoothing: 0.1\n")
    with pytest.raises(InputError, match=r"c.yaml:2:\d+: label_smoothing: IPO has no label smoothing"):
        load_config(DPOConfig, cfgf)
    cfgf.write_text("run:\n  batch_size: eight\n")
    with pytest.raises(InputError, match=r"c.yaml:2:\d+: run.batch_size: must be an integer"):
        load_config(SFTConfig, cfgf)
    cfgf.write_text("loss_type: hinge\n")
    with pytest.raises(InputError, match="loss_type: must be one of sigmoid, ipo, cdpo, robust"):
        load_config(DPOConfig, cfgf)
    cfg = load_config(RMConfig, None, ["optim.lr=3e-4", "run.max_steps=5", "lora.target_modules=[q_proj]"])
    assert (cfg.optim.lr, cfg.run.max_steps, cfg.lora.target_modules, cfg.data.config) == (3e-4, 5, ["q_proj"], "prefs")


def test_example_configs_load():
    root = Path(__file__).resolve().parents[1] / "configs"
    for stage, cls in (("sft", SFTConfig), ("rm", RMConfig), ("dpo", DPOConfig)):
        for f in sorted(root.glob(f"{stage}*.yaml")):
            load_config(cls, f)


@pytest.mark.parametrize("args,pattern", [
    (["train", "dpo", "loss_type=ipo", "label_smoothing=0.2"], r"label_smoothing: IPO has no label smoothing"),
    (["train", "sft", "model=/does/not/exist"], r"/does/not/exist: model: model path does not exist"),
    (["train", "rm", "bogus=1"], r"bogus: unknown key"),
])
def test_cli_bad_input_is_one_line_exit_2(args, pattern):
    r = cai(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert __import__("re").search(pattern, lines[0]), lines[0]


def test_robust_dpo_epsilon_is_one_flip_rate_in_range():
    for kw, pattern in (({"loss_type": "robust", "robust_epsilon": 0.5}, r"robust_epsilon: must be a flip rate in "
                         r"\[0, 0\.5\)"),
                        ({"loss_type": "robust", "robust_epsilon": -0.1}, r"robust_epsilon: must be a flip rate"),
                        ({"loss_type": "sigmoid", "robust_epsilon": 0.1}, r"robust_epsilon: only loss_type robust"),
                        ({"loss_type": "robust", "label_smoothing": 0.1}, r"label_smoothing: robust DPO takes its "
                         r"flip rate from robust_epsilon")):
        with pytest.raises(InputError, match=pattern):
            DPOConfig(**kw)
    assert DPOConfig(loss_type="robust", robust_epsilon=0.49).robust_epsilon == 0.49
    assert load_config(DPOConfig, None, ["loss_type=robust", "robust_epsilon=0.2"]).robust_epsilon == 0.2


def _pairs(path: Path, ps: list[float]) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"Tell me about topic {i}.", "chosen": f"Topic {i} is a subject of "
                                        "study with a long history.", "rejected": "No.", "p_chosen": p}) + "\n"
                            for i, p in enumerate(ps)))
    return path


def _dpo(tiny, data, out, *extra) -> list[str]:
    return ["train", "dpo", f"model={tiny}", f"data.path={data}", f"run.output_dir={out}", "data.eval_fraction=0",
            "run.batch_size=8", "run.micro_batch_size=4", "run.progress=false", "run.save_every=0",
            f"ref_cache_dir={out.parent / 'ref'}", *extra]


def test_robust_dpo_near_p_half_is_refused_not_run_away(tiny, tmp_path, capsys):
    """The reproduction: robust DPO at lr 1e-4 on 8 pairs at p = 0.51 fell 0.693, 0.693, −32, −76, ... with
    per-pair ε = 0.49 (the loss ×50, no lower bound). One ε for the data set, estimated at 0.49 here, is
    refused with one line naming the field; nothing is trained."""
    from cai import cli
    out = tmp_path / "run"
    assert cli.main(_dpo(tiny, _pairs(tmp_path / "p.jsonl", [0.51] * 8), out, "loss_type=robust",
                         "optim.lr=1e-4", "run.max_steps=8")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "robust_epsilon: auto: the soft labels give ε = 0.490" in err[0], err
    assert "×50" in err[0] and not (out / "metrics.jsonl").exists()


def test_robust_dpo_weighs_every_pair_alike_with_one_epsilon(tiny, tmp_path):
    """At step 1 the policy is its reference, so h = 0 for every pair and robust DPO's gradient is plain
    DPO's times 1/(1 − 2ε) (d/dh of [(1−ε)·s(βh) − ε·s(−βh)]/(1−2ε) at 0 is −β/2/(1−2ε)), when ε is one number.
    Six pairs at p = 0.95 and two at p = 0.51 give ε = (6·0.05 + 2·0.49)/8 = 0.16, so the ratio of the
    pre-clip gradient norms is 1/0.68 = 1.4706. (Per-pair ε weighted the p = 0.51 pairs ×50 against ×1.1.)"""
    from cai import cli
    from cai.train import metrics
    data = _pairs(tmp_path / "p.jsonl", [0.95] * 6 + [0.51] * 2)
    norms = {}
    for loss in ("sigmoid", "robust"):
        out = tmp_path / loss
        assert cli.main(_dpo(tiny, data, out, f"loss_type={loss}", "soft_labels=" + str(loss == "robust").lower(),
                             "run.max_steps=1", "optim.max_grad_norm=0")) == 0
        step1 = metrics.read_metrics(out / "metrics.jsonl")[0]
        assert step1["loss"] == pytest.approx(0.693147, abs=1e-5)  # h = 0: ln 2 for both
        norms[loss] = step1["grad_norm"]
    assert norms["robust"] / norms["sigmoid"] == pytest.approx(1 / (1 - 2 * 0.16), rel=1e-3)
    # the model card records the ε it trained with
    card = (tmp_path / "robust" / "README.md").read_text()
    assert float(__import__("re").search(r'"robust_epsilon": ([0-9.e-]+)', card).group(1)) == pytest.approx(0.16)


def test_rm_margin_on_soft_labels_is_refused(tiny, tmp_path, capsys):
    """A margin with soft p_chosen would train σ(r_c − r_r) to 0.856 at p = 0.75, margin 1 (not 0.75): one
    line naming the field, nothing trained; hard labels keep their margin."""
    from cai import cli
    soft = _pairs(tmp_path / "soft.jsonl", [0.75] * 4)
    base = ["train", "rm", f"model={tiny}", "data.eval_fraction=0", "run.batch_size=2", "run.micro_batch_size=2",
            "run.max_steps=1", "run.progress=false"]
    assert cli.main([*base, f"data.path={soft}", f"run.output_dir={tmp_path / 'a'}", "margin=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "margin: a margin is for hard labels" in err[0] and "0.856" in err[0], err
    col = tmp_path / "col.jsonl"
    col.write_text("".join(json.dumps({**json.loads(line), "margin": 1.0}) + "\n"
                           for line in soft.read_text().splitlines()))
    assert cli.main([*base, f"data.path={col}", f"run.output_dir={tmp_path / 'b'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "soft_labels: a margin is for hard labels" in err[0] and "margin column" in err[0], err
    assert not (tmp_path / "a" / "metrics.jsonl").exists() and not (tmp_path / "b" / "metrics.jsonl").exists()
    # the same pairs as hard labels train with the margin
    assert cli.main([*base, f"data.path={col}", f"run.output_dir={tmp_path / 'c'}", "soft_labels=false"]) == 0


def test_cli_missing_columns_and_lora_targets(tiny, tmp_path):
    sft = make_sft_dataset(tmp_path / "sft", 8)
    r = cai("train", "dpo", f"model={tiny}", f"data.path={sft}", "data.config=sft", f"run.output_dir={tmp_path}/o")
    assert r.returncode == 2 and "dataset lacks column(s) chosen, rejected" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    cfgf = tmp_path / "l.yaml"
    cfgf.write_text(f"model: {tiny}\ndata:\n  path: {sft}\nlora:\n  r: 4\n  target_modules: [q_proj, wq]\n")
    r = cai("train", "sft", "--config", str(cfgf), f"run.output_dir={tmp_path}/o")
    assert r.returncode == 2, r.stderr
    assert f"{cfgf}:6:19: lora.target_modules: not in the model: wq" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# ---- the three stages end to end ----------------------------------------------------------------------


def test_sft_rm_dpo_pipeline(tiny, tmp_path):
    """SFT -> RM (from the SFT model) -> DPO (from the SFT model), with loadable outputs and cards."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from cai.train import DataConfig, OptimConfig, RunConfig, train_dpo, train_rm, train_sft
    sft_data, prefs = make_sft_dataset(tmp_path / "sft", 16), make_prefs_dataset(tmp_path / "prefs", 20)
    run = {"batch_size": 4, "micro_batch_size": 2, "progress": False, "save_every": 0}
    sft_out = train_sft(SFTConfig(model=tiny, data=DataConfig(path=str(sft_data), eval_fraction=0.25),
                                  run=RunConfig(output_dir=str(tmp_path / "o_sft"), max_steps=3, **run),
                                  optim=OptimConfig(lr=1e-3)))
    recs = [json.loads(x) for x in (sft_out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "loss" in r] == [1, 2, 3] and "eval/loss" in recs[-1]
    assert recs[2]["loss"] < recs[0]["loss"]
    rm_out = train_rm(RMConfig(model=str(sft_out), data=DataConfig(path=str(prefs), eval_fraction=0.2),
                               run=RunConfig(output_dir=str(tmp_path / "o_rm"), max_steps=3, **run),
                               optim=OptimConfig(lr=1e-3), center_rewards_coefficient=0.01))
    norm = json.loads((rm_out / "reward_normalization.json").read_text())
    assert norm["n"] == 8 and norm["source"] == "held-out pairs"
    rm = AutoModelForSequenceClassification.from_pretrained(rm_out)
    assert rm.config.num_labels == 1 and rm.config.reward_normalization["gain"] == pytest.approx(norm["gain"])
    last = [json.loads(x) for x in (rm_out / "metrics.jsonl").read_text().splitlines()][-1]
    assert {"eval/accuracy", "eval/reward_mean", "eval/reward_std"} <= set(last)
    dpo_out = train_dpo(DPOConfig(model=str(sft_out), data=DataConfig(path=str(prefs), eval_fraction=0.2),
                                  run=RunConfig(output_dir=str(tmp_path / "o_dpo"), max_steps=3, **run),
                                  optim=OptimConfig(lr=1e-3), ref_cache_dir=str(tmp_path / "ref")))
    recs = [json.loads(x) for x in (dpo_out / "metrics.jsonl").read_text().splitlines()]
    keys = {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin", "logps/chosen",
            "logps/rejected"}
    assert keys <= set(recs[0]) and recs[0]["loss"] == pytest.approx(0.693147, abs=1e-5)
    assert recs[2]["rewards/margin"] > 0
    assert len(list((tmp_path / "ref").glob("*.pt"))) == 1
    for out in (sft_out, dpo_out):
        AutoModelForCausalLM.from_pretrained(out)
        AutoTokenizer.from_pretrained(out)
        assert (out / "training.png").stat().st_size > 1000
    card = (dpo_out / "README.md").read_text()
    assert "constitution_hash" in card and "c0ffee" in card and "loss_type: sigmoid" in card
    # DPO reference log-probs come from the cache the second time (same data and model)
    before = (next((tmp_path / "ref").glob("*.pt"))).stat().st_mtime_ns
    train_dpo(DPOConfig(model=str(sft_out), data=DataConfig(path=str(prefs), eval_fraction=0.2),
                        run=RunConfig(output_dir=str(tmp_path / "o_dpo2"), max_steps=1, **run),
                        ref_cache_dir=str(tmp_path / "ref")))
    assert next((tmp_path / "ref").glob("*.pt")).stat().st_mtime_ns == before
    del torch


def test_dpo_lora_reference_is_the_base_and_merge_exports(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    from cai.train import DataConfig, LoraConfig, OptimConfig, RunConfig, train_dpo
    prefs = make_prefs_dataset(tmp_path / "prefs", 12)
    out = train_dpo(DPOConfig(model=tiny, data=DataConfig(path=str(prefs), eval_fraction=0.0),
                              run=RunConfig(output_dir=str(tmp_path / "o"), max_steps=2, batch_size=4,
                                            micro_batch_size=4, progress=False, save_every=1),
                              optim=OptimConfig(lr=1e-2), lora=LoraConfig(r=4, alpha=8),
                              loss_type="cdpo", ref_cache_dir=str(tmp_path / "ref")))
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert recs[0]["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)  # fresh adapter = base = reference
    assert (out / "adapter" / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny)
    diff = (merged.model.layers[0].self_attn.q_proj.weight - base.model.layers[0].self_attn.q_proj.weight).abs().max()
    assert diff > 0
    # `cai train merge` rebuilds the same merged model from the adapter alone
    r = cai("train", "merge", str(out / "adapter"), "--out", str(tmp_path / "merged"))
    assert r.returncode == 0, r.stderr[-2000:]
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert (again.model.layers[0].self_attn.q_proj.weight - merged.model.layers[0].self_attn.q_proj.weight).abs().max() < 1e-6
    assert (tmp_path / "merged" / "tokenizer_config.json").is_file()


def test_accelerator_does_not_inherit_another_trainers_bf16(monkeypatch):
    """TRL 1.16 leaves a process-wide bf16 AcceleratorState on CPU; cai's trainers must stay fp32."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from cai.train import common
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    AcceleratorState._reset_state()
    assert Accelerator(mixed_precision="bf16").mixed_precision == "bf16"
    assert common.make_accelerator(0).mixed_precision == "no"
    AcceleratorState._reset_state()
