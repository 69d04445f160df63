"""RLCD (`cai contrast`): preference pairs labelled by construction from a positive and a negative
framing of each prompt. Entry point for pipelines: `cai.contrast:contrast(ContrastConfig)`."""
from cai.contrast.config import ContrastConfig
from cai.contrast.run import contrast, similarity

__all__ = ["ContrastConfig", "contrast", "similarity"]
