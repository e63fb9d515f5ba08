"""Figures of one trace, built from the engine's TraceResult JSON (``result.to_dict()`` or
``GET /api/v1/traces/{id}/result``; the schema is in docs/schemas.md, "OUT.json"). Pure functions: data
in, a plotly Figure out, usable from a notebook::

    from frontend.viz import trace as tv
    tv.task_heatmap(result.to_dict(), metric="prob").show()

Every figure but the layers x prompts heatmap also draws from the trace *overview*
(``GET /api/v1/traces/{id}/overview``: no per-prompt arrays, per-task means and top-1 counts instead);
that one needs its task's per-prompt arrays (``GET /api/v1/traces/{id}/tasks/{task}``, see ``with_task``).

Shapes: L layers, T tasks, P prompts of a task, k top tokens.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional, Sequence

import plotly.graph_objects as go

from layertracer.spec.views import log_rank, mean_log_rank, topk_accuracy

from frontend.viz.common import (
    OKABE_ITO,
    PARTICLE_COLOUR,
    SEQUENTIAL,
    SIMILARITY,
    TRAIN_COLOUR,
    FREEZE_COLOUR,
    VULNERABLE_COLOUR,
    METRICS,
    KIND_NAME,
    COLORBAR_MARGIN,
    base_layout,
    depth_axis_margin,
    text_margin,
    depth_axis,
    TITLE_MARGIN,
    depth_title,
    half_step,
    title_length_px,
    empty_figure,
    layer_position,
    layer_positions,
    layer_window,
)

Result = dict[str, Any]
PROMPT_HOVER_TOP = 5


def as_dict(result: Any) -> Result:
    """The result as JSON data: a dict as it is, or an engine TraceResult through its ``to_dict()``."""
    return result.to_dict() if hasattr(result, "to_dict") else result


def num_layers(result: Result) -> int:
    return int(result["num_layers"])


def task_names(result: Result) -> list[str]:
    return list(result.get("tasks", {}))


def perturbation_names(result: Result) -> list[str]:
    return list(result.get("sensitivities") or {})


def with_task(overview: Result, task: Optional[str], task_data: Optional[dict]) -> Result:
    """The overview with one task's per-prompt arrays merged in (a shallow copy; the overview is untouched)."""
    if not task or task_data is None or task not in overview.get("tasks", {}):
        return overview
    return {**overview, "tasks": {**overview["tasks"], task: {**overview["tasks"][task], **task_data}}}


def has_prompts(task: dict) -> bool:
    """Whether a task carries its per-prompt arrays (a full result's task, not an overview's)."""
    return "target_prob" in task


def _mean_columns(rows: Sequence[Sequence[Optional[float]]], width: int) -> list[Optional[float]]:
    """Column means of a [P][L] matrix, skipping nulls: (L,)."""
    sums = [0.0] * width
    counts = [0] * width
    for row in rows:
        for l, v in enumerate(row):
            if v is not None:
                sums[l] += v
                counts[l] += 1
    return [sums[l] / counts[l] if counts[l] else None for l in range(width)]


# The metrics the page offers, in order: the mean rank saturates on a large vocabulary, so the page shows
# the log rank and the top-k accuracies in its place ("rank" stays readable for old links and notebooks).
PAGE_METRICS = ("prob", "logrank", "top1", "top10", "entropy", "kl")
_TOPK = {"top1": 1, "top10": 10}


def task_metric_curve(task: dict, metric: str, L: int) -> list[Optional[float]]:
    """(L,) the task's curve over prompts (METRICS): mean target probability, mean rank, mean
    log10(1 + rank), top-k accuracy, mean entropy or mean KL to the final layer. An overview's task
    carries these means; a full task's are computed from its per-prompt arrays."""
    if metric == "prob":
        return list(task["mean_target_prob"])
    if metric in _TOPK:
        stored = (task.get("topk_accuracy") or {}).get(str(_TOPK[metric]))
        return list(stored) if stored is not None else topk_accuracy(task.get("target_rank"), L)[str(_TOPK[metric])]
    mean_key = {"rank": "mean_target_rank", "logrank": "mean_log_rank", "entropy": "mean_entropy",
                "kl": "mean_kl_to_final"}[metric]
    if task.get(mean_key) is not None:  # an overview's task
        return list(task[mean_key])
    if metric == "logrank":
        return mean_log_rank(task.get("target_rank"), L)
    return _mean_columns(prompt_matrix(task, metric), L)


