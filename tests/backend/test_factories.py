"""The backend tests' result dicts (backend_factories.py) are real TraceResults: built through the
engine's own types and serializer, and shaped key for key like the result of a real trace."""

from __future__ import annotations

from typing import Any

from backend_factories import trace_result


def _key_paths(value: Any, path: str = "") -> set[str]:
    """Every dict key's path in ``value`` (lists: their first element stands for all; task names and
    perturbation names and the layers a bootstrap drew, which differ between runs, are written ``*``)."""
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            name = "*" if path.endswith(("/tasks", "/sensitivities", "mean_js_by_task", "/task_particles",
                                         "particle_counts", "particle_bootstrap/counts")) else key
            paths.add(f"{path}/{name}")
            paths |= _key_paths(inner, f"{path}/{name}")
    elif isinstance(value, list) and value:
        paths |= _key_paths(value[0], f"{path}[]")
    return paths


def test_the_factory_result_is_what_a_real_trace_writes(saved_model):
    import layertracer as lt
    from layertracer.results import TraceResult
    from layertracer.tasks.sets import load_tasks

    loaded = lt.load_model(str(saved_model("qwen3")), device="cpu", dtype="float32")
    real = lt.trace(loaded, load_tasks("antonyms_en,plural_en", limit=3), perturbations=["skip", "mask:keep=0.5"],
                    options=lt.TraceOptions(batch_size=4)).to_dict()
    made = trace_result(num_layers=4, tasks=2, prompts=3)
    assert TraceResult.from_dict(made).to_dict() == made  # the engine's types take it and give it back whole
    assert _key_paths(made) == _key_paths(real)
