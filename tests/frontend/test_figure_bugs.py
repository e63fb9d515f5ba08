"""Figure bugs found by using the dashboard, each pinned by a test that would catch it again: labels that
look like numbers, the layer window, title collisions, an empty perturbation selection."""

from __future__ import annotations

import json

import pytest

from frontend.viz import experiment as ev
from frontend.viz import report as rv
from frontend.viz import trace as tv

# A glyph of the figures' 13 px sans-serif font is about half an em wide on average (Latin text).
TITLE_FONT_PX = 13
GLYPH_EM = 0.5


def _renamed(result: dict, old: str, new: str) -> dict:
    """The result with allocation ``old`` renamed ``new`` everywhere it is a whole JSON string."""
    text = json.dumps(result)
    assert f'"{old}"' in text
    return json.loads(text.replace(f'"{old}"', f'"{new}"'))


@pytest.fixture()
def number_named(experiment_result):
    """The engine's experiment with its ranges allocation named "0" (what a freeze plan that trains only
    block 0 produces)."""
    return _renamed(experiment_result, "0-1,3", "0")


def _x_labels(fig) -> list[str]:
    return [str(x) for x in fig.data[0].x]


def test_an_allocation_named_like_a_number_keeps_a_categorical_axis_on_the_trial_page(number_named):
    fig = ev.scores_figure(number_named)
    labels = _x_labels(fig)
    assert len(labels) == len(number_named["table"])  # base model, train-shallow and the "0" allocation
    # plotly.js types an axis whose labels are mostly numbers as linear and drops the other bars:
    # the axis must say it is categorical whatever the labels are.
    assert fig.layout.xaxis.type == "category"
    base = next(r for r in number_named["table"] if r["allocation"] == "base")
    bench = ev.benchmarks(number_named)[0]
    assert fig.data[0].y[0] == pytest.approx(base["benchmarks"][bench]["mean"])


def test_an_allocation_named_like_a_number_keeps_a_categorical_axis_in_the_report(number_named):
    fig = rv.accuracy_figure(number_named)
    assert fig.layout.xaxis.type == "category"
    assert len(fig.data[0].x) == len(number_named["table"])


def _plot_height(fig) -> float:
    m = fig.layout.margin
    return fig.layout.height - m.t - m.b


def test_the_position_grid_with_normalised_depth_leaves_room_for_its_y_title(trace_result):
    fig = tv.position_grid(trace_result, normalized=True)
    title = fig.layout.yaxis.title.text
    assert "normalised depth" in title
    # The y title is centred on the plot area; longer than the plot area, it runs into the figure title.
    assert _plot_height(fig) >= GLYPH_EM * TITLE_FONT_PX * len(title)


def test_the_position_grid_honours_the_layer_window(trace_result):
    L = trace_result["num_layers"]
    view = trace_result["position_view"]
    fig = tv.position_grid(trace_result, window=[1, 2], last=5)
    assert list(fig.data[0].y) == [1.0, 2.0]
    T = len(view["tokens"])
    assert [list(r) for r in fig.data[0].z] == [pytest.approx(view["top1_probs"][l][T - 5:]) for l in (1, 2)]
    assert list(fig.layout.yaxis.range) == pytest.approx([0.5, 2.5])
    normal = tv.position_grid(trace_result, window=[2, 3], normalized=True)
    assert list(normal.data[0].y) == pytest.approx([3 / L, 4 / L])


def test_a_layer_window_does_not_hide_the_plans_trained_layers(trace_result):
    plan = trace_result["freeze_plan"]
    L = trace_result["num_layers"]
    trained = plan["train_layers"]
    assert trained, "the fixture's plan trains something"
    outside = [l for l in range(L) if l not in trained]
    window = [outside[-1], outside[-1]] if outside else [L - 1, L - 1]
    fig = tv.plan_figure(trace_result, window=window)
    lo, hi = fig.layout.xaxis.range
    assert lo <= min(trained) - 0.5 and hi >= max(trained) + 0.5  # every trained layer in view
    assert f"train {plan['train_ranges']}" in fig.layout.title.text
    # the window is shown on the strip, not applied to it
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 1 and (rects[0].x0, rects[0].x1) == (window[0] - 0.5, window[1] + 0.5)
    assert not [s for s in tv.plan_figure(trace_result).layout.shapes if s.type == "rect"]


def test_unchecking_every_perturbation_draws_none(trace_result):
    assert len(trace_result["sensitivities"]) == 2
    fig = tv.stability_figure(trace_result, [])
    assert not [d for d in fig.data if getattr(d, "mode", None) == "lines+markers"]
    assert "No perturbation selected" in fig.layout.annotations[0].text
    every = tv.stability_figure(trace_result, None)
    assert [d.name for d in every.data if d.mode == "lines+markers"] == list(trace_result["sensitivities"])