def prompt_matrix(task: dict, metric: str) -> list[list[Optional[float]]]:
    """[P][L] the metric per prompt per layer (top-k: 1 where the answer ranks below k, else 0; KL: None
    throughout for a result written before the engine stored it)."""
    if metric == "logrank":
        return [[log_rank(r) for r in row] for row in task["target_rank"]]
    if metric in _TOPK:
        return [[None if r is None else float(r < _TOPK[metric]) for r in row] for row in task["target_rank"]]
    if metric == "kl" and task.get("kl_to_final") is None:
        return [[None] * len(row) for row in task["target_prob"]]
    key = {"prob": "target_prob", "rank": "target_rank", "entropy": "entropy", "kl": "kl_to_final"}[metric]
    return task[key]


def _top1_summary(task: dict, L: int, limit: int = 3) -> list[str]:
    """(L,) hover text: the most frequent top-1 lens tokens over the task's prompts at each layer."""
    if task.get("top1_tokens") is not None:  # an overview's task: the counts are precomputed
        total = task.get("num_prompts") or 1
        return [", ".join(f"{tok!r} {100 * n / total:.0f}%" for tok, n in layer[:limit]) or "—"
                for layer in task["top1_tokens"][:L]] + ["—"] * max(0, L - len(task["top1_tokens"]))
    out = []
    tops = task.get("top_tokens") or []
    total = len(tops) or 1
    for l in range(L):
        counts = Counter(row[l][0] for row in tops if row and len(row) > l and row[l])
        parts = [f"{tok!r} {100 * n / total:.0f}%" for tok, n in counts.most_common(limit)]
        out.append(", ".join(parts) if parts else "—")
    return out


def _colour_axis(metric: str) -> dict:
    # Bright = "the model knows the answer" for every metric: low rank and low entropy are bright.
    label, _ = METRICS[metric]
    colour = dict(colorscale=SEQUENTIAL, reversescale=metric in ("rank", "logrank", "entropy", "kl"),
                  colorbar=dict(title=dict(text=label, side="right"), thickness=14))
    if metric in ("prob", *_TOPK):
        colour.update(zmin=0.0, zmax=1.0)
    return colour


def task_heatmap(result: Result, metric: str = "prob", *, normalized: bool = False,
                 window: Optional[Sequence[int]] = None) -> go.Figure:
    """Layers x tasks heatmap of the task's mean curve (target probability by default), with each task's
    particle marked (◆) and the most frequent top-1 lens tokens on hover."""
    result = as_dict(result)
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    L = num_layers(result)
    names = task_names(result)
    if not names:
        return empty_figure("This trace has no tasks.")
    xs = layer_positions(L, normalized)
    z, hover = [], []
    for name in names:
        task = result["tasks"][name]
        z.append(task_metric_curve(task, metric, L))
        hover.append(_top1_summary(task, L))
    label, _ = METRICS[metric]
    fig = go.Figure(go.Heatmap(
        z=z, x=xs, y=names, customdata=hover, **_colour_axis(metric),
        hovertemplate="task %{y}<br>" + ("depth %{x:.2f}" if normalized else "layer %{x}")
        + f"<br>{label} %{{z:.3f}}<br>top-1 tokens: %{{customdata}}<extra></extra>",
    ))
    px, py, ptext = [], [], []
    for name in names:
        layer = result["tasks"][name].get("task_particle")
        if layer is not None:
            px.append(layer_position(layer, L, normalized))
            py.append(name)
            ptext.append(f"task particle of {name}: layer {layer}")
    fig.add_trace(go.Scatter(
        x=px, y=py, mode="markers", name="task particle", text=ptext, hovertemplate="%{text}<extra></extra>",
        marker=dict(symbol="diamond", size=13, color=PARTICLE_COLOUR, line=dict(color="#000", width=2)),
    ))
    base_layout(fig, title=f"Mean {label} per task and layer", height=max(300, 110 + 34 * len(names)))
    depth_axis(fig, L, result.get("block_kinds") or [], normalized, window)
    fig.update_yaxes(title_text="task", autorange="reversed", type="category")
    fig.update_layout(legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"),
                      margin=dict(l=text_margin(names), r=COLORBAR_MARGIN, b=depth_axis_margin(result.get("block_kinds"))))
    return fig


