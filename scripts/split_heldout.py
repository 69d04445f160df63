"""Split held-out evaluation prompts out of the shipped prompt sets, once, with a seed.

    python scripts/split_heldout.py            # rewrites data/{red_team,helpful}.jsonl and data/eval/

Harmful: 5 prompts per category of data/red_team.jsonl (10 categories -> 50). Benign: 20 edgy-looking
and 20 plain prompts of data/helpful.jsonl (-> 40), drawn per category in turn so every category is
represented. The held-out rows are *moved* (training files no longer contain them), so no config can
train on them by accident. Re-running on already split files is refused.
"""
from __future__ import annotations

import json
import random
import sys
from collections import defaultdict
from pathlib import Path

SEED = 14
DATA = Path(__file__).resolve().parents[1] / "data"


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def stratified(rows: list[dict], key, n: int, rng: random.Random) -> set[str]:
    """n ids drawn round-robin over the groups of `key` (groups in sorted order, members shuffled)."""
    groups = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r["id"])
    for g in groups.values():
        rng.shuffle(g)
    picked, names = [], sorted(groups)
    while len(picked) < n:
        for g in names:
            if groups[g] and len(picked) < n:
                picked.append(groups[g].pop())
    return set(picked)


def main() -> int:
    if (DATA / "eval").exists():
        print("data/eval already exists: the split is done once", file=sys.stderr)
        return 2
    rng = random.Random(SEED)
    harmful = read(DATA / "red_team.jsonl")
    held = stratified(harmful, lambda r: r["category"], 50, rng)
    write(DATA / "eval" / "harmful.jsonl", [r for r in harmful if r["id"] in held])
    write(DATA / "red_team.jsonl", [r for r in harmful if r["id"] not in held])
    benign = read(DATA / "helpful.jsonl")
    held = stratified([r for r in benign if r["edgy"]], lambda r: r["category"], 20, rng)
    held |= stratified([r for r in benign if not r["edgy"]], lambda r: r["category"], 20, rng)
    write(DATA / "eval" / "benign.jsonl", [r for r in benign if r["id"] in held])
    write(DATA / "helpful.jsonl", [r for r in benign if r["id"] not in held])
    return 0


if __name__ == "__main__":
    sys.exit(main())
