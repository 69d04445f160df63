"""Field types shared by the constitution schema (`schema.py`) and its checks (`checks.py`)."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, StringConstraints

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=100)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=20_000)]


def _nonblank(v: Any) -> Any:
    if isinstance(v, str) and not v.strip():
        raise ValueError("must not be empty or blank")
    return v


NonBlank = Annotated[Text, BeforeValidator(_nonblank)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
