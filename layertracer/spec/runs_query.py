"""The runs table's query grammar, declared once: what the list routes (``GET /api/v1/traces`` and
``/experiments``) take as ``sort``, ``kind`` and ``limit``, and what the dashboard's runs page puts in
its URL (``/?kind=&type=&status=&q=&model=&tag=&sort=&page=&size=``).

``sort`` is one field name, optionally prefixed by ``-`` for descending (``-delta_retention``); rows
whose value is missing (a run without a result) come last in both directions, and ties are broken by
the newest first, then by id. Text fields (name, model, best allocation) sort case-insensitively for
ASCII letters, by code point otherwise (the same order on SQLite and Postgres).
"""

from __future__ import annotations

from dataclasses import dataclass

from layertracer.errors import LayerTracerError

# Fields a trace list sorts by: created (time), name, status (the job's), model (its name), plan (the
# freeze plan's share of layers trained), vulnerable_layer (the primary perturbation's, 0-based).
TRACE_SORT_FIELDS = ("created", "name", "status", "model", "plan", "vulnerable_layer")
# Fields a trial/experiment list sorts by; the metric ones are defined in layertracer/spec/run_metrics.py.
EXPERIMENT_SORT_FIELDS = ("created", "name", "status", "model", "kind", "best_allocation",
                          "delta_retention", "delta_acquisition")
SORT_FIELDS = {"traces": TRACE_SORT_FIELDS, "experiments": EXPERIMENT_SORT_FIELDS}
DEFAULT_SORT = "-created"


def sort_pattern(fields: tuple[str, ...]) -> str:
    """The JSON Schema pattern of a sort value over ``fields`` (the API's schema says it exactly; empty
    means the default, as ``parse_sort`` reads it)."""
    return r"^(-?(" + "|".join(fields) + r"))?$"


SORT_PATTERN = {kind: sort_pattern(fields) for kind, fields in SORT_FIELDS.items()}
EXPERIMENT_KINDS = ("trial", "experiment")
PAGE_SIZES = (25, 50, 100, 200)  # what the page offers; the API takes any limit in [1, MAX_PAGE_SIZE]
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


class SortError(LayerTracerError, ValueError):
    """A sort value that names no field of the list; the message is one line."""


@dataclass(frozen=True)
class Sort:
    """One sort: ``field`` (one of the list's fields) and its direction."""

    field: str
    descending: bool = False

    @property
    def text(self) -> str:
        """The sort as the URL and the API write it: ``-field`` or ``field``."""
        return ("-" if self.descending else "") + self.field

    def toggled(self, field: str) -> "Sort":
        """The sort after a click on ``field``'s header: the other direction of the same field, else
        that field with its first direction (descending for numbers and times, ascending for text)."""
        if field == self.field:
            return Sort(field, not self.descending)
        return Sort(field, field not in TEXT_FIELDS)


TEXT_FIELDS = frozenset({"name", "status", "model", "kind", "best_allocation"})


def parse_sort(text: str | None, fields: tuple[str, ...]) -> Sort:
    """``"-delta_retention"`` -> Sort("delta_retention", True); empty -> the default (newest first).
    Raises SortError for a field not in ``fields``."""
    text = text or DEFAULT_SORT  # exactly as written: the schema's pattern (sort_pattern) allows no spaces
    descending = text.startswith("-")
    field = text[1:] if descending else text
    if field not in fields:
        raise SortError(f"bad sort {text!r}: use one of {', '.join(fields)} (a leading - sorts descending)")
    return Sort(field, descending)


__all__ = ["DEFAULT_PAGE_SIZE", "DEFAULT_SORT", "EXPERIMENT_KINDS", "EXPERIMENT_SORT_FIELDS", "MAX_PAGE_SIZE",
           "PAGE_SIZES", "SORT_FIELDS", "SORT_PATTERN", "Sort", "SortError", "TEXT_FIELDS", "TRACE_SORT_FIELDS",
           "parse_sort", "sort_pattern"]
