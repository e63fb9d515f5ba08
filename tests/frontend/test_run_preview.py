"""New experiment's preview (what each allocation trains and its trainable share, against the engine's
own resolution and count on a real model) and the cost estimate before launch; and the toggles, which
now reach every allocation of an experiment that also runs ``full``."""

from __future__ import annotations

import pytest

from frontend import run_form as rf
from frontend import run_preview as rp
from frontend.viz.names import duration


def test_each_allocation_trains_what_the_engine_resolves(model_info, saved_model):
    import layertracer as lt
    from layertracer.training.allocation import count_parameters, resolve_allocation

    loaded = lt.load_model(str(saved_model("qwen3")), device="cpu", dtype="float32")
    allocations = ["train-shallow", "0", "1-3", "full", "from-trace", "0-9"]
    toggles = ["head"]
    rows = rp.allocation_rows(model_info, allocations, toggles)
    assert [r["label"] for r in rows] == allocations
    for row, spec in zip(rows[:4], allocations[:4]):
        # what the API sends: a checked toggle on for every allocation, an unchecked one left to the default
        engine = resolve_allocation(spec, model_info["num_layers"], head=True)
        counted = count_parameters(loaded.model, loaded.adapter, engine)
        assert row["layers"] == list(engine.layers), spec
        assert (row["trainable"], row["total"]) == (counted.trainable, counted.total), spec
        assert row["share"] == pytest.approx(counted.share)
    assert rows[4]["layers"] is None and "freeze plan decides" in rows[4]["note"]
    assert rows[5]["layers"] is None and "does not exist" in rows[5]["note"]
    fig = rp.preview_figure(model_info, rows)
    heat = fig.data[0]
    assert fig.layout.yaxis.type == "category"  # "0" is a label, not a number (the plotly number-axis bug)
    assert list(heat.y) == [f"{r['label']} · {r['share']:.1%}" if r["share"] is not None else f"{r['label']} · ?"
                            for r in rows]
    assert list(heat.z[1]) == [1, 0, 0, 0] and list(heat.z[2]) == [0, 1, 1, 1] and set(heat.z[4]) == {None}


def test_the_experiment_sends_checked_toggles_even_beside_full():
    common = dict(model="m", info={"num_layers": 4}, corpus="c", benchmarks="", raws={})
    body, errors = rf.validate("experiment", allocations=["train-shallow", "full"], toggles=["head"], **common)
    assert errors == [] and body["head"] is True and "embeddings" not in body and "final_norm" not in body
    body, _ = rf.validate("experiment", allocations=["train-shallow", "train-deep"], toggles=["head"], **common)
    assert (body["embeddings"], body["head"], body["final_norm"]) == (False, True, False)


def test_tokens_are_steps_times_batch_times_accumulation_times_block_times_trials():
    assert rp.tokens(100, 8, 2, 256, seeds=3, allocations=4) == 100 * 8 * 2 * 256 * 3 * 4
    assert rp.tokens(None, 8, 1, 256, seeds=1, allocations=1) is None


def test_the_estimate_uses_a_measured_rate_or_says_there_is_none():
    total = 100 * 8 * 1 * 256 * 3 * 3
    with_rate = rp.estimate_text(total, 9, {"tokens_per_s": 2048.0, "run": "demo"})
    assert f"{total:,} training tokens" in with_rate and "9 trials" in with_rate
    assert f"about {duration(total / 2048.0)} of training at the 2,048 tokens/s measured in demo" in with_rate
    without = rp.estimate_text(total, 9, None)
    assert "no time estimate" in without and "tokens/s" in without
    assert rp.estimate_text(None, 0, None).startswith("Cost: give")
    values = {**rf.TRAINING_DEFAULTS, "seeds": "1, 2, 3", "steps": 100, "batch_size": 8, "grad_accum": 1, "block_size": 256}
    assert rf._estimate("experiment", values, "train-shallow\nfull\n\ntrain-deep", None) == (total, 9, None)
    assert rf._estimate("trial", values, "0-1", None)[:2] == (total // 3, 3)


def test_the_rate_is_this_models_latest_finished_run():
    class Api:
        def experiments(self, **params):
            assert params["status"] == "succeeded"
            return {"data": [{"id": "a", "model": {"id": "other"}}, {"id": "b", "name": "mine", "model": {"id": "m1"}},
                             {"id": "c", "model": {"id": "m1"}}]}

        def experiment(self, ident):
            assert ident == "b"  # the newest of this model's; another model's is skipped
            return {"result": {"table": [{"tokens_per_s": {"mean": 1000.0}}, {"tokens_per_s": {"mean": 3000.0}},
                                         {"allocation": "base"}]}}

    assert rp.measured_rate(Api(), "m1") == {"tokens_per_s": 2000.0, "run": "mine"}
    assert rp.measured_rate(Api(), None) is None


def test_the_picker_draws_the_traces_evidence(trace_result, model_info):
    """The trace the plan came from, drawn above the layer strip: its layer sensitivity (the primary
    perturbation's mean JS, scaled into its band), its task particles and its vulnerable layer, from
    the engine's own result."""
    evidence = rf.evidence_from_overview(trace_result, "base")
    fig = rf.strip_figure(model_info, "0-1", [], evidence)
    traces = {t.name: t for t in fig.data[1:]}
    particles = sorted({d["task_particle"] for d in trace_result["tasks"].values() if d["task_particle"] is not None})
    assert list(traces) == ["layer sensitivity"] + (["task particles"] if particles else []) + ["vulnerable layer"]
    js = trace_result["sensitivity"]["mean_js"]
    assert list(traces["layer sensitivity"].y) == pytest.approx([1.15 + 0.8 * v / max(js) for v in js])
    assert list(traces["vulnerable layer"].x) == [trace_result["vulnerable_layer"]]
    # particles (this tiny model's tasks may have none): one triangle per layer, every task named on it
    marked = rf.strip_figure(model_info, "0-1", [], dict(evidence, particles={"a": 1, "b": 1, "c": 3, "d": None}))
    triangles = next(t for t in marked.data if t.name == "task particles")
    assert list(triangles.x) == [1, 3] and "a, b" in triangles.hovertext[0] and "c" in triangles.hovertext[1]
    assert trace_result["freeze_plan"]["train_ranges"] in fig.layout.title.text
    assert [c == "#0072B2" for c in fig.data[0].marker.color] == [True, True, False, False]  # the bars stay the picker
    assert len(rf.strip_figure(model_info, "0-1", []).data) == 1  # no trace: the bars alone
