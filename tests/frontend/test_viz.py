"""Figures are pure functions of the engine's result JSON: the plotted numbers are the result's numbers."""

from __future__ import annotations

import copy
import csv
import io

import pytest

from frontend.components import to_csv
from frontend.viz import compare as cv
from frontend.viz import experiment as ev
from frontend.viz import export as tx
from frontend.viz import trace as tv


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values)


def test_task_heatmap_plots_each_tasks_mean_curve(trace_result):
    fig = tv.task_heatmap(trace_result, "prob")
    heat = fig.data[0]
    assert list(heat.y) == list(trace_result["tasks"])
    for row, name in zip(heat.z, heat.y):
        assert list(row) == pytest.approx(trace_result["tasks"][name]["mean_target_prob"])
    assert list(heat.x) == list(range(trace_result["num_layers"]))
    assert fig.layout.xaxis.title.text.startswith("layer")
    assert fig.layout.coloraxis is not None and heat.colorscale[0][1].lower() == "#440154"  # viridis


def test_task_heatmap_rank_is_the_mean_rank_and_depth_can_be_normalised(trace_result):
    L = trace_result["num_layers"]
    fig = tv.task_heatmap(trace_result, "rank", normalized=True, window=[1, 2])
    task = trace_result["tasks"]["plural_en"]
    row = fig.data[0].z[list(fig.data[0].y).index("plural_en")]
    for l in range(L):
        assert row[l] == pytest.approx(_mean([r[l] for r in task["target_rank"]]))
    assert list(fig.data[0].x) == pytest.approx([(l + 1) / L for l in range(L)])
    lo, hi = fig.layout.xaxis.range
    assert lo == pytest.approx(2 / L - 0.5 / L) and hi == pytest.approx(3 / L + 0.5 / L)
    assert "normalised depth" in fig.layout.xaxis.title.text
    with pytest.raises(ValueError):
        tv.task_heatmap(trace_result, "nonsense")


def test_particles_are_marked_where_the_result_puts_them(trace_result):
    result = copy.deepcopy(trace_result)
    result["tasks"]["antonyms_en"]["task_particle"] = 2
    result["tasks"]["plural_en"]["task_particle"] = None
    fig = tv.task_heatmap(result, "prob")
    marks = fig.data[1]
    assert marks.name == "task particle"
    expected = {n: t["task_particle"] for n, t in result["tasks"].items() if t["task_particle"] is not None}
    assert dict(zip(marks.y, marks.x)) == {n: float(l) for n, l in expected.items()}


def test_hover_of_the_task_heatmap_names_the_top1_tokens(trace_result):
    fig = tv.task_heatmap(trace_result)
    name = list(trace_result["tasks"])[0]
    top = trace_result["tasks"][name]["top_tokens"][0][0][0]
    assert repr(top) in fig.data[0].customdata[0][0]


def test_prompt_heatmap_rows_are_prompts_and_hover_has_the_top_k(trace_result):
    task = trace_result["tasks"]["country_capital_zh"]
    fig = tv.prompt_heatmap(trace_result, "country_capital_zh", "entropy")
    assert [list(r) for r in fig.data[0].z] == [pytest.approx(r) for r in task["entropy"]]
    assert len(fig.data[0].y) == len(task["prompts"])
    cell = fig.data[0].customdata[1][2]
    for token, prob in zip(task["top_tokens"][1][2][:5], task["top_probs"][1][2][:5]):
        assert f"{token!r} {prob:.2f}" in cell
    # the row's category names the prompt and its target once; the axis shows "#i → target"
    assert fig.data[0].y[1].startswith("#1 ") and f"target {task['target_tokens'][1]!r}" in fig.data[0].y[1]
    assert " ".join(task["prompts"][1].split())[-20:] in fig.data[0].y[1]
    assert list(fig.layout.yaxis.ticktext)[1].startswith("#1 → ") and list(fig.layout.yaxis.tickvals) == list(fig.data[0].y)
    assert "%{y}" in fig.data[0].hovertemplate and "%{customdata}" in fig.data[0].hovertemplate
    particles = [p for p in task["prompt_particles"] if p is not None]
    assert len(fig.data[1].x) == len(particles)
    assert "No task named" in tv.prompt_heatmap(trace_result, "missing").layout.annotations[0].text


