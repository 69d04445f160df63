"""Field types shared by the constitution schema (`schema.py`) and its checks (`checks.py`)."""
from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, StringConstraints

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=100)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=20_000)]


def _nonblank(v: Any) -> Any:
    if isinstance(v, str) and not v.strip():
        raise ValueError("must not be empty or blank")
    return v


NonBlank = Annotated[Text, BeforeValidator(_nonblank)]


def _positive(v: float) -> float:
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"weight must be a positive number, got {v}")
    return float(v)


Weight = Annotated[float, AfterValidator(_positive)]
"""A positive, finite relative weight."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
