"""The tracer's contract beyond the numbers: progress, JSON round trip, clean models after failures,
batch splitting when memory runs out, and bad options."""

import json

import numpy as np
import pytest
import torch

import layertracer as lt
import tiny_models
from layertracer import recording as recording_module
from layertracer import tracer as tracer_module
from layertracer.errors import LayerTracerError
from layertracer.models import wrap_model

OPTIONS = dict(bootstrap_resamples=50, similarity_max_prompts=16)


@pytest.fixture(scope="module")
def loaded(tokenizer):
    return wrap_model(tiny_models.build_model("llama"), tokenizer, source="llama")


@pytest.fixture(scope="module")
def tasks():
    return lt.load_tasks("antonyms_en,arithmetic_zh", limit=5)


def no_hooks(model) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks for m in model.modules()
    )


def test_progress_is_monotonic_and_complete(loaded, tasks):
    events = []
    lt.trace(loaded, tasks, perturbations=["skip", "mask:keep=0.5;draws=2"],
             options=lt.TraceOptions(batch_size=3, **OPTIONS), progress=events.append)
    done = [e.done for e in events]
    assert done == sorted(done) and len(set(e.total for e in events)) == 1
    assert done[-1] == events[-1].total
    assert {e.stage for e in events} == {"lens", "sensitivity:skip", "sensitivity:mask(keep=0.5)"}


def test_json_round_trip(loaded, tasks, tmp_path):
    result = lt.trace(loaded, tasks, perturbations=["skip", "zero-mlp"], options=lt.TraceOptions(**OPTIONS))
    path = tmp_path / "r.json"
    result.to_json(path)
    again = lt.TraceResult.load(path)
    assert again.to_dict() == result.to_dict()
    assert json.loads(path.read_text())["tasks"]["arithmetic_zh"]["prompts"][0].endswith("等于")
    assert not (tmp_path / "r.json.tmp").exists()


def test_model_is_left_clean_after_a_failure(loaded, tasks, monkeypatch):
    original = recording_module.BlockCall.call
    calls = {"n": 0}

    def failing(self, block, hidden):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("device lost")
        return original(self, block, hidden)

    monkeypatch.setattr(recording_module.BlockCall, "call", failing)
    with pytest.raises(RuntimeError, match="device lost"):
        lt.trace(loaded, tasks, perturbations=["zero-attn"], options=lt.TraceOptions(**OPTIONS))
    assert no_hooks(loaded.model)
    monkeypatch.undo()
    clean = lt.trace(loaded, tasks, perturbations=["zero-attn"], options=lt.TraceOptions(**OPTIONS))
    assert no_hooks(loaded.model) and clean.vulnerable_layer is not None


def test_out_of_memory_splits_the_batch_and_gives_the_same_numbers(loaded, tasks, monkeypatch):
    """A device that cannot hold more than 2 prompts: batches are halved until they fit."""
    expected = lt.trace(loaded, tasks, options=lt.TraceOptions(batch_size=2, **OPTIONS))
    original = tracer_module.record_stack

    def small_device(model, adapter, input_ids):
        if input_ids.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(model, adapter, input_ids)

    monkeypatch.setattr(tracer_module, "record_stack", small_device)
    events = []
    result = lt.trace(loaded, tasks, options=lt.TraceOptions(batch_size=8, **OPTIONS), progress=events.append)
    assert result.timings["oom_batch_splits"] >= 2
    for name in expected.tasks:
        np.testing.assert_allclose(result.tasks[name].target_prob, expected.tasks[name].target_prob, atol=1e-6)
    np.testing.assert_allclose(result.sensitivity.js, expected.sensitivity.js, atol=1e-6)
    assert events[-1].done == events[-1].total


def test_one_prompt_that_does_not_fit_is_a_clear_error(loaded, tasks, monkeypatch):
    def no_memory(model, adapter, input_ids):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(tracer_module, "record_stack", no_memory)
    with pytest.raises(LayerTracerError, match="out of memory on a single prompt"):
        lt.trace(loaded, tasks, options=lt.TraceOptions(**OPTIONS))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(perturbations=["skip", "skip"]), "perturbation given twice"),
        (dict(options=lt.TraceOptions(batch_size=0)), "batch size and top-k must be at least 1"),
        (dict(options=lt.TraceOptions(position_task="nope")), "position-view task 'nope'"),
        (dict(options=lt.TraceOptions(position_prompt=99)), "position-view prompt 99 is out of range"),
    ],
)
def test_bad_options(loaded, tasks, kwargs, message):
    with pytest.raises(LayerTracerError, match=message):
        lt.trace(loaded, tasks, **kwargs)


def test_no_perturbation_means_no_sensitivity(loaded, tasks):
    result = lt.trace(loaded, tasks, perturbations=[], options=lt.TraceOptions(**OPTIONS))
    assert result.sensitivity is None and result.vulnerable_layer is None
    assert result.freeze_plan.evidence["vulnerable_layer"] is None


def test_position_view_matches_the_lens_at_the_answer_position(loaded, tasks):
    result = lt.trace(loaded, tasks, options=lt.TraceOptions(position_task="arithmetic_zh", position_prompt=2, **OPTIONS))
    view = result.position_view
    task = result.tasks["arithmetic_zh"]
    assert view.task == "arithmetic_zh" and view.target_token == task.target_tokens[2]
    last_column = [row[-1] for row in view.target_prob]
    np.testing.assert_allclose(last_column, task.target_prob[2], atol=1e-6)
    assert [row[-1] for row in view.top1_tokens] == [layer[0] for layer in task.top_tokens[2]]