def depth_lines(result: Result, metric: str = "prob", *, normalized: bool = False,
                window: Optional[Sequence[int]] = None) -> go.Figure:
    """The lens papers' figure: the task's mean curve (target probability by default, any of METRICS)
    against depth, one line per task, each task's particle marked (◆) on its line."""
    result = as_dict(result)
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    L = num_layers(result)
    names = task_names(result)
    if not names:
        return empty_figure("This trace has no tasks.")
    xs = layer_positions(L, normalized)
    label, _ = METRICS[metric]
    fig = go.Figure()
    px, py, ptext = [], [], []
    for index, name in enumerate(names):
        task = result["tasks"][name]
        curve = task_metric_curve(task, metric, L)
        colour = OKABE_ITO[index % len(OKABE_ITO)]
        fig.add_trace(go.Scatter(
            x=xs, y=curve, mode="lines+markers", name=name, line=dict(color=colour, width=2.5), marker=dict(size=5),
            hovertemplate=f"{name}<br>" + ("depth %{x:.2f}" if normalized else "layer %{x}") + f"<br>{label} %{{y:.3f}}<extra></extra>",
        ))
        layer = task.get("task_particle")
        if layer is not None and layer < len(curve) and curve[layer] is not None:
            px.append(xs[layer])
            py.append(curve[layer])
            ptext.append(f"task particle of {name}: layer {layer}")
    if px:
        fig.add_trace(go.Scatter(
            x=px, y=py, mode="markers", name="task particle", text=ptext, hovertemplate="%{text}<extra></extra>",
            marker=dict(symbol="diamond", size=12, color=PARTICLE_COLOUR, line=dict(color="#000", width=2)),
        ))
    base_layout(fig, title=f"Mean {label} against depth, per task", height=400)
    depth_axis(fig, L, result.get("block_kinds") or [], normalized, window)
    fig.update_yaxes(title_text=label, **(dict(range=[0, 1.02]) if metric in ("prob", *_TOPK) else dict(rangemode="tozero")))
    fig.update_layout(legend=dict(orientation="h", y=-0.25, x=0),
                      margin=dict(l=85, b=65 + depth_axis_margin(result.get("block_kinds"))))
    return fig


def _short(text: str, width: int = 48) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else "…" + text[-(width - 1):]


def prompt_heatmap(result: Result, task: str, metric: str = "prob", *, normalized: bool = False,
                   window: Optional[Sequence[int]] = None) -> go.Figure:
    """Layers x prompts heatmap for one task, each prompt's particle marked, the top-k lens tokens with
    their probabilities on hover."""
    result = as_dict(result)
    if task not in result.get("tasks", {}):
        return empty_figure(f"No task named {task!r} in this trace.")
    L = num_layers(result)
    data = result["tasks"][task]
    if not has_prompts(data):
        return empty_figure(f"The prompts of task {task} are not loaded (an overview has no per-prompt arrays).")
    matrix = prompt_matrix(data, metric)
    P = len(matrix)
    if P == 0:
        return empty_figure(f"Task {task} has no prompts.")
    xs = layer_positions(L, normalized)
    # Each row's category carries the prompt and its target once (the hover shows it); the axis shows
    # only "#i → target". The cells carry just their top-k tokens: a per-cell copy of the prompt made
    # the figure 3x larger for a 200-prompt task.
    labels = [f"#{i} → {_short(t, 16)}" for i, t in enumerate(data["targets"])]
    rows = [f"#{i} {_short(data['prompts'][i])} → target {data['target_tokens'][i]!r}" for i in range(P)]
    tops, probs = data.get("top_tokens") or [], data.get("top_probs") or []
    hover = []
    for i in range(P):
        row_tokens = tops[i] if i < len(tops) else []
        row_probs = probs[i] if i < len(probs) else []
        cells = []
        for l in range(L):
            toks = row_tokens[l][:PROMPT_HOVER_TOP] if l < len(row_tokens) else []
            ps = row_probs[l][:PROMPT_HOVER_TOP] if l < len(row_probs) else []
            cells.append(", ".join(f"{t!r} {p:.2f}" for t, p in zip(toks, ps)))
        hover.append(cells)
    label, _ = METRICS[metric]
    fig = go.Figure(go.Heatmap(
        z=matrix, x=xs, y=rows, customdata=hover, **_colour_axis(metric),
        hovertemplate="%{y}<br>" + ("depth %{x:.2f}" if normalized else "layer %{x}")
        + f" · {label} %{{z:.3f}}<br>top: %{{customdata}}<extra></extra>",
    ))
    particles = data.get("prompt_particles") or []
    px = [layer_position(p, L, normalized) for p in particles if p is not None]
    py = [rows[i] for i, p in enumerate(particles) if p is not None]
    fig.add_trace(go.Scatter(
        x=px, y=py, mode="markers", name="prompt particle", hovertemplate="particle: %{x}<extra></extra>",
        marker=dict(symbol="diamond", size=8 if P > 60 else 10, color=PARTICLE_COLOUR, line=dict(color="#000", width=1.5)),
    ))
    base_layout(fig, title=f"{label} per prompt and layer — task {task} ({P} prompts)",
                height=max(320, min(900, 110 + 14 * P)))
    depth_axis(fig, L, result.get("block_kinds") or [], normalized, window)
    fig.update_yaxes(title_text="prompt (# → target)", autorange="reversed", type="category",
                     showticklabels=P <= 60, **(dict(tickmode="array", tickvals=rows, ticktext=labels) if P <= 60 else {}))
    fig.update_layout(legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"),
                      margin=dict(l=text_margin(labels) if P <= 60 else 70, r=COLORBAR_MARGIN,
                                  b=depth_axis_margin(result.get("block_kinds"))))
    return fig


