"""Job runners: a job's spec (a JSON dict) -> the engine call -> a JSON-able result dict.

Plain functions with no database, broker or Celery in them, so they are testable on their own and the
Celery tasks (``worker.tasks``) stay thin. The only side channels are callbacks:

- ``progress(ProgressEvent)``: the engine's progress; a sink may raise :class:`Cancelled` (or any
  :class:`Interrupted`) to stop the computation between units of work;
- ``on_step(trial_slug, StepMetrics)``: per optimizer step of an experiment's trials;
- ``should_stop()``: polled between training steps (a trial then checkpoints before it returns).

Every local path a spec names (model folder, corpus, benchmark folders, task files) must lie under the
configured roots (``layertracer.models.confine_path``: no ``..`` traversal, no symlink escape).
Remote code from a model folder runs only when the spec asks for it (``trust_remote_code``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from layertracer.errors import LayerTracerError, ModelLoadError
from layertracer.progress import ProgressCallback
from layertracer.spec.corpora import is_hub_dataset
from layertracer.spec.loading import PlacementSpec
from layertracer.spec.sources import ModelSource, is_path_like, parse_model_source

# A task-set name -> its items [{"prompt", "target", "task"?}] or a task file (None: no such set).
TaskSetResolver = Callable[[str], Optional[Any]]


class Interrupted(Exception):
    """Raised by a progress sink to stop a running job between units of work."""


class Cancelled(Interrupted):
    """A user asked to cancel the job: the job ends as ``cancelled``."""


class LeaseLost(Interrupted):
    """This worker no longer holds the job's lease (another worker may run it): stop, write nothing."""


class Shutdown(Interrupted):
    """The worker process is shutting down: stop; the lease expires and the reaper re-queues the job."""


# -- paths -------------------------------------------------------------------------------------------
def confine(path: str | os.PathLike, roots: Sequence[str | os.PathLike], what: str = "path") -> Path:
    """``path`` resolved (symlinks too) if inside one of ``roots``, else a one-line LayerTracerError.

    A relative path is taken relative to each root in turn (the first that exists wins), so an API user
    can name ``models/tiny`` under the data folder without knowing where the server keeps it.
    """
    from layertracer.models.loading import confine_path

    if not roots:
        raise LayerTracerError(f"no roots are configured for local {what}s")
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        for root in roots:
            if (Path(root) / candidate).exists():
                candidate = Path(root) / candidate
                break
        else:
            candidate = Path(roots[0]) / candidate
    try:
        return confine_path(candidate, roots)
    except ModelLoadError:
        raise LayerTracerError(f"{what} {str(path)!r} is outside the allowed roots") from None


def model_source(source: str, roots: Sequence[str | os.PathLike]) -> ModelSource:
    """The source to load, by the one model-source rule (``layertracer.spec.sources``): a local folder
    (under the roots, confined: no ``..`` or symlink escape) or a hub id with its revision."""
    if not isinstance(source, str) or not source.strip():
        raise LayerTracerError("the spec names no model source")
    if is_path_like(source.strip()):
        # Confined before it is looked at: a path outside the roots is refused whether it exists or not.
        folder = confine(source.strip(), roots, "model path")
        if not folder.is_dir():
            raise ModelLoadError(f"model path {source!r} does not exist")
        return ModelSource("local", str(folder))
    parsed = parse_model_source(source, roots=roots)
    if not parsed.is_local:
        return parsed
    return ModelSource("local", str(confine(parsed.location, roots, "model path")))


def _spec_model(spec: Mapping[str, Any]) -> tuple[str, bool]:
    """(source, trust_remote_code) from a spec: ``model`` as a string or as {"source": ...}."""
    model = spec.get("model")
    if isinstance(model, Mapping):
        source = model.get("source") or model.get("path")
        trust = bool(model.get("trust_remote_code", spec.get("trust_remote_code", False)))
    else:
        source = model or spec.get("model_source") or spec.get("source")
        trust = bool(spec.get("trust_remote_code", False))
    return str(source or ""), trust


def _allowed_roots(roots: Sequence[str | os.PathLike]) -> list[str]:
    return [str(Path(r).expanduser().resolve()) for r in roots]


