"""Small synthetic datasets in cai's layout (`DIR/<config>/train-00000-of-00001.parquet`, card, manifest)
for tests, smoke runs and the benchmark, when the critique and feedback stages have not produced data."""
from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = ["the moon", "tea", "rivers", "prime numbers", "bicycles", "owls", "bread", "glaciers", "chess",
          "volcanoes", "honey", "libraries", "clocks", "coral reefs", "maps", "violins"]
GOOD = ["Here is a careful, honest answer about {t}: it is worth learning about, and I am glad to help.",
        "{T} is a fascinating subject. In short, I'd recommend a good introductory book on {t}.",
        "Happy to explain {t}. The key facts are well documented, and I can go step by step if you like."]
BAD = ["No. Figure out {t} yourself.", "{T}? Whatever, I do not care about {t} at all.",
       "I refuse to talk about {t} because it is boring."]


def write_dataset_dir(out: Path, config: str, rows: list[dict], provenance: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    (out / config).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), out / config / "train-00000-of-00001.parquet")
    (out / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n  - split: train\n"
                                   f"    path: {config}/train-*.parquet\n---\n# synthetic {config} data\n")
    (out / "manifest.json").write_text(json.dumps({"generator": "cai.testing.datasets", **provenance}, indent=2))
    return out


def make_prefs_dataset(out: str | Path, n: int = 32, *, seed: int = 0, soft: bool = True,
                       long_every: int = 0) -> Path:
    """`prefs` pairs: polite (chosen) vs rude (rejected) answers, `p_chosen` soft labels when `soft`.
    `long_every=k` makes every k-th prompt very long (to exercise truncation)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        t = TOPICS[i % len(TOPICS)]
        q = f"Can you tell me about {t}?" + (" Please be thorough." * 200 if long_every and i % long_every == 0 else "")
        row = {"prompt": [{"role": "user", "content": q}],
               "chosen": [{"role": "assistant", "content": rng.choice(GOOD).format(t=t, T=t.capitalize())}],
               "rejected": [{"role": "assistant", "content": rng.choice(BAD).format(t=t, T=t.capitalize())}],
               "constitution_hash": "c0ffee", "model_id": "smollm2-135m"}
        if soft:
            row["p_chosen"] = round(0.6 + 0.4 * rng.random(), 3)
        rows.append(row)
    return write_dataset_dir(Path(out), "prefs", rows, {"constitution_hash": "c0ffee", "rows": n})


def make_sft_dataset(out: str | Path, n: int = 32, *, seed: int = 0, multi_turn_every: int = 4) -> Path:
    """`sft` conversations (some multi-turn, some with a system prompt)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        t = TOPICS[i % len(TOPICS)]
        msgs = [{"role": "user", "content": f"Tell me about {t}."},
                {"role": "assistant", "content": rng.choice(GOOD).format(t=t, T=t.capitalize())}]
        if multi_turn_every and i % multi_turn_every == 1:
            msgs = [{"role": "system", "content": "You are concise."}] + msgs + [
                {"role": "user", "content": "Thanks! One more fact?"},
                {"role": "assistant", "content": f"Sure: people have studied {t} for centuries."}]
        rows.append({"prompt": msgs[-2]["content"] if msgs[0]["role"] == "system" else msgs[0]["content"],
                     "messages": msgs, "constitution_hash": "c0ffee"})
    return write_dataset_dir(Path(out), "sft", rows, {"constitution_hash": "c0ffee", "rows": n})