def test_position_grid_is_annotated_with_the_top1_tokens(trace_result):
    view = trace_result["position_view"]
    fig = tv.position_grid(trace_result, last=10)
    T = len(view["tokens"])
    assert len(fig.data[0].x) == min(10, T)
    L = trace_result["num_layers"]
    for l in range(L):
        assert list(fig.data[0].text[l]) == view["top1_tokens"][l][T - min(10, T):]
        assert list(fig.data[0].z[l]) == pytest.approx(view["top1_probs"][l][T - min(10, T):])
    assert fig.data[0].texttemplate == "%{text}"
    no_view = dict(trace_result, position_view=None)
    assert "no per-position view" in tv.position_grid(no_view).layout.annotations[0].text


def test_stability_curve_lines_bands_and_the_vulnerable_layer(trace_result):
    fig = tv.stability_figure(trace_result)
    lines = [d for d in fig.data if d.mode == "lines+markers"]
    sens = trace_result["sensitivities"]
    assert [d.name for d in lines] == list(sens)
    for d in lines:
        assert list(d.y) == pytest.approx(sens[d.name]["mean_js"])
    bands = [d for d in fig.data if d.fill == "tonexty"]
    assert len(bands) == len(sens)
    assert list(bands[0].y) == pytest.approx(sens[lines[0].name]["ci_low"])
    vline = [s for s in fig.layout.shapes if s.type == "line"]
    assert vline and vline[0].x0 == trace_result["vulnerable_layer"]
    assert f"vulnerable layer {trace_result['vulnerable_layer']}" in [a.text for a in fig.layout.annotations]
    assert "nats" in fig.layout.yaxis.title.text
    only = tv.stability_figure(trace_result, ["skip"])
    assert [d.name for d in only.data if d.mode == "lines+markers"] == ["skip"]


def test_similarity_is_the_cka_matrix(trace_result):
    fig = tv.similarity_figure(trace_result)
    assert [list(r) for r in fig.data[0].z] == [pytest.approx(r) for r in trace_result["similarity"]["cka"]]
    window = tv.similarity_figure(trace_result, window=[1, 2])
    assert len(window.data[0].z) == 2 and window.data[0].z[0][0] == pytest.approx(trace_result["similarity"]["cka"][1][1])


def test_plan_figure_colours_trained_and_frozen_layers(trace_result):
    plan = trace_result["freeze_plan"]
    fig = tv.plan_figure(trace_result)
    colours = list(fig.data[0].marker.color)
    train = set(plan["train_layers"])
    assert [c == "#0072B2" for c in colours] == [l in train for l in range(trace_result["num_layers"])]
    assert plan["train_ranges"] in fig.layout.title.text
    names = [d.name for d in fig.data]
    assert "vulnerable layer" in names
    if 0 < plan["boundary"] < trace_result["num_layers"]:
        assert any(s.x0 == plan["boundary"] - 0.5 for s in fig.layout.shapes)


def test_block_kinds_appear_on_the_axis_of_a_hybrid_model(hybrid_trace_result):
    kinds = hybrid_trace_result["block_kinds"]
    assert len(set(kinds)) > 1
    fig = tv.task_heatmap(hybrid_trace_result)
    letters = [t.split("<br>")[1] for t in fig.layout.xaxis.ticktext]
    assert letters == [{"attention": "A", "ssm": "S", "linear-attention": "L"}[k] for k in kinds]
    assert "S SSM" in fig.layout.xaxis.title.text
    assert "no similarity" in tv.similarity_figure(hybrid_trace_result).layout.annotations[0].text.lower()


def test_exported_rows_are_the_plotted_numbers(trace_result):
    header, rows = tx.rows_for(trace_result, "tasks")
    L, T = trace_result["num_layers"], len(trace_result["tasks"])
    assert len(rows) == L * T
    parsed = list(csv.DictReader(io.StringIO(to_csv(header, rows))))
    first = parsed[0]
    assert float(first["prob"]) == pytest.approx(trace_result["tasks"][first["task"]]["mean_target_prob"][0])
    _, stab = tx.rows_for(trace_result, "stability")
    assert len(stab) == L * len(trace_result["sensitivities"])
    _, prompts = tx.rows_for(trace_result, "prompts", task="plural_en")
    assert len(prompts) == L * len(trace_result["tasks"]["plural_en"]["prompts"])
    assert tx.json_for(trace_result, "plan") == trace_result["freeze_plan"]
    for what in tx.FIGURES:
        h, r = tx.rows_for(trace_result, what, task="plural_en")
        assert h and r
    with pytest.raises(ValueError):
        tx.rows_for(trace_result, "bogus")