# -- inspect -----------------------------------------------------------------------------------------
def run_inspect(
    spec: Mapping[str, Any], *, roots: Sequence[str | os.PathLike], progress: Optional[ProgressCallback] = None
) -> dict[str, Any]:
    """Introspect a model: ``spec`` = {"model" or "source": path or hub id, "trust_remote_code"?: bool}.

    The model is built on the meta device from its config (``layertracer.models.inspection``: no
    weights read, for a hub id only its config; a local folder must hold weight files, and
    ``stored_parameters`` counts the elements in the safetensors headers), with a full CPU load as the
    fallback for a model that cannot be built that way. Returns ``describe_loaded``'s dict plus
    ``weights_loaded`` (bool).
    """
    from layertracer.models.inspection import WEIGHT_SUFFIXES, describe_loaded, inspect_model
    from layertracer.models.loading import load_model
    from layertracer.progress import report

    source, trust = _spec_model(spec)
    parsed = model_source(source, roots)
    source = str(parsed)
    report(progress, "load", 0, 1)
    info: Optional[dict[str, Any]] = None
    if parsed.is_local:
        folder = Path(source)
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"model path {source!r} has no config.json: not a Hugging Face model folder")
        if not any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir()):
            raise ModelLoadError(f"model path {source!r} holds no weight files (*.safetensors or *.bin)")
    try:
        info = inspect_model(source, trust_remote_code=trust,
                             allowed_roots=_allowed_roots(roots) if parsed.is_local else None)
    except LayerTracerError:
        raise
    except Exception:  # noqa: BLE001 - a model that cannot be built on the meta device: load it
        info = None
    if info is None:
        loaded = load_model(
            source, device="cpu", dtype=str(spec.get("dtype") or "bfloat16"), trust_remote_code=trust,
            allowed_roots=_allowed_roots(roots) if parsed.is_local else None,
        )
        info = describe_loaded(loaded)
        info["weights_loaded"] = True
    report(progress, "load", 1, 1)
    return info


# -- trace -------------------------------------------------------------------------------------------
def trace_options(values: Mapping[str, Any]):
    """TraceOptions from a dict; an unknown key is a one-line error (a typo must not be ignored)."""
    from layertracer.tracer import TraceOptions

    known = {f.name for f in dataclasses.fields(TraceOptions)}
    aliases = {"boundary": "plan_boundary", "min_train": "min_train_layers"}
    cleaned = {}
    for key, value in values.items():
        key = aliases.get(key, key)
        if key not in known:
            raise LayerTracerError(f"unknown trace option {key!r}")
        cleaned[key] = value
    return TraceOptions(**cleaned)


def task_names(value: Any) -> list[str]:
    """A task spec as a list of names: "a,b" or ["a", "b"] (or [{"name": "a"}, ...])."""
    if isinstance(value, str):
        names = [part.strip() for part in value.split(",")]
    elif isinstance(value, (list, tuple)):
        names = [str(v.get("name") if isinstance(v, Mapping) else v).strip() for v in value]
    else:
        names = []
    names = [n for n in names if n]
    if not names:
        raise LayerTracerError("the spec names no tasks")
    return names


def tasks_from_items(name: str, items: Sequence[Mapping[str, Any]], *, limit: Optional[int] = None):
    """Task objects from an uploaded set's items ``[{"prompt", "target", "task"?}]``: grouped by their
    ``task`` (items without one form the task ``name``), at most ``limit`` items per task."""
    from layertracer.tasks.sets import Task, TaskItem

    tasks: dict[str, Task] = {}
    for item in items:
        task_name = str(item.get("task") or name)
        task = tasks.setdefault(task_name, Task(name=task_name, items=[], source=f"upload:{name}"))
        if limit is None or len(task.items) < limit:
            task.items.append(TaskItem(prompt=str(item["prompt"]), target=str(item["target"])))
    if not tasks:
        raise LayerTracerError(f"task set {name!r} has no items")
    return list(tasks.values())