def position_grid(result: Result, *, normalized: bool = False, last: int = 24, colour: str = "top1",
                  window: Optional[Sequence[int]] = None) -> go.Figure:
    """The logit lens of one prompt: layers x token positions, coloured by the top-1 probability (or
    the target's probability with ``colour="target"``), each cell annotated with its top-1 token.
    Shows the last ``last`` positions (the answer position is the last one) and the layers of ``window``."""
    result = as_dict(result)
    view = result.get("position_view")
    if not view:
        return empty_figure("This trace has no per-position view (it was run with --no-position-view).")
    title = f"Logit lens by position — {view.get('task')} prompt #{view.get('prompt_index')}, target {view.get('target_token')!r}"
    return lens_grid(view, num_layers(result), title=title, normalized=normalized, last=last, colour=colour,
                     window=window)


# The live lens shows the last this many positions of a prompt by default: two grids side by side
# leave about 25 px a column at 16, the least that shows a short token in its cell (the page's
# "positions shown" field asks for more, up to the spec's LENS_MAX_TOKENS).
LIVE_LAST = 16
PREVIEW_CHARS = 24  # of the prompt, in the title (half a page wide)


def live_lens_figure(lens: Optional[dict], *, colour: str = "top1", normalized: bool = False,
                     last: int = LIVE_LAST, label: str = "") -> go.Figure:
    """The live logit lens of a typed prompt (the ``lens`` job's result: tokens [T], top1_tokens /
    top1_probs / target_prob [L][T]) as the trace's own per-position grid; ``colour="target"`` needs a
    target (without one the grid is coloured by the top-1 probability and says so)."""
    if not lens:
        return empty_figure("Type a prompt (or take one of the trace's) and press “Show the lens”.")
    has_target = lens.get("target_prob") is not None
    colour = colour if colour == "target" and has_target else "top1"
    prompt = " ".join(str(lens.get("prompt") or "").split())
    short = prompt if len(prompt) <= PREVIEW_CHARS else "…" + prompt[-(PREVIEW_CHARS - 1):]  # the end: the answer position
    tuned = " (tuned lens)" if lens.get("lens") == "tuned" else ""
    title = (f"{label + ': ' if label else 'Live lens: '}{short!r}{tuned}"
             + (f" · target {lens.get('target_token')!r}" if has_target else " · no target"))
    return lens_grid(lens, int(lens["num_layers"]), title=title, normalized=normalized, last=last, colour=colour)


def lens_grid(view: dict, L: int, *, title: str, normalized: bool = False, last: int = 24, colour: str = "top1",
              window: Optional[Sequence[int]] = None) -> go.Figure:
    """Layers x positions of one prompt's lens (``view``: tokens [T], top1_tokens / top1_probs [L][T],
    target_prob [L][T] or None, target_token), coloured by ``colour`` ("top1" or "target"), each cell
    annotated with its top-1 token; the last ``last`` positions and the layers of ``window``."""
    tokens = view["tokens"]
    T = len(tokens)
    start = max(0, T - last)
    cols = list(range(start, T))
    xlabels = [f"{i}: {tokens[i]!r}" for i in cols]
    lo, hi = layer_window(L, window)
    rows = range(lo, hi + 1)
    ys = [layer_positions(L, normalized)[l] for l in rows]
    has_target = view.get("target_prob") is not None
    colour = colour if has_target else "top1"
    key = "top1_probs" if colour == "top1" else "target_prob"
    z = [[view[key][l][i] for i in cols] for l in rows]
    text = [[view["top1_tokens"][l][i] for i in cols] for l in rows]
    what = "top-1 probability" if colour == "top1" else f"probability of {view.get('target_token')!r}"
    extra = {}
    target_line = ""
    if has_target:
        extra["customdata"] = [[view["target_prob"][l][i] for i in cols] for l in rows]
        target_line = "<br>target prob %{customdata:.3f}"
    fig = go.Figure(go.Heatmap(
        z=z, x=xlabels, y=ys, text=text, texttemplate="%{text}",
        textfont=dict(size=10), colorscale=SEQUENTIAL, zmin=0, zmax=1,
        colorbar=dict(title=dict(text=what, side="right"), thickness=14),
        hovertemplate="position %{x}<br>" + ("depth %{y:.2f}" if normalized else "layer %{y}")
        + "<br>top-1 %{text}<br>" + what + " %{z:.3f}" + target_line + "<extra></extra>", **extra,
    ))
    # the x labels stand at -45 degrees: about 0.7 of their length is height
    bottom = text_margin(xlabels, base=50, per_char=5.5, least=60)
    y_title = depth_title(normalized)
    # The plot area is at least as tall as the y title, so the title never runs into the figure's title.
    plot = max(22 * len(ys), title_length_px(y_title))
    base_layout(fig, title=title + (f" (last {len(cols)} of {T} tokens)" if start else ""),
                height=max(360, TITLE_MARGIN + bottom + plot))
    fig.update_xaxes(title_text="token position: token", tickangle=-45, type="category")
    fig.update_yaxes(title_text=y_title, range=[ys[0] - half_step(L, normalized), ys[-1] + half_step(L, normalized)])
    fig.update_layout(margin=dict(t=TITLE_MARGIN, r=COLORBAR_MARGIN, b=bottom))
    return fig