def test_compare_aligns_traces_by_normalised_depth(trace_result, hybrid_trace_result):
    results = {"a": trace_result, "b": hybrid_trace_result}
    assert cv.shared_tasks(results) == ["antonyms_en"]
    fig = cv.curves_figure(results)
    lines = [d for d in fig.data if d.mode == "lines"]
    assert len(lines) == 2
    for d, r in zip(lines, results.values()):
        L = r["num_layers"]
        assert list(d.x) == pytest.approx([(l + 1) / L for l in range(L)])
        assert list(d.y) == pytest.approx(r["tasks"]["antonyms_en"]["mean_target_prob"])
    header, rows = cv.summary_rows(results)
    assert [r[0] for r in rows] == ["a", "b"] and rows[0][2] == str(trace_result["num_layers"])
    assert cv.stability_compare_figure(results).data
    own = cv.curves_figure({"a": trace_result, "b": dict(hybrid_trace_result, tasks={"other": hybrid_trace_result["tasks"]["antonyms_en"]})})
    assert "no task in common" in own.layout.title.text
    assert {d.name for d in own.data if d.mode == "lines"} == {f"a · {n}" for n in trace_result["tasks"]} | {"b · other"}
    assert "no tasks" in cv.curves_figure({"a": dict(trace_result, tasks={})}).layout.annotations[0].text.lower()


# What the pages call the fixture's allocations: the base model in words, a preset by its name, bare
# layer ranges (no label given) as the layers trained.
READABLE = {"base": "base model", "train-shallow": "train-shallow", "0-1,3": "train layers 0-1,3"}


def test_experiment_figures_and_tables_come_from_the_runner_result(experiment_result):
    result = experiment_result
    bench = ev.benchmarks(result)[0]
    fig = ev.scores_figure(result)
    bars = fig.data[0]
    assert list(bars.x) == [READABLE[r["allocation"]] for r in result["table"]]
    assert list(bars.y) == pytest.approx([r["benchmarks"][bench]["mean"] for r in result["table"]])
    loss = ev.loss_figure(None, result)
    legend = {t["slug"]: f"{READABLE[t['allocation_spec']]} · seed {t['seed']}" for t in result["trials"]}
    assert {d.name for d in loss.data} == set(legend.values())
    by_name = {d.name: d for d in loss.data}
    for trial in result["trials"]:
        assert list(by_name[legend[trial["slug"]]].y) == pytest.approx([l for _, l in trial["training"]["loss_curve"]])
    drift = ev.drift_figure(result)
    assert drift.data[0].name == legend[result["trials"][0]["slug"]]
    assert list(drift.data[0].y) == pytest.approx(result["trials"][0]["drift"]["blocks"])
    header, rows = ev.results_table(result)
    assert [r[0] for r in rows] == [READABLE[a] for a in ("base", "train-shallow", "0-1,3")]
    assert rows[1][1] == result["table"][1]["ranges"]
    s_header, s_rows = ev.significance_table(result, bench)
    assert len(s_rows) == len(result["statistics"][bench]["comparisons"]) == 3
    first = result["statistics"][bench]["comparisons"][0]
    assert s_rows[0][2] == f"{first['diff']:+.3f}"
    assert s_rows[0][:2] == [READABLE[first["a"]], READABLE[first["b"]]]
    assert not any(cell in ("0-1,3", "base") for row in s_rows for cell in row[:2])
    j_header, j_rows = ev.subject_table(result, bench)
    assert j_header == ["subject"] + [READABLE[a] for a in ("base", "train-shallow", "0-1,3")] and j_rows
    retrace = ev.retrace_figure(result)
    changes = [d for d in retrace.data if d.name.endswith("change")]
    assert list(changes[0].y) == pytest.approx(result["trials"][0]["retrace"]["change"]["mean_js_change"])
    c_header, c_rows = ev.particle_change_table(result)
    assert len(c_rows) == len(result["trials"])
    prov = dict(ev.provenance_rows({"result": result, "provenance": {"model_fingerprint": "abc", "code_version": "9"}}))
    assert prov["model fingerprint (sha256)"] == "abc" and prov["code version"] == "9" and prov["seeds"] == "1, 2"


