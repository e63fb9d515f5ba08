"""How sure a trace is of its particles and its plan: the thresholds and the wording, declared once.

The engine (``layertracer.uncertainty``) computes a bootstrap over prompts and stores it in the trace
result (``tasks[name].particle_bootstrap``, ``freeze_plan.stability``; docs/schemas.md); the CLI, the
API's summary and the dashboard read those stored numbers and word them through the functions here.
Torch-free and numpy-free, like the rest of ``layertracer.spec``.
"""

from __future__ import annotations

from typing import Any, Optional

# A task's particle counts as stable when at least this share of the resamples finds the same layer.
PARTICLE_STABLE_SHARE = 0.8
# Prompts per task below which the particle is flagged whatever the resamples say (a bootstrap of a
# handful of prompts underestimates its own spread).
PARTICLE_MIN_PROMPTS = 20
# A plan counts as stable when at least this share of the resamples gives it (the dashboard's badge).
PLAN_STABLE_SHARE = 0.8
# The most frequent other plans listed beside the plan's own share.
PLAN_ALTERNATIVES = 3


def layer_text(layer: Optional[int]) -> str:
    """A particle layer as text: the layer number, or ``none`` (the curve never rises enough)."""
    return "none" if layer is None else str(layer)


def particle_warning(task: str, prompts: int, particle: Optional[int], agreement: float, resamples: int) -> Optional[str]:
    """The one-line warning for a task whose particle rests on too little, or None when it is stable.

    prompts: P, the task's prompts; agreement: share (0-1) of ``resamples`` bootstrap resamples of
    those prompts whose particle equals ``particle``, the particle of all of them."""
    few = prompts < PARTICLE_MIN_PROMPTS
    if agreement >= PARTICLE_STABLE_SHARE and not few:
        return None
    why = (f"only {prompts} prompts (at least {PARTICLE_MIN_PROMPTS} advised)" if few
           else f"{prompts} prompts")
    found = "none found" if particle is None else f"layer {particle}"
    advice = ("trace more prompts of this task" if few
              else "read its interval rather than the single layer, or trace more prompts of this task")
    return (f"{task}: the particle ({found}) rests on {why}; it holds in {agreement:.0%} of "
            f"{resamples} resamples (stable from {PARTICLE_STABLE_SHARE:.0%}): {advice}.")


def interval_text(bootstrap: Optional[dict[str, Any]]) -> str:
    """``3-5`` (the particle's bootstrap interval), ``4`` when both ends agree, ``3 to none`` when the
    upper end has no particle, ``—`` when unknown."""
    if not bootstrap or not bootstrap.get("interval"):
        return "—"
    low, high = (layer_text(v) for v in bootstrap["interval"])
    return low if low == high else f"{low} to {high}" if "none" in (low, high) else f"{low}-{high}"


def plan_stability_text(plan: Optional[dict[str, Any]]) -> Optional[str]:
    """``this plan in 62% of 1000 resamples; next: train 1 / freeze 0,2-7 (21%), ...`` or None for a
    plan stored without its stability (a trace written before the bootstrap existed)."""
    stability = (plan or {}).get("stability") or {}
    if not stability:
        return None
    text = f"this plan in {stability['share']:.0%} of {stability['resamples']} resamples of the prompts"
    others = [f"train {alt['train_ranges'] or 'nothing'} / freeze {alt['freeze_ranges'] or 'nothing'} ({alt['share']:.0%})"
              for alt in stability.get("alternatives") or []]
    return text + ("; next: " + ", ".join(others) if others else "; no other plan came up")


def trainable_share(plan: Optional[dict[str, Any]]) -> Optional[float]:
    """Share (0-1) of the blocks the plan trains, or None without a plan."""
    if not plan or not plan.get("num_layers"):
        return None
    return len(plan.get("train_layers") or []) / int(plan["num_layers"])
