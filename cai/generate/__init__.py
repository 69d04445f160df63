"""`generate`: answer a prompt set with a model (the `responses` config).

`config` (`GenerateStage`), `run` (`generate()` and `run_generate()`), `cli` (`cai generate`).
"""
from cai.generate.config import GenerateStage
from cai.generate.run import generate, run_generate

__all__ = ["GenerateStage", "generate", "run_generate"]
