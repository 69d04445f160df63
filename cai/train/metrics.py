"""Training metrics: every step to `OUTPUT/metrics.jsonl` (and TensorBoard when installed) with a progress
bar, and the one-line data report each trainer prints before its first step."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


class Metrics:
    """Every step to `OUTPUT/metrics.jsonl` (and TensorBoard when installed), with a tqdm bar and ETA.
    Only the main process writes. On resume, lines past the resumed step are dropped."""

    def __init__(self, acc, output_dir: str | Path, total: int, start: int, progress: bool, desc: str):
        self.main = acc.is_main_process
        self.path = Path(output_dir) / "metrics.jsonl"
        self.tb = self.bar = None
        if not self.main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            keep = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= start]
            self.path.write_text("".join(ln + "\n" for ln in keep))
        self.fh = open(self.path, "a")  # noqa: SIM115 - held for the run, closed in close()
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))
        except Exception:  # noqa: BLE001 - tensorboard is optional
            self.tb = None
        if progress:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True)

    def log(self, step: int, values: dict) -> None:
        if not self.main:
            return
        rec = {"step": step, **{k: (round(v, 8) if isinstance(v, float) else v) for k, v in values.items()}}
        self.fh.write(json.dumps(rec) + "\n")
        self.fh.flush()
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)
        if self.bar is not None and not k_is_eval(values):
            self.bar.update(1)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k in ("loss", "accuracy")})

    def close(self) -> None:
        if not self.main:
            return
        self.fh.close()
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.close()


def k_is_eval(values: dict) -> bool:
    return any(k.startswith("eval/") for k in values)


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def report_data(acc, stage: str, prep) -> None:
    """One line on stderr: rows used, and how many were truncated or dropped at max_length (as in TRL)."""
    if acc.is_main_process:
        c = prep.counts
        print(f"cai train {stage}: {len(prep.train)} training and {len(prep.eval)} held-out examples; "
              f"{c.truncated} of {c.rows} training rows over max_length (truncated or dropped as in TRL), "
              f"{c.dropped} dropped", file=sys.stderr)


def describe_examples(counts: Any) -> dict:
    return counts.as_dict() if hasattr(counts, "as_dict") else dict(counts)

