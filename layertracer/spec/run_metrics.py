"""The runs table's metric columns, derived from a stored result by one rule each (the API stores them
as columns on the run when a result is stored, and migration 0008 backfills older rows from the same
functions).

A trace (``trace_metrics``, from its summary, ``layertracer.spec.views.trace_summary``):

- ``plan``: the freeze plan's trained layer ranges (``freeze_plan.train_ranges``, e.g. ``"0-3"``);
- ``plan_share``: the share of layers it trains, ``len(train_layers) / num_layers`` in [0, 1] (what
  the plan column sorts by);
- ``vulnerable_layer``: the layer (0-based) with the largest mean JS divergence under the primary
  perturbation.

A trial or experiment (``experiment_metrics``, from the runner's result: ``spec.benchmarks``,
``table`` and ``statistics``, docs/schemas.md):

- the **retention benchmark** is the run's first benchmark (in ``spec.benchmarks`` order) and the
  **acquisition benchmark** its second: the demo's and the README's order, old knowledge first
  (``-b ceval:W/old-facts,ceval:W/new-facts``). A run with one benchmark has retention only;
  benchmarks after the second are not in these columns;
- ``delta_retention`` / ``delta_acquisition``: the change in accuracy (after training minus the base
  model, a fraction in [-1, 1]) on that benchmark, averaged over the allocation's seeds (the results
  table's ``change[benchmark].mean``), of the best allocation;
- ``best_allocation`` (its allocation text) and ``best_label`` (the table's label): the allocation, the
  base model excluded, with the largest mean of those two changes (of the one there is, for a run with
  one benchmark); the first in the table on a tie. A trial's is its one allocation;
- ``retention_significant`` / ``acquisition_significant``: whether that allocation's difference from
  the base model on the benchmark is significant (``layertracer.spec.significance.verdict``: every
  test's Holm-adjusted p below 0.05); null when the result has no such comparison.

Every value is null when the result lacks what it is computed from (a run still going, an old result).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

from layertracer.spec.significance import verdict

BASE = "base"  # the runner's name of the base model's row (layertracer/experiments/runner.py)
TRACE_METRICS = ("plan", "plan_share", "vulnerable_layer")
EXPERIMENT_METRICS = ("best_allocation", "best_label", "delta_retention", "delta_acquisition",
                      "retention_significant", "acquisition_significant")


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def trace_metrics(summary: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"plan": str|None, "plan_share": float|None, "vulnerable_layer": int|None}`` of a trace summary."""
    summary = summary or {}
    plan = summary.get("freeze_plan") or {}
    layers = plan.get("num_layers") or summary.get("num_layers")
    train = plan.get("train_layers")
    share = len(train) / layers if isinstance(train, list) and isinstance(layers, int) and layers > 0 else None
    vulnerable = summary.get("vulnerable_layer")
    return {
        "plan": plan.get("train_ranges") if isinstance(plan.get("train_ranges"), str) else None,
        "plan_share": share,
        "vulnerable_layer": vulnerable if isinstance(vulnerable, int) and not isinstance(vulnerable, bool) else None,
    }


def benchmark_roles(benchmarks: Sequence[str]) -> tuple[Optional[str], Optional[str]]:
    """(the retention benchmark, the acquisition benchmark) of a run's benchmarks, in order; None for
    a role the run has no benchmark for."""
    benchmarks = list(benchmarks or [])
    return (benchmarks[0] if benchmarks else None), (benchmarks[1] if len(benchmarks) > 1 else None)


def _significant(result: Mapping[str, Any], bench: Optional[str], allocation: str) -> Optional[bool]:
    if bench is None:
        return None
    comparisons = ((result.get("statistics") or {}).get(bench) or {}).get("comparisons") or []
    for comparison in comparisons:
        if {comparison.get("a"), comparison.get("b")} == {allocation, BASE}:
            return verdict(comparison)
    return None


def experiment_metrics(result: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The metric columns of a trial or experiment from the runner's result (module docstring)."""
    out: dict[str, Any] = {key: None for key in EXPERIMENT_METRICS}
    if not result:
        return out
    table = [row for row in result.get("table") or [] if isinstance(row, Mapping)]
    benchmarks = (result.get("spec") or {}).get("benchmarks")
    if not benchmarks:  # an older or hand-made result: the table's own order
        benchmarks = list(next((row.get("change") or {} for row in table if row.get("allocation") != BASE), {}))
    retention, acquisition = benchmark_roles(benchmarks)

    def change(row: Mapping[str, Any], bench: Optional[str]) -> Optional[float]:
        if bench is None:
            return None
        return _number(((row.get("change") or {}).get(bench) or {}).get("mean"))

    scored = []
    for row in table:
        if row.get("allocation") in (None, BASE):
            continue
        changes = [c for c in (change(row, retention), change(row, acquisition)) if c is not None]
        if changes:
            scored.append((sum(changes) / len(changes), row))
    if not scored:
        return out
    best = max(scored, key=lambda item: item[0])[1]  # max keeps the first of equal scores
    allocation = str(best["allocation"])
    out.update(
        best_allocation=allocation,
        best_label=str(best.get("label") or allocation),
        delta_retention=change(best, retention),
        delta_acquisition=change(best, acquisition),
        retention_significant=_significant(result, retention, allocation),
        acquisition_significant=_significant(result, acquisition, allocation),
    )
    return out


__all__ = ["BASE", "EXPERIMENT_METRICS", "TRACE_METRICS", "benchmark_roles", "experiment_metrics", "trace_metrics"]
