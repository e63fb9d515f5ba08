"""Two or more traces side by side on the normalised depth axis (l + 1) / L, so models of different
depth (or one model before and after training) line up. Input: {label: TraceResult JSON}."""

from __future__ import annotations

from typing import Any, Optional

import plotly.graph_objects as go

from frontend.viz.common import OKABE_ITO, VULNERABLE_COLOUR, base_layout, empty_figure, layer_positions

Results = dict[str, dict[str, Any]]
DASHES = ["solid", "dash", "dot", "dashdot", "longdash"]


def shared_tasks(results: Results) -> list[str]:
    names = None
    for r in results.values():
        tasks = list(r.get("tasks") or {})
        names = tasks if names is None else [t for t in names if t in tasks]
    return names or []


def curves_figure(results: Results, task: Optional[str] = None) -> go.Figure:
    """Mean target probability against normalised depth: one colour per trace, one dash per task (or
    the chosen task only); particles as diamonds."""
    if not results:
        return empty_figure("Choose traces to compare.")
    shared = shared_tasks(results)
    tasks = [task] if task else shared
    fig = go.Figure()
    for i, (label, r) in enumerate(results.items()):
        L = int(r["num_layers"])
        xs = layer_positions(L, True)
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        # No task in common: each trace shows its own tasks (still on the same depth axis).
        for j, name in enumerate(tasks or list(r.get("tasks") or {})):
            t = (r.get("tasks") or {}).get(name)
            if not t:
                continue
            fig.add_trace(go.Scatter(
                x=xs, y=t["mean_target_prob"], mode="lines", name=f"{label} · {name}", legendgroup=label,
                line=dict(color=colour, dash=DASHES[j % len(DASHES)], width=2.5),
                customdata=list(range(L)),
                hovertemplate=f"{label} · {name}<br>layer %{{customdata}} (depth %{{x:.2f}})<br>p %{{y:.3f}}<extra></extra>",
            ))
            p = t.get("task_particle")
            if p is not None:
                fig.add_trace(go.Scatter(
                    x=[xs[p]], y=[t["mean_target_prob"][p]], mode="markers", showlegend=False, legendgroup=label,
                    marker=dict(symbol="diamond", size=12, color=colour, line=dict(color="#000", width=1.5)),
                    hovertemplate=f"task particle of {name} in {label}: layer {p}<extra></extra>",
                ))
    if not fig.data:
        return empty_figure(f"No trace has the task {task}." if task else "These traces have no tasks.")
    title = "Mean target probability by normalised depth" + (f" — {task}" if task else "")
    if not task and not shared and len(results) > 1:
        title += " (no task in common: each trace's own tasks)"
    base_layout(fig, title=title, height=420)
    fig.update_xaxes(title_text="normalised depth (layer + 1) / L", range=[0, 1.02])
    fig.update_yaxes(title_text="target probability (0-1)", range=[0, 1])
    fig.update_layout(legend=dict(orientation="h", y=-0.22, x=0))
    return fig


def stability_compare_figure(results: Results) -> go.Figure:
    """Each trace's primary stability curve (mean JS, nats) against normalised depth; vulnerable layers as triangles."""
    fig = go.Figure()
    for i, (label, r) in enumerate(results.items()):
        s = r.get("sensitivity")
        if not s:
            continue
        L = int(r["num_layers"])
        xs = layer_positions(L, True)
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        fig.add_trace(go.Scatter(x=xs, y=s["mean_js"], mode="lines+markers", name=f"{label} ({s.get('perturbation')})",
                                 line=dict(color=colour, width=2.5), customdata=list(range(L)),
                                 hovertemplate=f"{label}<br>layer %{{customdata}} (depth %{{x:.2f}})<br>mean JS %{{y:.4f}} nats<extra></extra>"))
        v = r.get("vulnerable_layer")
        if v is not None:
            fig.add_trace(go.Scatter(x=[xs[v]], y=[s["mean_js"][v]], mode="markers", showlegend=False,
                                     marker=dict(symbol="triangle-down", size=14, color=VULNERABLE_COLOUR,
                                                 line=dict(color=colour, width=2)),
                                     hovertemplate=f"vulnerable layer of {label}: {v}<extra></extra>"))
    if not fig.data:
        return empty_figure("None of these traces has a sensitivity scan.")
    base_layout(fig, title="Layer sensitivity by normalised depth (▼ vulnerable layer)", height=400)
    fig.update_xaxes(title_text="normalised depth (layer + 1) / L", range=[0, 1.02])
    fig.update_yaxes(title_text="mean JS divergence (nats)", rangemode="tozero", tickformat=".2~g")
    fig.update_layout(legend=dict(orientation="h", y=-0.22, x=0))
    return fig


