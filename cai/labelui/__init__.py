"""Human feedback: a labelling page for comparing responses, its SQLite store, and the export that merges
human and AI labels into a training dataset.

`pairs` (what is shown: pairs and critique traces of a dataset), `store` (SQLite, WAL, append-only labels),
`votes` (labels -> per-pair votes), `server` (`cai label-ui`), `export` (`cai labels export`), `cli`.
Agreement statistics live in `cai.evaluate.agreement` (`cai eval agreement`).
"""
from cai.labelui.cli import register

__all__ = ["register"]
