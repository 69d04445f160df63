"""Constitutions: the YAML files that state a model's values, and what later stages read from them.

`load_constitution(name_or_path)` validates and resolves a constitution (after `extends`);
`PrincipleSampler` draws principles deterministically per (seed, key). Templates are rendered in
`cai.constitution.templates`; the chat messages built from them in `cai.prompts`.
"""
from cai.constitution.loader import available, constitutions_dir, load_constitution
from cai.constitution.sampling import PrincipleSampler
from cai.constitution.schema import (
                                     ComparisonExample,
                                     ComparisonPrinciple,
                                     Constitution,
                                     CritiquePrinciple,
                                     FewShot,
                                     Scoring,
                                     Templates,
)

__all__ = [
                                     "ComparisonExample",
                                     "ComparisonPrinciple",
                                     "Constitution",
                                     "CritiquePrinciple",
                                     "FewShot",
                                     "PrincipleSampler",
                                     "Scoring",
                                     "Templates",
                                     "available",
                                     "constitutions_dir",
                                     "load_constitution",
]
