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
        (dict(options=lt.TraceOptions(position_task="nope")), "position-view task 'nope'"),
        (dict(options=lt.TraceOptions(position_prompt=99)), "position-view prompt 99 is out of range"),
    ],
)
def test_bad_options(loaded, tasks, kwargs, message):
    with pytest.raises(LayerTracerError, match=message):
        lt.trace(loaded, tasks, **kwargs)


@pytest.mark.parametrize("options, message", [
    (dict(batch_size=0), "trace option batch_size: Input should be greater than or equal to 1"),
    (dict(top_k=0), "trace option top_k: Input should be greater than or equal to 1"),
    (dict(particle_floor=1.5), "trace option particle_floor: Input should be less than or equal to 1"),
    (dict(plan_boundary="max"), "trace option plan_boundary: Input should be 'median' or 'min'"),
])
def test_options_outside_the_spec_are_refused_when_made(options, message):
    with pytest.raises(LayerTracerError, match=message):
        lt.TraceOptions(**options)


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


class _Stop(Exception):
    """What a worker's progress sink raises to stop a trace (cancel, lost lease, shutdown)."""


def _assert_same_numbers(result, expected):
    for name, task in expected.tasks.items():
        np.testing.assert_allclose(result.tasks[name].target_prob, task.target_prob, atol=1e-6)
        np.testing.assert_allclose(result.tasks[name].entropy, task.entropy, atol=1e-5)
        assert result.tasks[name].top_tokens == task.top_tokens
        assert result.tasks[name].task_particle == task.task_particle
    for name, sens in expected.sensitivities.items():
        np.testing.assert_allclose(result.sensitivities[name].js, sens.js, atol=1e-6)
    np.testing.assert_allclose(result.similarity.cka, expected.similarity.cka, atol=1e-5)
    np.testing.assert_allclose(result.similarity.consecutive_cosine, expected.similarity.consecutive_cosine, atol=1e-6)


def test_a_stopped_trace_resumes_from_its_checkpoint_with_the_same_numbers(loaded, tasks, tmp_path):
    """Stopped after 2 of 5 batches, the trace keeps those batches in its checkpoint; run again, it computes
    only the other 3 and gives the numbers of a trace that was never stopped, then removes the file."""
    perts = ["skip", "mask:keep=0.5;draws=2"]
    options = lt.TraceOptions(batch_size=2, **OPTIONS)
    expected = lt.trace(loaded, tasks, perturbations=perts, options=options)
    path = tmp_path / "trace-checkpoint.npz"
    finished_batches = []

    def stop_in_the_third_batch(event):
        if event.stage == "lens":
            finished_batches.append(event.done)
            if len(finished_batches) == 3:
                raise _Stop()

    with pytest.raises(_Stop):
        lt.trace(loaded, tasks, perturbations=perts, options=options, progress=stop_in_the_third_batch, checkpoint=path)
    assert path.is_file()
    with np.load(path, allow_pickle=False) as saved:
        assert int(saved["done_rows"].sum()) == 4  # two whole batches of 2 prompts

    lens_events = []
    result = lt.trace(loaded, tasks, perturbations=perts, options=options, checkpoint=path,
                      progress=lambda e: lens_events.append(e) if e.stage == "lens" else None)
    assert result.timings["resumed_prompts"] == 4
    # One event at the start (the resumed share), then one per batch still to do: 6 prompts in 3 batches.
    assert len(lens_events) == 1 + 3 and lens_events[0].done == 4 * (lens_events[0].total // 10)
    _assert_same_numbers(result, expected)
    assert not path.exists()


def test_a_checkpoint_of_another_trace_or_a_torn_file_is_ignored(loaded, tasks, tmp_path):
    path = tmp_path / "trace-checkpoint.npz"
    options = lt.TraceOptions(batch_size=2, **OPTIONS)

    def stop_after_two_batches(event):
        if event.stage == "lens" and event.done >= 4 * (event.total // 10):
            raise _Stop()

    with pytest.raises(_Stop):
        lt.trace(loaded, tasks, options=options, progress=stop_after_two_batches, checkpoint=path)
    assert path.is_file()
    # Other options (top-k 3): other numbers, so the checkpoint is not used.
    other = lt.TraceOptions(batch_size=2, top_k=3, **OPTIONS)
    result = lt.trace(loaded, tasks, options=other, checkpoint=path)
    assert result.timings["resumed_prompts"] == 0
    _assert_same_numbers(result, lt.trace(loaded, tasks, options=other))
    path.write_bytes(b"PK\x03\x04 not a whole zip file")
    result = lt.trace(loaded, tasks, options=options, checkpoint=path)
    assert result.timings["resumed_prompts"] == 0 and not path.exists()


def test_checkpoints_are_written_while_the_trace_runs(loaded, tasks, tmp_path, monkeypatch):
    """A worker killed outright (no exception to catch) leaves the last periodic checkpoint: a copy of the
    file taken during the third batch, as a kill would leave it, resumes from the two batches before."""
    import shutil

    from layertracer import trace_checkpoint

    monkeypatch.setattr(trace_checkpoint, "CHECKPOINT_EVERY_S", 0.0)  # after every batch,
    monkeypatch.setattr(trace_checkpoint, "MAX_WRITE_SHARE", float("inf"))  # however long writing takes
    options = lt.TraceOptions(batch_size=2, **OPTIONS)
    path, left_by_a_kill = tmp_path / "running.npz", tmp_path / "killed.npz"
    lens_done = []

    def copy_in_the_third_batch(event):
        if event.stage == "lens":
            lens_done.append(event.done)
            if len(lens_done) == 3:
                shutil.copy(path, left_by_a_kill)

    expected = lt.trace(loaded, tasks, options=options, progress=copy_in_the_third_batch, checkpoint=path)
    assert not path.exists() and left_by_a_kill.is_file()
    result = lt.trace(loaded, tasks, options=options, checkpoint=left_by_a_kill)
    assert result.timings["resumed_prompts"] == 4
    _assert_same_numbers(result, expected)


@pytest.mark.parametrize("arch", tiny_models.ARCHITECTURES)
def test_the_recording_holds_each_block_boundary_once(arch, tokenizer):
    """A block's output is the next block's input: the recording keeps references to the one tensor, so
    a batch's recording costs L + 1 boundary states (B, T, d), not 2L. Checked by storage, for every
    architecture the tests build (a model that changed the state between blocks would show here)."""
    loaded = wrap_model(tiny_models.build_model(arch), tokenizer)
    ids = torch.randint(3, 100, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rec = recording_module.record_stack(loaded.model, loaded.adapter, ids)
    storages = {t.untyped_storage().data_ptr() for t in rec.inputs + rec.outputs}
    assert len(storages) == loaded.adapter.num_layers + 1