def resolve_tasks(
    names: Sequence[str],
    *,
    shots: int = 3,
    limit: Optional[int] = None,
    task_set: Optional[TaskSetResolver] = None,
    roots: Sequence[str | os.PathLike] = (),
):
    """Task objects for names: built-in names, ``all``, or uploaded task sets.

    ``task_set(name)`` returns an uploaded set's items (a list of {"prompt", "target", "task"?}), the
    Path of a task file (which must lie under ``roots``), or None when there is no such set. A name that
    is neither built in nor uploaded is a one-line error.
    """
    from layertracer.tasks.sets import BUILTIN_TASKS, builtin_task, load_task_file

    tasks = []
    for name in names:
        if name == "all":
            tasks.extend(builtin_task(n, shots=shots, limit=limit) for n in BUILTIN_TASKS)
        elif name in BUILTIN_TASKS:
            tasks.append(builtin_task(name, shots=shots, limit=limit))
        else:
            found = task_set(name) if task_set is not None else None
            if found is None:
                raise LayerTracerError(f"unknown task set {name!r}: neither built in nor uploaded")
            if isinstance(found, (str, os.PathLike)):
                path = confine(found, roots, "task file") if roots else Path(found)
                tasks.extend(load_task_file(path, limit=limit))
            else:
                tasks.extend(tasks_from_items(name, found, limit=limit))
    seen = [t.name for t in tasks]
    duplicates = sorted({n for n in seen if seen.count(n) > 1})
    if duplicates:
        raise LayerTracerError(f"task given twice: {', '.join(duplicates)}")
    return tasks


def run_trace(
    spec: Mapping[str, Any],
    *,
    roots: Sequence[str | os.PathLike],
    task_set: Optional[TaskSetResolver] = None,
    progress: Optional[ProgressCallback] = None,
    checkpoint: Optional[str | os.PathLike] = None,
    checkpoint_every_s: Optional[float] = None,
    offload_folder: Optional[str | os.PathLike] = None,
    lens_cache: Optional[str | os.PathLike] = None,
) -> dict[str, Any]:
    """Trace a model; returns the engine's result JSON (the README's OUT.json schema) as a dict.
    ``lens_cache``: the service's folder of tuned-lens translator files (``<data_dir>/tuned-lens``); an
    ``options.lens`` of ``tuned`` reads the file of the loaded model's fingerprint there, and only there.
    ``checkpoint``: the engine's partial-results file, so a run stopped part-way resumes.
    ``offload_folder``: where a ``placement`` with a device map puts the weights that fit nowhere else.

    spec: {"model": source (or {"source", "trust_remote_code"}), "tasks": names (list or "a,b"),
    "perturbations"?: ["skip", ...], "options"?: TraceOptions fields, "limit"?, "shots"?, "device"?,
    "dtype"?, "trust_remote_code"?, "placement"?: PlacementSpec fields}. ``progress`` receives the engine's events (stage, done, total in
    prompt-units over the whole trace) and may raise :class:`Interrupted` to stop.
    """
    from layertracer.models.loading import load_model
    from layertracer.progress import report
    from layertracer.tracer import trace

    source, trust = _spec_model(spec)
    parsed = model_source(source, roots)
    source = str(parsed)
    options = trace_options(spec.get("options") or {})
    perturbations = spec.get("perturbations", ["skip"])
    if isinstance(perturbations, str):
        perturbations = [p.strip() for p in perturbations.split(",") if p.strip()]
    limit = spec.get("limit")
    tasks = resolve_tasks(
        task_names(spec.get("tasks")),
        shots=int(spec.get("shots", 3)),
        limit=None if limit is None else int(limit),
        task_set=task_set,
        roots=roots,
    )
    report(progress, "load", 0, 1)
    placement = PlacementSpec.model_validate(spec.get("placement") or {})
    loaded = load_model(
        source,
        device=str(spec.get("device") or "auto"),
        dtype=str(spec.get("dtype") or "auto"),
        trust_remote_code=trust,
        allowed_roots=_allowed_roots(roots) if parsed.is_local else None,
        **placement.load_kwargs(None if offload_folder is None else str(offload_folder)),
    )
    report(progress, "load", 1, 1)
    translators = tuned_translators(loaded, options.lens, lens_cache)
    result = trace(loaded, tasks, perturbations=list(perturbations), options=options, progress=progress,
                   checkpoint=checkpoint, checkpoint_every_s=checkpoint_every_s, translators=translators)
    return result.to_dict()


def tuned_translators(loaded, lens: str, lens_cache: Optional[str | os.PathLike]):
    """The translators a ``tuned`` lens reads (None for ``logit``): the file named by the loaded model's
    fingerprint (``layertracer.spec.lens.cached_file``: a checked fingerprint, so the name cannot leave
    the folder) in ``lens_cache``, safetensors only, refused when made for another model."""
    if lens != "tuned":
        return None
    from layertracer.spec.lens import cached_file, train_hint
    from layertracer.tuned_lens import load

    if lens_cache is None:
        raise LayerTracerError("this worker has no tuned-lens cache: the tuned lens is not available here")
    path = cached_file(loaded.info.fingerprint, lens_cache)
    if not path.is_file():
        raise LayerTracerError(f"no tuned lens for this model ({loaded.info.fingerprint}) in the service's cache: "
                               f"train one with `{train_hint(loaded.info.source, path)}`")
    return load(path, loaded.info.fingerprint)


