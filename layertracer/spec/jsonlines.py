"""One JSON Lines record, parsed the same way by the engine's task files and the API's uploads."""

from __future__ import annotations

import json
from typing import Any


class JsonLineError(ValueError):
    """A line that is not one JSON value; the message says why in a few words (no position dump)."""


def parse_json_line(line: str) -> Any:
    """The JSON value of ``line``, or JsonLineError: invalid JSON (with json's reason), or nested too
    deeply for Python's parser (a RecursionError, which must never escape as a crash)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise JsonLineError(f"invalid JSON ({exc.msg})") from None
    except RecursionError:
        raise JsonLineError("invalid JSON (nested too deeply)") from None