def stability_figure(result: Result, perturbations: Optional[Sequence[str]] = None, *, normalized: bool = False,
                     window: Optional[Sequence[int]] = None) -> go.Figure:
    """The stability curve: mean Jensen–Shannon divergence (nats) of the output when one layer alone is
    perturbed, with its 95% bootstrap band, one line per perturbation kind, the vulnerable layer marked."""
    result = as_dict(result)
    sens = result.get("sensitivities") or {}
    if not sens:
        return empty_figure("No sensitivity scan in this trace (it was run without perturbations).")
    # None: every perturbation; an empty selection draws none (the page's checklist unchecked).
    names = [n for n in (list(sens) if perturbations is None else perturbations) if n in sens]
    if not names:
        return empty_figure("No perturbation selected: tick one under “Perturbations shown”.")
    L = num_layers(result)
    xs = layer_positions(L, normalized)
    fig = go.Figure()
    for index, name in enumerate(names):
        s = sens[name]
        colour = OKABE_ITO[index % len(OKABE_ITO)]
        level = int(round(100 * float(s.get("ci_level", 0.95))))
        lo, hi = s.get("ci_low") or [], s.get("ci_high") or []
        if lo and hi:
            fig.add_trace(go.Scatter(x=xs, y=hi, mode="lines", line=dict(width=0), showlegend=False,
                                     hoverinfo="skip", legendgroup=name))
            fig.add_trace(go.Scatter(x=xs, y=lo, mode="lines", line=dict(width=0), fill="tonexty",
                                     fillcolor=_rgba(colour, 0.18), name=f"{level}% interval", showlegend=index == 0,
                                     hoverinfo="skip", legendgroup=name))
        fig.add_trace(go.Scatter(
            x=xs, y=s["mean_js"], mode="lines+markers", name=name, line=dict(color=colour, width=2.5),
            marker=dict(size=6), legendgroup=name, customdata=list(zip(lo or [None] * L, hi or [None] * L)),
            hovertemplate=f"{name}<br>" + ("depth %{x:.2f}" if normalized else "layer %{x}")
            + "<br>mean JS %{y:.4f} nats<br>interval %{customdata[0]:.4f}–%{customdata[1]:.4f}<extra></extra>",
        ))
    vulnerable = result.get("vulnerable_layer")
    if vulnerable is not None:
        x = layer_position(vulnerable, L, normalized)
        fig.add_vline(x=x, line=dict(color=VULNERABLE_COLOUR, width=2, dash="dash"))
        fig.add_annotation(x=x, y=1.0, yref="paper", text=f"vulnerable layer {vulnerable}", showarrow=False,
                           font=dict(color=VULNERABLE_COLOUR), yanchor="bottom", bgcolor="rgba(255,255,255,0.8)")
    base_layout(fig, title="Layer sensitivity: how far the output moves when one layer alone is perturbed "
                "(JS divergence, at most ln 2 ≈ 0.693 nats)", height=400)
    depth_axis(fig, L, result.get("block_kinds") or [], normalized, window)
    fig.update_yaxes(title_text="mean JS divergence (nats)", rangemode="tozero", tickformat=".2~g")
    fig.update_layout(legend=dict(orientation="h", y=-0.25, x=0),
                      margin=dict(l=85, b=65 + depth_axis_margin(result.get("block_kinds"))))
    return fig


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    return f"rgba({r},{g},{b},{alpha})"


