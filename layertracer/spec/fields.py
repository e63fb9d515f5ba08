"""Reading a spec's declarations back: the default and the bounds of a numeric field, for the forms,
the CLI and the engine, so that none of them writes a limit of its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel


@dataclass(frozen=True)
class NumberBounds:
    """default (None: optional, no default); low/high: inclusive bounds (None: open); strict_low /
    strict_high: the bound itself is excluded (gt / lt); integer: whole numbers only."""

    default: Optional[float]
    low: Optional[float]
    high: Optional[float]
    integer: bool
    strict_low: bool = False
    strict_high: bool = False

    def admits(self, value: float) -> bool:
        """Whether ``value`` lies within the bounds (and is whole, for an integer field)."""
        if self.integer and value != int(value):
            return False
        if self.low is not None and (value <= self.low if self.strict_low else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.strict_high else value > self.high):
            return False
        return True


def number_bounds(model: type[BaseModel], name: str) -> NumberBounds:
    """The default and bounds a pydantic model declares for its numeric field ``name``."""
    field = model.model_fields[name]
    annotation = field.annotation
    if get_origin(annotation) is Union:  # Optional[int] -> int
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    low = high = None
    strict_low = strict_high = False
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Gt):
            low, strict_low = item.gt, True
        elif isinstance(item, annotated_types.Le):
            high = item.le
        elif isinstance(item, annotated_types.Lt):
            high, strict_high = item.lt, True
    default: Any = field.default if not field.is_required() else None
    return NumberBounds(default=default, low=low, high=high, integer=annotation is int,
                        strict_low=strict_low, strict_high=strict_high)


def defaults(model: type[BaseModel]) -> dict[str, Any]:
    """Every field's default (the required ones left out)."""
    return {name: field.get_default(call_default_factory=True) for name, field in model.model_fields.items()
            if not field.is_required()}


def validation_message(exc: Exception) -> str:
    """One line for a pydantic ValidationError: the first error's field and message."""
    errors = exc.errors() if hasattr(exc, "errors") else []
    if not errors:
        return " ".join(str(exc).split())
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"