def summary_rows(results: Results) -> tuple[list[str], list[list[str]]]:
    """Per trace: model, depth, vulnerable layer (and its normalised depth), particles, plan."""
    header = ["trace", "model", "layers", "vulnerable layer (depth)", "task particles (depth)", "freeze plan: train / freeze"]
    rows = []
    for label, r in results.items():
        L = int(r["num_layers"])
        v = r.get("vulnerable_layer")
        parts = []
        for name, t in (r.get("tasks") or {}).items():
            p = t.get("task_particle")
            parts.append(f"{name}: {'none' if p is None else f'{p} ({(p + 1) / L:.2f})'}")
        plan = r.get("freeze_plan") or {}
        rows.append([label, f"{r['model'].get('architecture', '?')}", str(L),
                     "none" if v is None else f"{v} ({(v + 1) / L:.2f})", "; ".join(parts),
                     f"{plan.get('train_ranges') or '—'} / {plan.get('freeze_ranges') or '—'}"])
    return header, rows


# -- small multiples, differences and plans ----------------------------------------------------------
# One small panel per task (every panel on the same axes) instead of every task x trace in one plot:
# with 12 tasks, 12 dash styles cannot be told apart and their legend squeezes the plot.

PANEL_COLUMNS = 3
PANEL_HEIGHT = 210  # px per row of panels
DEPTH_TITLE = "normalised depth (layer + 1) / L"


def panel_tasks(results: Results, task: Optional[str] = None) -> list[str]:
    """The tasks that get a panel: the chosen one, else the tasks every trace has, else every task of any
    trace (in order of first appearance)."""
    if task:
        return [task]
    shared = shared_tasks(results)
    if shared:
        return shared
    return list(dict.fromkeys(name for r in results.values() for name in (r.get("tasks") or {})))


