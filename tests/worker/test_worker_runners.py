"""worker.runners on tiny saved models: inspect, trace (built-in and uploaded task sets, progress,
interruption), experiments (resume from checkpoints) and path confinement."""

from __future__ import annotations

import json
import os

import pytest

from layertracer.errors import LayerTracerError
from layertracer.tasks.sets import builtin_task
from worker import runners

TRACE_OPTIONS = {"similarity": False, "position_view": False, "bootstrap_resamples": 50}


def test_inspect_reports_blocks_and_parameter_counts_that_add_up(saved_model):
    folder = saved_model("qwen3")
    info = runners.run_inspect({"model": str(folder)}, roots=[folder.parent])
    assert info["architecture"] == "Qwen3ForCausalLM" and info["num_layers"] == 4
    assert info["block_kinds"] == ["attention"] * 4 and info["mixers"] == ["self_attn"] * 4
    assert len(info["block_parameters"]) == 4 and all(n > 0 for n in info["block_parameters"])
    assert not info["tied_embeddings"]
    parts = sum(info["block_parameters"]) + info["embedding_parameters"] + info["head_parameters"] \
        + info["final_norm_parameters"] + info["other_parameters"]
    assert parts == info["num_parameters"]
    assert info["embedding_parameters"] == 384 * 32 == info["head_parameters"]
    assert info["fingerprint"].startswith("sha256:")
    # Built on the meta device: no weights read, and the count agrees with the weight files' headers.
    assert info["weights_loaded"] is False and info["device"] == "meta"
    assert info["stored_parameters"] == info["num_parameters"]
    json.dumps(info)  # plain JSON


