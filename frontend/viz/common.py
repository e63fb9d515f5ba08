"""Shared pieces of the figures: colour-blind-safe colours, the depth axis, export settings."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import plotly.graph_objects as go

# Okabe & Ito (2008): eight colours distinguishable under the common colour-vision deficiencies.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
SEQUENTIAL = "Viridis"  # perceptually uniform, colour-blind safe
SIMILARITY = "Cividis"  # designed for colour-vision deficiencies
DIVERGING = "RdBu"
TRAIN_COLOUR = "#0072B2"
FREEZE_COLOUR = "#BBBBBB"
VULNERABLE_COLOUR = "#D55E00"
PARTICLE_COLOUR = "#FFFFFF"
KIND_LETTER = {"attention": "A", "linear-attention": "L", "ssm": "S"}
KIND_NAME = {"attention": "attention", "linear-attention": "linear attention", "ssm": "SSM"}

METRICS = {
    "prob": ("target probability", "probability of the answer's first token under the logit lens (0-1)"),
    "rank": ("target rank", "rank of the answer's first token (0 = top-1)"),
    "logrank": ("log10(1 + rank)", "log10(1 + rank) of the answer's first token: 0 top-1, 1 rank 9, 2 rank 99"),
    "top1": ("top-1 accuracy", "share of prompts whose answer is the lens's top-1 token (0-1)"),
    "top10": ("top-10 accuracy", "share of prompts whose answer is among the lens's 10 most likely tokens (0-1)"),
    "entropy": ("entropy (nats)", "entropy of the lens distribution, in nats"),
    "kl": ("KL to final (nats)", "KL divergence from the model's output distribution to the lens, in nats"),
}

# Latin first, then the CJK fonts of macOS, Windows and Linux, so Chinese never renders as boxes
# (assets/style.css repeats this stack for the page itself: CSS cannot read Python).
FONT_STACK = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Noto Sans', 'PingFang SC', 'Hiragino Sans GB', 'Microsoft YaHei', 'Noto Sans CJK SC', 'Source Han Sans SC', 'WenQuanYi Micro Hei', sans-serif"
FONT = dict(family=FONT_STACK, size=13)


def graph_config(filename: str) -> dict:
    """dcc.Graph config: a PNG export in the modebar (SVG/CSV/JSON have their own buttons on the page)."""
    return {
        "displaylogo": False,
        "responsive": True,
        "toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2},
        "modeBarButtonsToRemove": ["lasso2d", "select2d"],
    }


# ticklabeloverflow "allow": plotly's default on numeric axes measures every tick label's box after each
# draw to hide those past the figure's edge, the largest single cost of drawing a trace page; the margins
# here leave room for the labels, so there is nothing to hide.
_AXIS = dict(gridcolor="#EBF0F8", linecolor="#EBF0F8", zerolinecolor="#EBF0F8", zerolinewidth=2, automargin=True,
             title=dict(standoff=12), ticklabeloverflow="allow")
# A small white template (plotly_white's look): assigning the full built-in template deep-copies it per
# figure, which was most of the time of building a trace page.
TEMPLATE = go.layout.Template(layout=dict(paper_bgcolor="white", plot_bgcolor="white", colorway=OKABE_ITO,
                                          xaxis=_AXIS, yaxis=_AXIS, hoverlabel=dict(align="left")))


TITLE_MARGIN = 60  # px above the plot area: the figure's title


def base_layout(fig: go.Figure, *, title: str, height: int = 420) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0.0, xanchor="left", font=dict(size=15)),
        template=TEMPLATE,
        font=FONT,
        height=height,
        margin=dict(l=70, r=20, t=TITLE_MARGIN, b=60),
        hoverlabel=dict(font=dict(family=FONT["family"], size=12)),
    )
    return fig


# Margins (px) that already hold what plotly pushes them to (a colour bar on the right, category labels
# on the left, a legend under the plot). A push beyond the margin makes plotly draw the figure a second
# time, which was a third of a trace page's drawing time in the browser. Axis automargin stays on as the
# safety net for labels longer than estimated here.
COLORBAR_MARGIN = 115


def text_margin(labels: Sequence[Any], *, base: int = 45, per_char: float = 7.5, least: int = 70, most: int = 280) -> int:
    """A margin (px) for an axis whose tick labels are ``labels`` (12 px font), with its title."""
    longest = max((len(str(label)) for label in labels), default=0)
    return int(min(most, max(least, base + per_char * longest)))


def title_length_px(text: str, size: int = FONT["size"]) -> int:
    """About how long ``text`` runs (px) at ``size`` px in the figures' font: 0.6 em a character, a
    little more than the average glyph, so a space reserved with it is never too short."""
    return int(0.6 * size * len(text)) + 10


def depth_axis_margin(block_kinds: Sequence[str]) -> int:
    """The bottom margin under a depth axis: one more tick line when the model mixes block kinds."""
    return 75 if len(set(block_kinds or [])) > 1 else 60


def layer_positions(num_layers: int, normalized: bool) -> list[float]:
    """x positions of layers 0..L-1: the index, or the normalised depth (l + 1) / L."""
    if normalized:
        return [(l + 1) / num_layers for l in range(num_layers)]
    return [float(l) for l in range(num_layers)]


def half_step(num_layers: int, normalized: bool) -> float:
    """Half the distance between neighbouring layers on the depth axis (the margin around a range)."""
    return 0.5 / num_layers if normalized else 0.5


def layer_position(layer: Optional[int], num_layers: int, normalized: bool) -> Optional[float]:
    if layer is None:
        return None
    return (layer + 1) / num_layers if normalized else float(layer)


def depth_title(normalized: bool) -> str:
    return "normalised depth (layer + 1) / L" if normalized else "layer (block index, 0-based)"


def layer_window(num_layers: int, window: Optional[Sequence[int]]) -> tuple[int, int]:
    """A valid inclusive (first, last) layer window; the whole depth when ``window`` is None or invalid."""
    if not window or len(window) != 2:
        return 0, num_layers - 1
    lo, hi = int(window[0]), int(window[1])
    lo, hi = max(0, min(lo, num_layers - 1)), max(0, min(hi, num_layers - 1))
    if lo > hi:
        lo, hi = hi, lo
    return lo, hi


def depth_axis(fig: go.Figure, num_layers: int, block_kinds: Sequence[str], normalized: bool,
               window: Optional[Sequence[int]] = None, *, row=None, col=None, title: bool = True) -> None:
    """Layer axis: title with units, ticks with the block kind (A / L / S) when the model mixes kinds,
    the range limited to the layer window."""
    lo, hi = layer_window(num_layers, window)
    xs = layer_positions(num_layers, normalized)
    mixed = len(set(block_kinds or [])) > 1
    step = max(1, (hi - lo + 1) // 18)
    ticks = list(range(lo, hi + 1, step))
    text = []
    for l in ticks:
        label = f"{xs[l]:.2f}" if normalized else str(l)
        if mixed and l < len(block_kinds):
            label += f"<br>{KIND_LETTER.get(block_kinds[l], '?')}"
        text.append(label)
    half = half_step(num_layers, normalized)
    axis_title = depth_title(normalized)
    if mixed:
        axis_title += " · A attention, L linear attention, S SSM"
    fig.update_xaxes(
        tickmode="array", tickvals=[xs[l] for l in ticks], ticktext=text,
        range=[xs[lo] - half, xs[hi] + half], title_text=axis_title if title else None,
        row=row, col=col,
    )


def kinds_caption(block_kinds: Sequence[str]) -> str:
    counts: dict[str, int] = {}
    for kind in block_kinds:
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{n} {KIND_NAME.get(k, k)}" for k, n in counts.items())


def empty_figure(message: str, *, height: int = 300) -> go.Figure:
    """A figure that says why it is empty (never a blank box)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font=dict(size=14, color="#555"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(template=TEMPLATE, height=height, font=FONT, margin=dict(l=20, r=20, t=20, b=20))
    return fig


def plotly_text(text: Any) -> str:
    """User text for a plotly label or hover: plotly renders a small HTML subset, so ``<``, ``>`` and
    ``&`` are written as entities and show literally."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
