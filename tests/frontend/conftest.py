"""Real engine data for the dashboard's figure and callback tests: a tiny model traced by the engine,
and a tiny experiment run by the engine runner (the same JSON the API serves)."""

from __future__ import annotations

import json

import pytest


def _roundtrip(data):
    return json.loads(json.dumps(data))


@pytest.fixture(scope="session")
def trace_result(saved_model):
    """The TraceResult JSON of a 4-layer Qwen3 traced on three tasks with two perturbations."""
    import layertracer as lt
    from layertracer.tasks.sets import load_tasks

    loaded = lt.load_model(str(saved_model("qwen3")), device="cpu", dtype="float32")
    result = lt.trace(loaded, load_tasks("antonyms_en,country_capital_zh,plural_en", limit=6),
                      perturbations=["skip", "mask:keep=0.5"], options=lt.TraceOptions(batch_size=8))
    return _roundtrip(result.to_dict())


@pytest.fixture(scope="session")
def hybrid_trace_result(saved_model):
    """A Jamba (attention + SSM blocks) trace: block kinds on the depth axis."""
    import layertracer as lt
    from layertracer.tasks.sets import load_tasks

    loaded = lt.load_model(str(saved_model("jamba")), device="cpu", dtype="float32")
    result = lt.trace(loaded, load_tasks("antonyms_en", limit=3), perturbations=["skip"],
                      options=lt.TraceOptions(batch_size=4, similarity=False))
    return _roundtrip(result.to_dict())


@pytest.fixture(scope="session")
def model_info(saved_model):
    """What GET /models/{id} reports as info, measured on the real model: per-block parameter counts etc."""
    import layertracer as lt

    loaded = lt.load_model(str(saved_model("qwen3")), device="cpu", dtype="float32")
    adapter, model = loaded.adapter, loaded.model
    blocks = [sum(p.numel() for p in block.parameters()) for block in adapter.blocks]
    embed = sum(p.numel() for p in model.get_input_embeddings().parameters())
    head = sum(p.numel() for p in adapter.head.parameters())
    final = sum(p.numel() for m in adapter.final_modules for p in m.parameters())
    return {"architecture": type(model).__name__, "num_layers": len(blocks), "block_kinds": ["attention"] * len(blocks),
            "num_parameters": sum(p.numel() for p in model.parameters()), "block_parameters": blocks,
            "embedding_parameters": embed, "head_parameters": head, "final_norm_parameters": final}


@pytest.fixture(scope="session")
def experiment_result(saved_model, tmp_path_factory):
    """The engine runner's result of a tiny experiment (two allocations, two seeds, re-traced)."""
    from layertracer.demo.world import build_world
    from layertracer.experiments.runner import run_experiment
    from layertracer.experiments.spec import ExperimentSpec

    world = build_world(tmp_path_factory.mktemp("world"), new_count=12, repeats=2)
    spec = ExperimentSpec(
        model=str(saved_model("qwen3")), corpus=str(world.new_corpus), allocations=["train-shallow", "0-1,3"],
        seeds=[1, 2], benchmarks=world.benchmarks[:1], steps=2, batch_size=4, block_size=32, lr=1e-2, warmup_steps=1,
        eval_shots=1, eval_limit=2, trace_tasks="antonyms_en", trace_limit=3, checkpoint_every=0, device="cpu",
        dtype="float32",
    )
    return _roundtrip(run_experiment(spec, tmp_path_factory.mktemp("exp")))


@pytest.fixture(scope="session", autouse=True)
def dash_app():
    """The dashboard app (pages registered, so page modules import); its API URL points nowhere."""
    from frontend.app import create_dash

    return create_dash(api_url="http://127.0.0.1:9")


@pytest.fixture(scope="module")
def driver():
    """A fresh headless Chromium for a browser test module (None when Chromium is not installed; the
    modules skip then). A module whose tests download files defines its own, with a downloads folder."""
    import browser

    d = browser.new_driver()
    yield d
    browser.quit_driver(d)