# -- experiments and trials --------------------------------------------------------------------------
def experiment_spec(spec: Mapping[str, Any], *, roots: Sequence[str | os.PathLike]):
    """An ExperimentSpec from a job spec, with every local path confined to ``roots``.

    Accepts the ExperimentSpec fields; ``allocation`` (one) stands for ``allocations`` (a trial);
    ``model`` may be {"source", ...}. Keys the service adds for itself (``name``, ``kind``) are ignored.
    """
    from layertracer.experiments.spec import ExperimentSpec

    data = {k: v for k, v in spec.items() if k not in ("name", "kind", "trust_remote_code", "model_id", "processes")}
    source, trust = _spec_model(spec)
    if trust:
        raise LayerTracerError("trials do not run a model folder's own code (trust_remote_code)")
    data["model"] = str(model_source(source, roots))
    if "allocation" in data:
        data["allocations"] = [data.pop("allocation")]
    if isinstance(data.get("allocations"), str):
        data["allocations"] = [a.strip() for a in data["allocations"].split(",") if a.strip()]
    if isinstance(data.get("seeds"), int):
        data["seeds"] = [data["seeds"]]
    if isinstance(data.get("benchmarks"), str):
        data["benchmarks"] = [b.strip() for b in data["benchmarks"].split(",") if b.strip()]
    if isinstance(data.get("trace_tasks"), (list, tuple)):
        data["trace_tasks"] = ",".join(task_names(data["trace_tasks"]))
    # The service's placement (PlacementSpec: strategies only) as load_model's arguments; its disk
    # offload goes to the job's folder (the runner's out_dir).
    data["placement"] = {k: v for k, v in PlacementSpec.model_validate(data.get("placement") or {}).model_dump().items()
                         if v is not None}
    if not data.get("corpus"):
        raise LayerTracerError("the spec names no corpus")
    if not is_hub_dataset(data["corpus"]):  # a hub dataset is no path: it comes from the worker's HF cache
        data["corpus"] = str(confine(data["corpus"], roots, "corpus"))
    benchmarks = []
    for bench in data.get("benchmarks") or []:
        kind, sep, folder = str(bench).partition(":")
        benchmarks.append(f"{kind}:{confine(folder, roots, 'benchmark folder')}" if sep else bench)
    data["benchmarks"] = benchmarks
    for allocation in data.get("allocations") or []:
        if str(allocation).startswith("from-trace:"):
            confine(str(allocation).split(":", 1)[1], roots, "trace file")
    if data.get("trace_tasks"):
        for name in task_names(data["trace_tasks"]):
            from layertracer.tasks.sets import BUILTIN_TASKS

            if name != "all" and name not in BUILTIN_TASKS:
                raise LayerTracerError(f"trace task {name!r} is not a built-in task (uploaded sets: trace them)")
    spec_obj = ExperimentSpec.from_dict(data)
    spec_obj.validate()
    return spec_obj


def run_experiment(
    spec: Mapping[str, Any],
    *,
    out_dir: str | os.PathLike,
    roots: Sequence[str | os.PathLike],
    progress: Optional[ProgressCallback] = None,
    on_step: Optional[Callable[[str, Any], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    on_partial: Optional[Callable[[dict[str, Any]], None]] = None,
    corpus_cache: Optional[str | os.PathLike] = None,
) -> dict[str, Any]:
    """Run (or resume) an experiment or trial in ``out_dir``; returns the runner's result.json dict.
    ``on_partial`` receives the runner's partial results (``{"baseline": ...}``, ``{"trials": ...}``);
    ``corpus_cache`` is where the tokenized corpus is kept (the service's ``<data_dir>/corpora``).

    ``out_dir`` keeps the baseline, each trial's checkpoints and results: a job run again in the same
    folder skips finished trials and resumes a started one from its last checkpoint. When
    ``should_stop`` stops it early, the result has ``"status": "stopped"``.
    """
    from layertracer.experiments.runner import ExperimentRunner

    spec_obj = experiment_spec(spec, roots=roots)
    runner = ExperimentRunner(spec_obj, out_dir, progress=progress, on_step=on_step, should_stop=should_stop,
                              on_partial=on_partial, corpus_cache=corpus_cache)
    return runner.run()