def similarity_figure(result: Result, *, normalized: bool = False, window: Optional[Sequence[int]] = None) -> go.Figure:
    """Linear CKA between the answer-position states of every pair of layers (1 = the same representation
    up to rotation and scale)."""
    result = as_dict(result)
    sim = result.get("similarity")
    if not sim or not sim.get("cka"):
        return empty_figure("No similarity matrix in this trace (it was run with --no-similarity).")
    L = num_layers(result)
    lo, hi = layer_window(L, window)
    xs = layer_positions(L, normalized)
    idx = list(range(lo, hi + 1))
    z = [[sim["cka"][i][j] for j in idx] for i in idx]
    axis = [xs[i] for i in idx]
    fig = go.Figure(go.Heatmap(
        z=z, x=axis, y=axis, colorscale=SIMILARITY, zmin=0, zmax=1,
        colorbar=dict(title=dict(text="linear CKA (0-1)", side="right"), thickness=14),
        hovertemplate="layers %{y} and %{x}<br>CKA %{z:.3f}<extra></extra>",
    ))
    base_layout(fig, title=f"Representation similarity between layers (linear CKA over {sim.get('prompts_used', '?')} prompts)",
                height=460)
    step = max(1, len(idx) // 12)
    ticks = [axis[i] for i in range(0, len(idx), step)]
    text = [f"{t:.2f}" if normalized else str(int(t)) for t in ticks]
    fig.update_xaxes(title_text=depth_title(normalized), constrain="domain", tickmode="array", tickvals=ticks, ticktext=text)
    fig.update_yaxes(title_text=depth_title(normalized), scaleanchor="x", autorange="reversed", constrain="domain",
                     tickmode="array", tickvals=ticks, ticktext=text)
    fig.update_layout(margin=dict(r=COLORBAR_MARGIN))
    return fig


def plan_figure(result: Result, *, normalized: bool = False, window: Optional[Sequence[int]] = None) -> go.Figure:
    """The freeze plan on the depth axis: trained layers (blue) and frozen layers (grey), the boundary,
    every task's particle (◆) and the vulnerable layer (▼)."""
    result = as_dict(result)
    plan = result.get("freeze_plan")
    if not plan:
        return empty_figure("This trace has no freeze plan.")
    L = num_layers(result)
    xs = layer_positions(L, normalized)
    kinds = result.get("block_kinds") or ["attention"] * L
    train = set(plan.get("train_layers", []))
    colours = [TRAIN_COLOUR if l in train else FREEZE_COLOUR for l in range(L)]
    hover = [f"layer {l} · {KIND_NAME.get(kinds[l], kinds[l]) if l < len(kinds) else ''} · "
             f"{'train' if l in train else 'freeze'}" for l in range(L)]
    width = (1.0 / L if normalized else 1.0) * 0.92
    fig = go.Figure(go.Bar(x=xs, y=[1] * L, width=width, marker=dict(color=colours, line=dict(width=0)),
                           hovertext=hover, hoverinfo="text", showlegend=False))
    # Legend entries for the two colours.
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="train",
                             marker=dict(symbol="square", size=12, color=TRAIN_COLOUR)))
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="freeze",
                             marker=dict(symbol="square", size=12, color=FREEZE_COLOUR)))
    evidence = plan.get("evidence") or {}
    particles = evidence.get("task_particles") or {}
    by_layer: dict[int, list[str]] = {}
    for name, layer in particles.items():
        if layer is not None:
            by_layer.setdefault(int(layer), []).append(name)
    if by_layer:
        fig.add_trace(go.Scatter(
            x=[layer_position(l, L, normalized) for l in by_layer], y=[1.32] * len(by_layer), mode="markers",
            name="task particle", text=[f"particle of {', '.join(v)} at layer {l}" for l, v in by_layer.items()],
            hovertemplate="%{text}<extra></extra>",
            marker=dict(symbol="diamond", size=13, color=PARTICLE_COLOUR, line=dict(color="#000", width=2)),
        ))
    vulnerable = evidence.get("vulnerable_layer", result.get("vulnerable_layer"))
    if vulnerable is not None:
        fig.add_trace(go.Scatter(
            # its own height, under the particles' row: a diamond at the same layer never covers it
            x=[layer_position(vulnerable, L, normalized)], y=[1.1], mode="markers", name="vulnerable layer",
            text=[f"vulnerable layer {vulnerable}"], hovertemplate="%{text}<extra></extra>",
            marker=dict(symbol="triangle-down", size=14, color=VULNERABLE_COLOUR),
        ))
    boundary = plan.get("boundary")
    if boundary is not None and 0 < boundary < L:
        bx = (boundary / L) if normalized else boundary - 0.5
        fig.add_vline(x=bx, line=dict(color="#000", width=2, dash="dot"))
        fig.add_annotation(x=bx, y=1.5, text=f"boundary b = {boundary}", showarrow=False, xanchor="left",
                           font=dict(size=12))
    base_layout(fig, title=f"Freeze plan: train {plan.get('train_ranges') or 'nothing'} · freeze {plan.get('freeze_ranges') or 'nothing'}",
                height=250)
    # The plan is about the whole model: the strip always shows every layer (a window that cut off the
    # trained layers would contradict the title); the layer window is shaded on it instead.
    lo, hi = layer_window(L, window)
    if (lo, hi) != (0, L - 1):
        step = half_step(L, normalized)
        fig.add_vrect(x0=xs[lo] - step, x1=xs[hi] + step, fillcolor="rgba(0,0,0,0.08)", line=dict(width=1, color="#555"),
                      layer="below")
        fig.add_annotation(x=xs[hi] + step, y=1.5, text=f"layer window {lo}-{hi}", showarrow=False, xanchor="right",
                           font=dict(size=11, color="#555"))
    depth_axis(fig, L, kinds, normalized, None)
    fig.update_yaxes(visible=False, range=[0, 1.6])
    fig.update_layout(legend=dict(orientation="h", y=-0.45, x=0), bargap=0,
                      margin=dict(l=40, r=20, t=50, b=35 + depth_axis_margin(kinds)))
    return fig


