"""Building blocks of the spec schema: strict numbers whose errors state the valid range."""

from __future__ import annotations

import math
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt


def bounded(
    lower: float | None,
    upper: float | None,
    *,
    lower_open: bool = False,
    upper_open: bool = False,
    integer: bool = False,
    strict: bool = True,
) -> Any:
    """Build a number type whose error message states the whole valid range.

    pydantic's own `gt`/`le` messages name one bound only. A researcher fixing a spec
    wants both, so the check is done here and the bounds are copied into the JSON schema.
    With strict (the default for specs) a string or a boolean is not a number, and an
    integer setting takes no fractional value; query parameters, which arrive as
    strings, use strict=False.
    """
    low_sign = "<" if lower_open else "<="
    high_sign = "<" if upper_open else "<="
    parts = []
    if lower is not None:
        parts.append(f"{_format_bound(lower)} {low_sign}")
    parts.append("value")
    if upper is not None:
        parts.append(f"{high_sign} {_format_bound(upper)}")
    valid = " ".join(parts)

    def check(value: float) -> float:
        if not integer and not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number; valid range is {valid}")
        too_low = lower is not None and (value <= lower if lower_open else value < lower)
        too_high = upper is not None and (value >= upper if upper_open else value > upper)
        if too_low or too_high:
            raise ValueError(f"{value!r} is out of range; valid range is {valid}")
        return value

    schema: dict[str, float] = {}
    if lower is not None:
        schema["exclusiveMinimum" if lower_open else "minimum"] = lower
    if upper is not None:
        schema["exclusiveMaximum" if upper_open else "maximum"] = upper
    if strict:
        base = StrictInt if integer else StrictFloat
    else:
        base = int if integer else float
    return Annotated[base, AfterValidator(check), Field(json_schema_extra=schema)]


def _format_bound(bound: float) -> str:
    """Write a bound as an integer when it is one (4294967295, not 4.29497e+09)."""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def check_label(label: str | None) -> str | None:
    """Reject control and format characters, which would break tables and logs."""
    if label is None:
        return None
    for position, char in enumerate(label):
        if unicodedata.category(char) in ("Cc", "Cf"):
            raise ValueError(f"label contains the control character U+{ord(char):04X} at "
                             f"position {position}; use printable text only")
    return label


class StrictModel(BaseModel):
    """Base for spec parts: unknown keys are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
