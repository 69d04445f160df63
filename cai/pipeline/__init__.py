"""Pipelines: stages declared in one YAML, run in order, each output keyed by the hash of its inputs.

    from cai.pipeline import load_pipeline, plan, run
    p = load_pipeline("configs/hf-recipe.yaml", ["vars.model=smollm2-135m"])
    run(p)                      # skips finished stages; writes RUN_DIR/pipeline.json

`registry` (stage kinds as lazy "module:attr" entry points; each stage's config dataclass lives next to
the stage), `spec` (YAML -> resolved stages and keys), `run` (plan, execute, markers), `child` (a
stage in its own process), `cli` (`cai run`). The report is `cai.report`.
"""
from cai.pipeline.run import plan, print_plan, run
from cai.pipeline.spec import Pipeline, Stage, load_pipeline

__all__ = ["Pipeline", "Stage", "load_pipeline", "plan", "print_plan", "run"]