def test_live_metrics_win_over_the_stored_curves(experiment_result):
    metrics = {"trials": {"train-shallow-seed1": [{"step": 1, "loss": 5.0}, {"step": 2, "loss": 4.5, "eval_loss": 4.8}]}}
    fig = ev.loss_figure(metrics, experiment_result)
    assert [list(d.y) for d in fig.data] == [[5.0, 4.5], [4.8]]
    assert "No training steps" in ev.loss_figure({"trials": {}}).layout.annotations[0].text
    # Whole-step ticks: two steps get ticks 1 and 2 (not 1, 1.2, ... printed as 1, 1, 1, 2, 2).
    assert (fig.layout.xaxis.tick0, fig.layout.xaxis.dtick, fig.layout.xaxis.tickformat) == (0, 1, "d")


def test_step_ticks_are_whole_and_about_eight():
    assert [ev.step_dtick(span) for span in (0, 1, 7, 8, 9, 40, 100, 1000, 4990)] == [1, 1, 1, 1, 2, 5, 20, 200, 1000]
    for span in range(0, 5000, 37):
        dtick = ev.step_dtick(span)
        # The smallest such spacing: the next smaller one (at most 2.5x smaller) would give more than 8 ticks.
        assert dtick >= 1 and span / dtick <= 8 and (dtick == 1 or span / dtick > 8 / 2.5 - 1e-9)


def test_figures_take_the_engine_result_object_too(trace_result):
    """From a notebook: ``tv.task_heatmap(result)`` with the engine's TraceResult itself."""
    from layertracer.results import TraceResult

    obj = TraceResult.from_dict(trace_result)
    assert tv.task_heatmap(obj).to_dict()["data"][0]["z"] == tv.task_heatmap(trace_result).to_dict()["data"][0]["z"]
    assert tv.plan_figure(obj).layout.title.text == tv.plan_figure(trace_result).layout.title.text


def test_compare_labels_are_short(trace_result, dash_app):
    from frontend.pages.compare import _ids, label

    assert label("0123456789abcdef", trace_result) == "01234567 · " + trace_result["model"]["source"].rstrip("/").rsplit("/", 1)[-1]
    assert _ids("a, b,,c") == ["a", "b", "c"] and _ids(["a", " b "]) == ["a", "b"]


def test_every_figure_draws_the_same_from_the_overview(trace_result, hybrid_trace_result):
    """The trace page draws from the API's overview and one task's prompts: every figure, its hover and
    its exported rows must be exactly what the whole result gives."""
    import json

    from layertracer.spec.views import trace_overview

    for result in (trace_result, hybrid_trace_result):
        overview = json.loads(json.dumps(trace_overview(result)))
        assert not tv.has_prompts(next(iter(overview["tasks"].values())))
        window = [1, tv.num_layers(result) - 1]
        for normalized in (False, True):
            for metric in ("prob", "rank", "entropy"):
                assert tv.task_heatmap(overview, metric, normalized=normalized, window=window).to_json() == \
                    tv.task_heatmap(result, metric, normalized=normalized, window=window).to_json()
            for draw in (tv.stability_figure, tv.similarity_figure, tv.plan_figure):
                assert draw(overview, normalized=normalized).to_json() == draw(result, normalized=normalized).to_json()
            assert tv.position_grid(overview, normalized=normalized).to_json() == \
                tv.position_grid(result, normalized=normalized).to_json()
        for task, data in result["tasks"].items():
            merged = tv.with_task(overview, task, data)
            assert tv.prompt_heatmap(merged, task, "rank").to_json() == tv.prompt_heatmap(result, task, "rank").to_json()
            assert tx.rows_for(merged, "prompts", metric="entropy", task=task) == \
                tx.rows_for(result, "prompts", metric="entropy", task=task)
            assert "not loaded" in tv.prompt_heatmap(overview, task).layout.annotations[0].text
        for what in ("tasks", "stability", "similarity", "plan", "position"):
            assert tx.rows_for(overview, what, metric="rank") == tx.rows_for(result, what, metric="rank")
            assert tx.json_for(overview, what) == tx.json_for(result, what)
        assert cv.summary_rows({"a": overview}) == cv.summary_rows({"a": result})
        assert cv.curves_figure({"a": overview}).to_json() == cv.curves_figure({"a": result}).to_json()