def test_inspect_refuses_a_folder_without_weights(saved_model, tmp_path):
    import shutil

    folder = tmp_path / "no-weights"
    shutil.copytree(saved_model("qwen3"), folder, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(LayerTracerError, match="holds no weight files"):
        runners.run_inspect({"model": str(folder)}, roots=[tmp_path])
    (folder / "config.json").unlink()
    with pytest.raises(LayerTracerError, match="has no config.json"):
        runners.run_inspect({"model": str(folder)}, roots=[tmp_path])


def test_inspect_of_a_tied_model_counts_the_shared_weight_once(saved_model):
    folder = saved_model("gpt2")  # GPT-2 ties its head to the input embedding, and has position embeddings
    info = runners.run_inspect({"source": str(folder)}, roots=[folder.parent])
    assert info["tied_embeddings"] and info["stored_parameters"] == info["num_parameters"]
    assert info["other_parameters"] == 256 * 32  # wpe: learned positions
    assert sum(info["block_parameters"]) + info["embedding_parameters"] + info["final_norm_parameters"] \
        + info["other_parameters"] == info["num_parameters"]


def test_paths_outside_the_roots_are_refused(saved_model, tmp_path):
    folder = saved_model("qwen3")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    with pytest.raises(LayerTracerError, match="outside the allowed roots"):
        runners.run_inspect({"model": str(folder)}, roots=[allowed])
    with pytest.raises(LayerTracerError, match="outside the allowed roots"):
        runners.run_inspect({"model": str(allowed / ".." / folder.name)}, roots=[allowed])
    os.symlink(folder, allowed / "escape")  # a symlink inside the root pointing out of it
    with pytest.raises(LayerTracerError, match="outside the allowed roots"):
        runners.run_inspect({"model": str(allowed / "escape")}, roots=[allowed])
    # A relative path is looked up under the roots.
    assert str(runners.model_source(folder.name, [folder.parent])) == str(folder.resolve())
    # Anything else is a hub id, with its revision; a path that does not exist is not one.
    hub = runners.model_source("acme/tiny-qwen@v1", [folder.parent])
    assert (hub.kind, hub.location, hub.revision) == ("hub", "acme/tiny-qwen", "v1")
    with pytest.raises(LayerTracerError, match="does not exist"):
        runners.model_source("models/none/here", [folder.parent])


def test_trace_with_builtin_and_uploaded_sets_streams_progress(saved_model):
    folder = saved_model("qwen3")
    uploaded = {"my-set": [{"prompt": "The opposite of hot is", "target": " cold"},
                           {"prompt": "The opposite of up is", "target": " down"}]}
    events = []
    result = runners.run_trace(
        {"model": {"source": str(folder)}, "tasks": ["antonyms_en", "my-set"], "limit": 2,
         "perturbations": ["skip"], "options": TRACE_OPTIONS},
        roots=[folder.parent], task_set=uploaded.get, progress=events.append,
    )
    assert list(result["tasks"]) == ["antonyms_en", "my-set"]
    assert result["tasks"]["my-set"]["prompts"] == ["The opposite of hot is", "The opposite of up is"]
    assert result["num_layers"] == 4 and len(result["sensitivity"]["mean_js"]) == 4
    assert result["model"]["source"] == str(folder.resolve())
    stages = [e.stage for e in events]
    assert stages[0] == "load" and "lens" in stages and "sensitivity:skip" in stages
    last = events[-1]
    assert last.done == last.total  # the final event says everything was done
    json.dumps(result, allow_nan=False)


def test_items_with_a_task_field_become_separate_tasks():
    tasks = runners.tasks_from_items("set", [
        {"prompt": "a", "target": "b", "task": "one"}, {"prompt": "c", "target": "d"},
        {"prompt": "e", "target": "f", "task": "one"},
    ], limit=1)
    assert [(t.name, len(t.items)) for t in tasks] == [("one", 1), ("set", 1)]


def test_unknown_tasks_and_options_are_one_line_errors(saved_model):
    folder = saved_model("qwen3")
    spec = {"model": str(folder), "tasks": ["no_such_set"]}
    with pytest.raises(LayerTracerError, match="unknown task set 'no_such_set'"):
        runners.run_trace(spec, roots=[folder.parent], task_set=lambda name: None)
    with pytest.raises(LayerTracerError, match="unknown trace option 'batchsize'"):
        runners.run_trace({**spec, "tasks": "antonyms_en", "options": {"batchsize": 3}}, roots=[folder.parent])


def test_a_sink_that_raises_stops_the_trace(saved_model):
    folder = saved_model("qwen3")
    seen = []

    def sink(event):
        seen.append(event)
        if event.stage == "lens":
            raise runners.Cancelled("cancelled")

    with pytest.raises(runners.Cancelled):
        runners.run_trace({"model": str(folder), "tasks": "antonyms_en,synonyms_en", "limit": 8,
                           "options": {**TRACE_OPTIONS, "batch_size": 2}}, roots=[folder.parent], progress=sink)
    assert seen[-1].stage == "lens" and seen[-1].done < seen[-1].total  # stopped after the first batch


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    task = builtin_task("antonyms_en", shots=2)
    path.write_text("\n\n".join(item.prompt + item.target for item in task.items), encoding="utf-8")
    return path


def test_experiment_stops_and_resumes_from_its_checkpoint(saved_model, corpus, tmp_path):
    folder = saved_model("qwen3")
    out = tmp_path / "job"
    spec = {"model": str(folder), "corpus": str(corpus), "allocation": "train-shallow", "seeds": [1],
            "steps": 6, "batch_size": 2, "block_size": 32, "checkpoint_every": 2, "warmup_steps": 1,
            "holdout": 0.0, "device": "cpu", "dtype": "float32"}
    roots = [folder.parent, tmp_path]
    steps: list[tuple[str, int]] = []
    stop_after = {"n": 3}

    def on_step(trial, metrics):
        steps.append((trial, metrics.step))

    stopped = runners.run_experiment(spec, out_dir=out, roots=roots, on_step=on_step,
                                     should_stop=lambda: len(steps) >= stop_after["n"])
    assert stopped["status"] == "stopped" and stopped["trials"] == []
    assert steps == [("train-shallow-seed1", s) for s in (1, 2, 3)]
    # The stop checkpointed step 3; the next run resumes there and runs steps 4-6 only.
    resumed = runners.run_experiment(spec, out_dir=out, roots=roots, on_step=on_step)
    assert resumed["status"] == "complete"
    assert [s for _, s in steps] == [1, 2, 3, 4, 5, 6]
    trial = resumed["trials"][0]
    assert trial["training"]["resumed_from"] == 3 and trial["training"]["steps"] == 6
    assert trial["allocation"]["layers"] == [0, 1]


def test_experiment_paths_are_confined(saved_model, corpus, tmp_path):
    folder = saved_model("qwen3")
    with pytest.raises(LayerTracerError, match="corpus .* outside the allowed roots"):
        runners.experiment_spec({"model": str(folder), "corpus": str(corpus)}, roots=[folder])
    with pytest.raises(LayerTracerError, match="benchmark folder .* outside"):
        runners.experiment_spec({"model": str(folder), "corpus": str(corpus), "benchmarks": ["cmmlu:/etc"]},
                                roots=[folder, tmp_path])
    spec = runners.experiment_spec({"model": str(folder), "corpus": str(corpus), "allocation": "0-1",
                                    "name": "ignored"}, roots=[folder, tmp_path])
    assert spec.allocations == ["0-1"] and spec.corpus == str(corpus.resolve())
    hub = runners.experiment_spec({"model": str(folder), "corpus": "hf:acme/river-corpus:test", "allocation": "0-1"},
                                  roots=[folder])
    assert hub.corpus == "hf:acme/river-corpus:test"  # a hub dataset is read from the HF cache, not the roots


def test_a_trace_placed_by_its_spec_offloads_to_its_folder_and_traces_alike(saved_model, tmp_path):
    """The service's placement (layertracer.spec.loading.PlacementSpec) reaches the engine's loader: a
    CPU budget below the model's size puts blocks on disk, and the numbers are those of the model in
    memory."""
    import numpy as np

    folder = saved_model("qwen3")
    spec = {"model": str(folder), "tasks": ["antonyms_en"], "limit": 3, "device": "cpu", "dtype": "float32",
            "perturbations": ["skip"], "options": {"similarity": False, "position_view": False, "bootstrap_resamples": 20}}
    plain = runners.run_trace(spec, roots=[folder])
    placed = runners.run_trace({**spec, "placement": {"max_memory": "cpu=120KB"}}, roots=[folder],
                               offload_folder=tmp_path / "offload")
    where = placed["model"]["device_map"]  # the result records where each module went
    assert plain["model"]["device_map"] is None and {"cpu", "disk"} <= set(where.values()), where
    np.testing.assert_allclose(np.array(placed["tasks"]["antonyms_en"]["target_prob"], dtype=float),
                               np.array(plain["tasks"]["antonyms_en"]["target_prob"], dtype=float), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.array(placed["sensitivity"]["js"], dtype=float),
                               np.array(plain["sensitivity"]["js"], dtype=float), atol=1e-5, rtol=0)


def test_an_experiment_job_passes_its_placement_to_the_runner(saved_model, corpus, tmp_path):
    folder = saved_model("qwen3")
    spec = runners.experiment_spec({"model": str(folder), "corpus": str(corpus), "allocation": "0-1",
                                    "placement": {"device_map": "auto", "max_memory": None, "load_in": None}},
                                   roots=[folder, tmp_path])
    assert spec.placement == {"device_map": "auto"}
    with pytest.raises(Exception, match="device_map"):
        runners.experiment_spec({"model": str(folder), "corpus": str(corpus), "allocation": "0-1",
                                 "placement": {"device_map": "/etc/passwd"}}, roots=[folder, tmp_path])