def _grid(count: int) -> tuple[int, int]:
    cols = max(1, min(PANEL_COLUMNS, count))
    return -(-count // cols), cols


def _cell(index: int, rows: int, cols: int) -> tuple[int, int]:
    """Task ``index`` (reading order, top-left first) -> (row, col) of a bottom-left-started grid, so the
    first axis (``xaxis``) is the bottom-left panel, the one that carries the depth title."""
    return rows - index // cols, index % cols + 1


def _panels(tasks: list[str], title: str, y_title: str):
    from plotly.subplots import make_subplots

    rows, cols = _grid(len(tasks))
    titles = [""] * (rows * cols)  # in the grid's order: row 1 (the bottom one) first
    for i, name in enumerate(tasks):
        r, c = _cell(i, rows, cols)
        titles[(r - 1) * cols + (c - 1)] = name
    spacing = min(80 / (PANEL_HEIGHT * rows), 0.9 / (rows - 1)) if rows > 1 else 0.0
    fig = make_subplots(rows=rows, cols=cols, start_cell="bottom-left", subplot_titles=titles,
                        horizontal_spacing=0.06, vertical_spacing=spacing)
    height = 150 + PANEL_HEIGHT * rows
    base_layout(fig, title=title, height=height)
    # The legend (the traces) in a row of its own between the title and the top panels' titles.
    fig.update_layout(margin=dict(t=100), legend=dict(orientation="h", x=0, xanchor="left", yanchor="bottom",
                                                      y=1 + 26 / (height - 160)))
    fig.update_xaxes(range=[0, 1.02], tickformat=".1f", dtick=0.25)
    fig.update_annotations(font=dict(size=12))
    fig.update_xaxes(title_text=DEPTH_TITLE, row=1, col=1)
    for r in range(1, rows + 1):
        fig.update_yaxes(title_text=y_title, row=r, col=1)
    return fig, rows, cols


def small_multiples_figure(results: Results, task: Optional[str] = None) -> go.Figure:
    """Mean target probability against normalised depth, one panel per task (:func:`panel_tasks`), one
    colour per trace (a legend of traces only), each task particle a diamond."""
    if not results:
        return empty_figure("Choose traces to compare.")
    tasks = panel_tasks(results, task)
    if not tasks:
        return empty_figure("These traces have no tasks.")
    title = "Mean target probability by normalised depth, one panel per task"
    if not task and not shared_tasks(results) and len(results) > 1:
        title += " (no task in common: each trace's own)"
    fig, rows, cols = _panels(tasks, title, "p(target)")
    for i, (label, r) in enumerate(results.items()):
        L = int(r["num_layers"])
        xs = layer_positions(L, True)
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        shown = False
        for index, name in enumerate(tasks):
            t = (r.get("tasks") or {}).get(name)
            if not t:
                continue
            row, col = _cell(index, rows, cols)
            fig.add_trace(go.Scatter(
                x=xs, y=t["mean_target_prob"], mode="lines", name=label, legendgroup=label, showlegend=not shown,
                line=dict(color=colour, width=2), customdata=list(range(L)),
                hovertemplate=f"{label} · {name}<br>layer %{{customdata}} (depth %{{x:.2f}})<br>p %{{y:.3f}}<extra></extra>",
            ), row=row, col=col)
            shown = True
            p = t.get("task_particle")
            if p is not None:
                fig.add_trace(go.Scatter(
                    x=[xs[p]], y=[t["mean_target_prob"][p]], mode="markers", showlegend=False, legendgroup=label,
                    marker=dict(symbol="diamond", size=10, color=colour, line=dict(color="#000", width=1.2)),
                    hovertemplate=f"task particle of {name} in {label}: layer {p}<extra></extra>",
                ), row=row, col=col)
    if not fig.data:
        return empty_figure(f"No trace has the task {task}." if task else "These traces have no tasks.")
    fig.update_yaxes(range=[0, 1])
    return fig


def resampled(values: list, num_layers: int, onto: list[float]) -> list[float]:
    """A per-layer curve (L,) read at other normalised depths ``onto`` by linear interpolation between its
    layers' depths (l + 1) / L (the ends held), so traces of different depth subtract. Plain Python: the
    dashboard imports no numerical package (tests/test_layering.py)."""
    from bisect import bisect_left

    xs = layer_positions(num_layers, True)
    ys = [float(v) for v in values]
    out = []
    for x in onto:
        i = bisect_left(xs, x)
        if i == 0:
            out.append(ys[0])
        elif i >= len(xs):
            out.append(ys[-1])
        else:
            t = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
            out.append(ys[i - 1] + t * (ys[i] - ys[i - 1]))
    return out


def difference_figure(results: Results, task: Optional[str] = None) -> go.Figure:
    """Run B minus run A (the first trace is A: before, the others after): the difference of mean target
    probability per task panel, on A's layers (B interpolated on the normalised depth when its depth
    differs); above zero, B's answer is more likely at that depth."""
    if len(results) < 2:
        return empty_figure("The difference view needs two traces: add another one above.")
    (ref_label, ref), others = next(iter(results.items())), list(results.items())[1:]
    tasks = [t for t in panel_tasks({ref_label: ref, **dict(others)}, task) if t in (ref.get("tasks") or {})]
    tasks = [t for t in tasks if any(t in (r.get("tasks") or {}) for _, r in others)]
    if not tasks:
        return empty_figure(f"{ref_label} shares no task with the other traces: nothing to subtract.")
    L = int(ref["num_layers"])
    xs = layer_positions(L, True)
    fig, rows, cols = _panels(tasks, f"Difference of mean target probability: each trace minus {ref_label} (A)", "Δ p")
    for i, (label, r) in enumerate(others, start=1):
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        shown = False
        for index, name in enumerate(tasks):
            t = (r.get("tasks") or {}).get(name)
            if not t:
                continue
            after = resampled(t["mean_target_prob"], int(r["num_layers"]), xs)
            before = ref["tasks"][name]["mean_target_prob"]
            row, col = _cell(index, rows, cols)
            fig.add_trace(go.Scatter(
                x=xs, y=[a - b for a, b in zip(after, before)], mode="lines+markers", name=f"{label} − {ref_label}",
                legendgroup=label, showlegend=not shown, line=dict(color=colour, width=2), marker=dict(size=4),
                customdata=list(range(L)),
                hovertemplate=f"{label} − {ref_label} · {name}<br>layer %{{customdata}} of A (depth %{{x:.2f}})"
                              "<br>Δ p %{y:+.3f}<extra></extra>",
            ), row=row, col=col)
            shown = True
    for index in range(len(tasks)):
        row, col = _cell(index, rows, cols)
        fig.add_hline(y=0, line=dict(color="#888", width=1), row=row, col=col)
    # One symmetric range for every panel (zero in the middle, small differences still visible).
    reach = max([abs(v) for tr in fig.data for v in tr.y] + [0.05])
    fig.update_yaxes(range=[-1.1 * reach, 1.1 * reach], tickformat="+.2f")
    return fig


def plan_layers(result: dict) -> tuple[int, set[int]]:
    """(L, the layers the trace's freeze plan trains)."""
    plan = result.get("freeze_plan") or {}
    return int(result["num_layers"]), {int(l) for l in plan.get("train_layers") or []}


def plan_diff_figure(results: Results) -> go.Figure:
    """Plan against plan: one row per trace on the normalised depth axis, each layer a cell coloured
    trained (blue) or frozen (grey), the vulnerable layer ▼; cells of a trace that decide otherwise than
    the first trace at the same depth are outlined in black."""
    from frontend.viz.common import FREEZE_COLOUR, TRAIN_COLOUR

    planned = {label: r for label, r in results.items() if r.get("freeze_plan")}
    if not planned:
        return empty_figure("None of these traces has a freeze plan.")
    ref_label = next(iter(planned))
    ref_L, ref_train = plan_layers(planned[ref_label])
    fig = go.Figure()
    for state, colour in (("trained", TRAIN_COLOUR), ("frozen", FREEZE_COLOUR)):
        base, width, ys, text, outline = [], [], [], [], []
        for label, r in planned.items():
            L, train = plan_layers(r)
            for layer in range(L):
                if (layer in train) != (state == "trained"):
                    continue
                centre = (layer + 0.5) / L
                ref_layer = min(ref_L - 1, int(centre * ref_L))
                differs = label != ref_label and (ref_layer in ref_train) != (layer in train)
                base.append(layer / L)
                width.append(1 / L)
                ys.append(label)
                outline.append("#000" if differs else "#fff")
                text.append(f"{label}: layer {layer} {state}" + (f" (differs from {ref_label}'s layer {ref_layer})" if differs else ""))
        if ys:
            fig.add_trace(go.Bar(x=width, base=base, y=ys, orientation="h", name=state, marker_color=colour,
                                 marker_line=dict(color=outline, width=[2 if c == "#000" else 1 for c in outline]),
                                 hovertext=text, hovertemplate="%{hovertext}<extra></extra>"))
    for label, r in planned.items():
        v = r.get("vulnerable_layer")
        if v is not None:
            fig.add_trace(go.Scatter(x=[(int(v) + 0.5) / int(r["num_layers"])], y=[label], mode="markers",
                                     showlegend=False, marker=dict(symbol="triangle-down", size=13, color=VULNERABLE_COLOUR,
                                                                   line=dict(color="#000", width=1)),
                                     hovertemplate=f"vulnerable layer of {label}: {v}<extra></extra>"))
    base_layout(fig, title=f"Plan against plan: outlined where a plan differs from {ref_label}'s; ▼ vulnerable layer",
                height=140 + 44 * len(planned))
    fig.update_layout(barmode="overlay", bargap=0.25, legend=dict(orientation="h", y=-0.35, x=0))
    fig.update_xaxes(title_text=DEPTH_TITLE, range=[0, 1])
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def plan_diff_rows(results: Results) -> tuple[list[str], list[list[str]]]:
    """Per trace: its plan's trained and frozen ranges and, against the first trace when the depths match,
    the layers it trains that the first freezes and the other way round."""
    header = ["trace", "trains", "freezes", "trains where the first freezes", "freezes where the first trains"]
    planned = {label: r for label, r in results.items() if r.get("freeze_plan")}
    rows = []
    ref_label = next(iter(planned), None)
    for label, r in planned.items():
        plan = r["freeze_plan"]
        L, train = plan_layers(r)
        ref_L, ref_train = plan_layers(planned[ref_label])
        if label == ref_label:
            extra, fewer = "— (the reference)", "—"
        elif L != ref_L:
            extra = fewer = f"different depth ({L} vs {ref_L} layers): see the figure"
        else:
            extra = ", ".join(str(l) for l in sorted(train - ref_train)) or "none"
            fewer = ", ".join(str(l) for l in sorted(ref_train - train)) or "none"
        rows.append([label, str(plan.get("train_ranges") or "—"), str(plan.get("freeze_ranges") or "—"), extra, fewer])
    return header, rows