def particle_legend(result: Result) -> str:
    """One line explaining the marks, with this trace's rule parameters."""
    options = result.get("options") or {}
    delta = options.get("particle_delta", 0.1)
    floor = options.get("particle_floor", 0.1)
    return (f"◆ Task particle: the first layer where the answer's probability rises by at least {delta} and reaches "
            f"{floor} — where the model starts doing the task. ▼ / dashed line: vulnerable layer, the block whose "
            "perturbation moves the output distribution most (largest mean Jensen–Shannon divergence).")


# Rows of the verdict strip, top to bottom, with their share of the plot height.
VERDICT_ROWS = (("plan", 0.14), ("particles", 0.34), ("sensitivity", 0.36), ("vulnerable", 0.16))


def particle_histogram(result: Result) -> dict[str, list[float]]:
    """task -> (L,) the share (0-1) of the task's bootstrap resamples whose particle is at each layer
    (``particle_bootstrap.counts``); a task without a bootstrap (an older result) puts 1 at its particle.
    Stacked over the tasks, a bar is the expected number of tasks whose particle lies at that layer."""
    L = num_layers(result)
    out = {}
    for name, task in (result.get("tasks") or {}).items():
        shares = [0.0] * L
        counts = (task.get("particle_bootstrap") or {}).get("counts")
        if counts:
            total = sum(counts.values()) or 1
            for layer, n in counts.items():
                if layer != "none" and 0 <= int(layer) < L:
                    shares[int(layer)] = n / total
        elif task.get("task_particle") is not None:
            shares[int(task["task_particle"])] = 1.0
        out[name] = shares
    return out


