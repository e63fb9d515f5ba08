"""Before a trial or experiment starts: what each allocation trains (one strip per allocation, its
trainable share) and what the run costs (tokens; a time from a measured rate when this model has a
finished run, else no time, said plainly).

Tokens: steps x batch size x gradient accumulation x block size per trial (what the optimizer sees),
times seeds x allocations; the evaluations and the traces before and after come on top.
"""

from __future__ import annotations

from typing import Any, Optional

import plotly.graph_objects as go

from frontend.api_client import ApiClient, ApiError
from frontend.viz.common import FREEZE_COLOUR, TRAIN_COLOUR, base_layout, empty_figure
from frontend.viz.names import duration
from layertracer.spec.allocations import (
    PRESETS, TOGGLES, AllocationError, check_allocation, is_from_trace, preset_layers,
)
from layertracer.spec.ranges import RangeError, parse_ranges


def effective_toggles(allocation: str, toggles: list[str]) -> list[str]:
    """The toggles an allocation trains with: every one for ``full`` (the engine's default), else those
    checked (the form sends them for every allocation)."""
    return list(TOGGLES) if allocation == "full" else [t for t in TOGGLES if t in (toggles or [])]


def allocation_rows(info: Optional[dict], allocations: list[str], toggles: list[str]) -> list[dict]:
    """One row per allocation: ``label``, ``layers`` (None: decided by a trace, or not readable),
    ``trainable`` / ``total`` parameters and ``share`` (None when unknown), ``note``."""
    from frontend.run_form import count_trainable  # the picker's own count (one rule)

    L = int((info or {}).get("num_layers") or 0)
    rows = []
    for text in (a.strip() for a in allocations if a and a.strip()):
        row: dict[str, Any] = {"label": text, "layers": None, "trainable": None, "total": None, "share": None, "note": ""}
        try:
            check_allocation(text)
            if is_from_trace(text):
                row["note"] = "the trace's freeze plan decides"
            elif not L:
                row["note"] = "choose a model"
            else:
                layers = preset_layers(text, L) if text in PRESETS[:3] else parse_ranges(text, L)
                on = effective_toggles(text, toggles)
                trainable, total = count_trainable(info, layers, on)
                row.update(layers=layers, trainable=trainable, total=total, share=trainable / total if total else None,
                           note=", ".join(on))
        except (AllocationError, RangeError) as exc:
            row["note"] = str(exc)
        rows.append(row)
    return rows


def preview_figure(info: Optional[dict], rows: list[dict]) -> go.Figure:
    """Allocations x layers: blue trained, grey frozen, blank where the trace decides; the trainable
    share in each row's name."""
    L = int((info or {}).get("num_layers") or 0)
    if not L or not rows:
        return empty_figure("Choose a model and list allocations: what each one trains appears here.", height=140)
    names = [f"{r['label']} · {r['share']:.1%}" if r["share"] is not None else f"{r['label']} · ?" for r in rows]
    z = [[(1 if layer in set(r["layers"]) else 0) if r["layers"] is not None else None for layer in range(L)]
         for r in rows]
    hover = [[f"{r['label']} · layer {layer} · " + ("train" if cell == 1 else "freeze" if cell == 0 else r["note"])
              for layer, cell in enumerate(line)] for r, line in zip(rows, z)]
    fig = go.Figure(go.Heatmap(z=z, x=list(range(L)), y=names, zmin=0, zmax=1, showscale=False, xgap=2, ygap=4,
                               colorscale=[[0, FREEZE_COLOUR], [1, TRAIN_COLOUR]], hovertext=hover, hoverinfo="text"))
    base_layout(fig, title="What each allocation trains (blue) — its trainable share after the name",
                height=90 + 34 * len(rows))
    # names such as "0" or "0-3" are labels, not numbers: a category axis keeps each row
    fig.update_yaxes(type="category", autorange="reversed", fixedrange=True, title=None)
    fig.update_xaxes(title="layer", dtick=1 if L <= 40 else None, fixedrange=True)
    fig.update_layout(margin=dict(l=10, r=20, t=40, b=40))
    return fig


def measured_rate(api: ApiClient, model_id: Optional[str]) -> Optional[dict]:
    """The training rate of this model's latest finished trial or experiment: {tokens_per_s, run}
    (its results table's mean tokens/s over allocations), or None."""
    if not model_id:
        return None
    try:
        runs = api.experiments(status="succeeded", limit=50).get("data") or []
    except ApiError:
        return None
    for run in runs:
        if (run.get("model") or {}).get("id") != model_id:
            continue
        try:
            table = ((api.experiment(run["id"]).get("result") or {}).get("table")) or []
        except ApiError:
            continue
        rates = [float(r["tokens_per_s"]["mean"]) for r in table
                 if isinstance(r.get("tokens_per_s"), dict) and r["tokens_per_s"].get("mean")]
        if rates:
            return {"tokens_per_s": sum(rates) / len(rates), "run": run.get("name") or str(run["id"])[:8]}
    return None


def tokens(steps: Any, batch_size: Any, grad_accum: Any, block_size: Any, seeds: int, allocations: int) -> Optional[int]:
    """Training tokens of the whole run, or None when a number is missing."""
    try:
        per_trial = int(steps) * int(batch_size) * int(grad_accum) * int(block_size)
    except (TypeError, ValueError):
        return None
    return per_trial * max(seeds, 0) * max(allocations, 0)


def estimate_text(total: Optional[int], trials: int, rate: Optional[dict]) -> str:
    """One line: the tokens, and the training time at a measured rate (or why there is none)."""
    if total is None or trials <= 0:
        return "Cost: give steps, batch size, gradient accumulation, block size, seeds and allocations."
    line = f"Cost: {trials} trial{'s' if trials != 1 else ''}, {total:,} training tokens"
    if rate and rate.get("tokens_per_s"):
        seconds = total / float(rate["tokens_per_s"])
        return (f"{line}; about {duration(seconds)} of training at the {rate['tokens_per_s']:,.0f} tokens/s measured "
                f"in {rate['run']} (same model; rough: the rate moves with batch, sequence length and what trains), "
                "plus the evaluations before and after.")
    return f"{line}. No run of this model has finished yet, so no time estimate: the first one's tokens/s will give one."
