"""The report of a pipeline run: `RUN_DIR/report.html` (one offline file, figures embedded) and
`RUN_DIR/report.md` (figures as PNG files next to it).

    from cai.report import write_report
    write_report("runs/hf-recipe")        # also `cai report RUN_DIR`; `cai run` calls it at the end

`collect` reads the run directory into plain facts (and documents the files it reads, including the
`values.json` shape of an evaluation stage), `plots` draws the figures, `render` writes HTML and Markdown.
"""
from __future__ import annotations

import os
from pathlib import Path

from cai.report.collect import collect
from cai.report.plots import reward_vs_length, training_curves
from cai.report.render import render_html, render_md

__all__ = ["collect", "write_report"]


def write_report(run_dir: str | Path) -> dict[str, Path]:
    """Write report.html, report.md and its figures into `run_dir`; returns their paths."""
    run_dir = Path(run_dir)
    facts = collect(run_dir)
    figures: dict[str, bytes] = {}
    for t in facts["training"]:
        png = training_curves(f"{t['stage']} ({t['kind']})", t["metrics"])
        if png:
            figures[f"train:{t['stage']}"] = png
    png = reward_vs_length(facts["scatter"])
    if png:
        figures["scatter"] = png
    fig_dir = run_dir / "report_files"
    names = {}
    for k, png in figures.items():
        name = k.replace(":", "-") + ".png"
        _atomic(fig_dir / name, png)
        names[k] = f"report_files/{name}"
    html_path, md_path = run_dir / "report.html", run_dir / "report.md"
    _atomic(html_path, render_html(facts, figures).encode())
    _atomic(md_path, render_md(facts, names).encode())
    return {"html": html_path, "md": md_path}


def _atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