def verdict_figure(result: Result, *, normalized: bool = False) -> go.Figure:
    """The verdict in one depth strip, one row each, sharing the depth axis: the plan (trained layers
    blue, frozen grey, the boundary dotted), the histogram of task particles (each task's share of the
    bootstrap resamples per layer, stacked; ◆ the particle of all its prompts), the sensitivity curve
    (mean JS of the primary perturbation with its interval) and the vulnerable layer (▼) in a row of its
    own, so that no mark hides another when they share a layer."""
    from plotly.subplots import make_subplots

    result = as_dict(result)
    plan = result.get("freeze_plan")
    if not plan:
        return empty_figure("This trace has no freeze plan.")
    L = num_layers(result)
    xs = layer_positions(L, normalized)
    kinds = result.get("block_kinds") or ["attention"] * L
    fig = make_subplots(rows=len(VERDICT_ROWS), cols=1, shared_xaxes=True, vertical_spacing=0.05,
                        row_heights=[share for _, share in VERDICT_ROWS])
    train = set(plan.get("train_layers", []))
    width = (1.0 / L if normalized else 1.0) * 0.92
    fig.add_trace(go.Bar(
        x=xs, y=[1] * L, width=width, marker=dict(color=[TRAIN_COLOUR if l in train else FREEZE_COLOUR for l in range(L)],
                                                  line=dict(width=0)),
        hovertext=[f"layer {l} · {KIND_NAME.get(kinds[l], kinds[l]) if l < len(kinds) else ''} · "
                   f"{'train' if l in train else 'freeze'}" for l in range(L)],
        hoverinfo="text", showlegend=False, name="plan"), row=1, col=1)
    for label, colour in (("train", TRAIN_COLOUR), ("freeze", FREEZE_COLOUR)):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=label,
                                 marker=dict(symbol="square", size=12, color=colour)), row=1, col=1)
    boundary = plan.get("boundary")
    if boundary is not None and 0 < boundary < L:
        bx = (boundary / L) if normalized else boundary - 0.5
        fig.add_vline(x=bx, line=dict(color="#000", width=2, dash="dot"), row=1, col=1)
    # particles: stacked shares per task, and each task's own particle on top of its column
    histogram = particle_histogram(result)
    palette = [c for c in OKABE_ITO if c not in (TRAIN_COLOUR, VULNERABLE_COLOUR, "#000000")]  # never a plan colour
    for index, (name, shares) in enumerate(histogram.items()):
        fig.add_trace(go.Bar(
            x=xs, y=shares, width=width, name=name,
            marker=dict(color=palette[index % len(palette)], line=dict(width=0)),
            hovertemplate=f"{name}<br>" + ("depth %{x:.2f}" if normalized else "layer %{x}")
            + "<br>particle here in %{y:.0%} of the resamples<extra></extra>"), row=2, col=1)
    stacked = [sum(col) for col in zip(*histogram.values())] if histogram else [0.0] * L
    marks: dict[int, list[str]] = {}
    for name, task in (result.get("tasks") or {}).items():
        if task.get("task_particle") is not None:
            marks.setdefault(int(task["task_particle"]), []).append(name)
    if marks:
        fig.add_trace(go.Scatter(
            x=[layer_position(l, L, normalized) for l in marks], y=[stacked[l] + 0.25 for l in marks], mode="markers",
            name="task particle", text=[f"particle of {', '.join(v)} at layer {l}" for l, v in marks.items()],
            hovertemplate="%{text}<extra></extra>",
            marker=dict(symbol="diamond", size=12, color=PARTICLE_COLOUR, line=dict(color="#000", width=2))), row=2, col=1)
    sens = result.get("sensitivity") or {}
    if sens.get("mean_js"):
        lo, hi = sens.get("ci_low") or [], sens.get("ci_high") or []
        if lo and hi:
            fig.add_trace(go.Scatter(x=xs, y=hi, mode="lines", line=dict(width=0), showlegend=False, hoverinfo="skip"),
                          row=3, col=1)
            fig.add_trace(go.Scatter(x=xs, y=lo, mode="lines", line=dict(width=0), fill="tonexty", hoverinfo="skip",
                                     fillcolor=_rgba(OKABE_ITO[0], 0.18), showlegend=False), row=3, col=1)
        fig.add_trace(go.Scatter(
            x=xs, y=sens["mean_js"], mode="lines+markers", name=f"mean JS ({sens.get('perturbation')})",
            line=dict(color="#000", width=2), marker=dict(size=5),
            hovertemplate=("depth %{x:.2f}" if normalized else "layer %{x}") + "<br>mean JS %{y:.4f} nats<extra></extra>"),
            row=3, col=1)
    vulnerable = (plan.get("evidence") or {}).get("vulnerable_layer", result.get("vulnerable_layer"))
    if vulnerable is not None:
        x = layer_position(vulnerable, L, normalized)
        fig.add_trace(go.Scatter(
            x=[x], y=[0.5], mode="markers+text", name="vulnerable layer", text=[f"vulnerable layer {vulnerable}"],
            textposition="middle right", hovertemplate="vulnerable layer %{x}<extra></extra>",
            marker=dict(symbol="triangle-down", size=15, color=VULNERABLE_COLOUR),
            textfont=dict(color=VULNERABLE_COLOUR)), row=4, col=1)
    base_layout(fig, title=f"Verdict: train {plan.get('train_ranges') or 'nothing'} · freeze {plan.get('freeze_ranges') or 'nothing'}",
                height=450)
    fig.update_layout(barmode="stack", bargap=0, legend=dict(orientation="h", y=-0.22, x=0, traceorder="normal"),
                      margin=dict(l=170, r=20, t=TITLE_MARGIN, b=80 + depth_axis_margin(kinds)))  # room for the legend row
    # Row names stand level at the left (rotated axis titles of short rows ran into each other).
    titles = {"plan": "plan", "particles": "task particles<br>(tasks per layer)", "sensitivity": "sensitivity<br>JS (nats)",
              "vulnerable": "vulnerable layer"}
    for row, (name, _) in enumerate(VERDICT_ROWS, start=1):
        fig.update_yaxes(row=row, col=1, fixedrange=True)
        fig.add_annotation(text=titles[name], xref="paper", x=-0.055, xanchor="right", yref=f"y{'' if row == 1 else row} domain",
                           y=0.5, showarrow=False, align="right", font=dict(size=12))
        depth_axis(fig, L, kinds, normalized, None, row=row, col=1, title=row == len(VERDICT_ROWS))
    fig.update_yaxes(showticklabels=False, range=[0, 1], row=1, col=1)
    fig.update_yaxes(showticklabels=False, range=[0, 1], row=4, col=1)
    fig.update_yaxes(rangemode="tozero", row=2, col=1, range=[0, max(stacked + [1.0]) + 0.5])
    fig.update_yaxes(rangemode="tozero", tickformat=".2~g", row=3, col=1)
    return fig
