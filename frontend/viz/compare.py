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
