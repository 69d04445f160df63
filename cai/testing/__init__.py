"""Test and benchmark helpers: a tiny random Llama with SmolLM2's tokenizer (`models`) and small synthetic
SFT and preference datasets in cai's layout (`datasets`)."""
from cai.testing.datasets import make_prefs_dataset, make_sft_dataset
from cai.testing.models import TINY_NAME, make_tiny_model

__all__ = ["TINY_NAME", "make_prefs_dataset", "make_sft_dataset", "make_tiny_model"]
