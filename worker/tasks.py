"""The Celery tasks ``inspect.run``, ``trace.run``, ``experiment.run`` and ``lens.run``: each takes a job id.

One run of a job (``execute``):

1. claim the job in the database with a lease (``backend.jobs.claim_job``). If the claim fails (another
   worker holds a live lease, or the job is finished or cancelled) the task returns at once, so a
   re-delivered message never runs a job twice at the same time;
2. a heartbeat thread extends the lease every ``heartbeat_seconds`` and stores progress (percent, stage,
   ETA), log lines, training metrics and partial results; it learns about cancel requests;
3. the engine runs (``worker.runners``) with a progress sink that raises ``Cancelled`` once a cancel
   was requested (``LeaseLost`` when the lease went to someone else, ``Shutdown`` when the worker
   stops); a trial polls the same flags between optimizer steps and checkpoints before it stops;
4. the result goes through ``backend.results`` (a ``lens`` job's, which fills no row, into the job's own
   ``result``), then ``finish_job`` marks the job succeeded; an error
   marks it failed with a one-line reason; a cancel marks it cancelled.

Experiments run in ``<data_dir>/jobs/<job_id>/``: a re-queued job (its worker died) resumes from the
trials' checkpoints there.
"""

from __future__ import annotations

import functools
import logging
import shutil
import threading
import time
from typing import Any, Callable, Optional

from celery.exceptions import Reject

from backend import jobs as job_fns
from backend import results as result_fns
from backend.db.session import session_scope
from backend.settings import Settings, get_settings
from layertracer.progress import line_seconds
from layertracer.spec.jobs import JobSpecError, parse_job_spec
from worker import runners
from worker.app import app, shutting_down
from worker.control import JobControl, ProgressState, append_run_log, engine_for, one_line, release, worker_id
from worker.runners import Cancelled, Interrupted, LeaseLost, Shutdown

log = logging.getLogger("layertracer.worker")


@app.task(name="inspect.run", ignore_result=True)
def inspect_run(job_id: str) -> dict[str, Any]:
    """Introspect a registered model (architecture, blocks, parameter counts, fingerprint)."""
    return execute(job_id)


@app.task(name="trace.run", ignore_result=True)
def trace_run(job_id: str) -> dict[str, Any]:
    """Trace a model on task sets and store the result."""
    return execute(job_id)


@app.task(name="experiment.run", ignore_result=True)
def experiment_run(job_id: str) -> dict[str, Any]:
    """Run (or resume) a trial or an experiment and store the result."""
    return execute(job_id)


@app.task(name="lens.run", ignore_result=True)
def lens_run(job_id: str) -> dict[str, Any]:
    """The live logit lens of one prompt (``worker.lens``); the result is stored on the job."""
    return execute(job_id)


# -- one job -----------------------------------------------------------------------------------------
class Sink:
    """The engine's progress callback for one job: records progress, logs stage changes, and raises
    when the job must stop. ``raise_in_training=False`` leaves training steps to ``should_stop``, so a
    trial checkpoints before it stops instead of losing the steps since the last checkpoint."""

    def __init__(self, control: JobControl, *, raise_in_training: bool = True) -> None:
        self.control = control
        self.raise_in_training = raise_in_training
        self.logged: set[str] = set()

    def stop_reason(self) -> Optional[Interrupted]:
        if self.control.lost.is_set():
            return LeaseLost("the lease went to another worker")
        if self.control.lease_at_risk():
            return LeaseLost("the lease could not be renewed in time")
        if self.control.cancelled.is_set():
            return Cancelled("cancelled")
        if shutting_down.is_set():
            return Shutdown("the worker is shutting down")
        return None

    def should_stop(self) -> bool:
        return self.stop_reason() is not None

    def __call__(self, event) -> None:
        self.control.progress.update(event)
        if event.stage not in self.logged:  # a trace alternates stages per batch: log each one once
            self.logged.add(event.stage)
            self.control.log(f"stage {event.stage}")
        if not self.raise_in_training and event.work == "train":
            return
        reason = self.stop_reason()
        if reason is not None:
            raise reason


def _model_of(session, job) -> dict[str, Any]:
    """{"source", "trust_remote_code", "id"} of the model a job's resource points at (or {})."""
    from backend.db.models import Experiment, Model, Trace

    kind, resource = job.resource_kind, job.resource_id
    model = None
    if job.kind == "lens":  # the model it names (the API checked it: the trace's own, or a registered one)
        model = session.get(Model, (job.spec or {}).get("model_id") or "")
    elif kind == "model" and resource:
        model = session.get(Model, resource)
    elif kind == "trace" and resource:
        row = session.get(Trace, resource)
        model = row.model if row is not None else None
    elif kind in ("experiment", "trial") and resource:
        row = session.get(Experiment, resource)
        model = row.model if row is not None else None
    if model is None:
        return {}
    return {"id": model.id, "source": model.source, "trust_remote_code": bool(model.trust_remote_code)}


def runner_spec(spec: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """The job's stored spec with the model resolved to {"source", "trust_remote_code"}: the API stores
    a model id in the spec, the model row holds the source (the worker re-confines it to the roots)."""
    out = dict(spec)
    if model:
        out["model"] = {"source": model["source"], "trust_remote_code": model["trust_remote_code"]}
    elif isinstance(out.get("model"), str) and not out.get("model"):
        out.pop("model")
    out.pop("model_id", None)
    return out


def _task_set_resolver(settings: Settings) -> Callable[[str], Optional[Any]]:
    """Name or id -> an uploaded set's items (each with its ``task``; the set's name by default)."""
    from backend.tasksets import find_task_set

    def resolve(ref: str) -> Optional[list[dict[str, Any]]]:
        with session_scope(engine_for(settings.database_url)) as session:
            row = find_task_set(session, ref)
            if row is None or row.builtin or not row.items:
                return None
            return [{**item, "task": item.get("task") or row.name} for item in row.items]

    return resolve


class _Buffer:
    """Training metrics and partial results collected by the engine thread, written by the heartbeat."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.metrics: dict[str, list[dict[str, Any]]] = {}
        self.partial: dict[str, Any] = {}

    def add_step(self, trial: str, metrics) -> dict[str, Any]:
        row = {
            "step": metrics.step, "loss": metrics.loss, "lr": metrics.lr, "tokens_per_s": metrics.tokens_per_s,
            "grad_norm": metrics.grad_norm, "eval_loss": metrics.eval_loss, "elapsed_s": metrics.elapsed_s,
        }
        self.add_row(trial, row)
        return row

    def add_row(self, trial: str, row: dict[str, Any]) -> None:
        with self.lock:
            self.metrics.setdefault(trial, []).append(row)

    def add_partial(self, **values: Any) -> None:
        with self.lock:
            self.partial.update(values)

    def flush(self, session, *, kind: str, resource_id: Optional[str]) -> None:
        with self.lock:
            metrics, self.metrics = self.metrics, {}
            partial, self.partial = self.partial, {}
        if not resource_id:
            return
        try:
            for trial, rows in metrics.items():
                result_fns.append_train_metrics(session, experiment_id=resource_id, trial=trial, rows=rows)
            if partial:
                result_fns.store_partial(session, kind=kind, resource_id=resource_id, partial=partial)
        except Exception:
            # Put them back: the next beat (or the final flush) tries again.
            with self.lock:
                for trial, rows in metrics.items():
                    self.metrics[trial] = rows + self.metrics.get(trial, [])
                self.partial = {**partial, **self.partial}
            raise


class MetricsJournal:
    """Every optimizer step's metrics, appended to a JSON-lines file in the job's folder as they come.

    The database gets them once per heartbeat; a worker killed between two beats would lose the steps
    in between, and its successor resumes from the last checkpoint, after them. The successor replays
    this file first, so every step ever trained has its row (a step trained twice keeps the later one:
    rows are upserted by step, and the file is in time order).
    """

    def __init__(self, path) -> None:
        self.path = path

    def read(self) -> list[tuple[str, dict[str, Any]]]:
        import json

        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                rows.append((record["trial"], record["row"]))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by the kill
        return rows

    def append(self, trial: str, row: dict[str, Any]) -> None:
        import json

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"trial": trial, "row": row}) + "\n")


def execute(job_id: str, settings: Optional[Settings] = None) -> dict[str, Any]:
    """Claim and run one job; returns {"job_id", "status"} (status "skipped" when not claimed)."""
    settings = settings or get_settings()
    if shutting_down.is_set():
        # A worker that is stopping takes no new job: not even the one it has just released and
        # re-sent (the solo pool may read one more message before it exits), which would load the
        # model again only to be stopped. The message goes back to the queue, unclaimed, for the next.
        log.info("job %s: not started, the worker is shutting down; back to the queue", job_id)
        raise Reject("the worker is shutting down", requeue=True)
    engine = engine_for(settings.database_url)
    me = worker_id()
    claimed_at = time.monotonic()  # before the claim: the lease surely lasts until this + lease_seconds
    with session_scope(engine) as session:
        job = job_fns.claim_job(session, job_id=job_id, worker_id=me, lease_seconds=settings.lease_seconds)
        if job is None:
            log.info("job %s not claimed (running elsewhere, finished or cancelled)", job_id)
            return {"job_id": job_id, "status": "skipped"}
        kind, attempt = job.kind, job.attempts
        resource_id = job.resource_id
        try:  # the stored spec, parsed once by its kind's model (layertracer.spec.jobs)
            typed = parse_job_spec(kind, job.spec or {})
        except JobSpecError as exc:
            typed, spec_error = None, str(exc)
        spec = runner_spec(typed.model_dump(), _model_of(session, job)) if typed is not None else {}
    append_run_log(settings, job_id, "start", worker=me, attempt=attempt, kind=kind)
    buffer = _Buffer()
    partial_kind = "experiment" if kind == "experiment" else "trace"
    control = JobControl(
        settings, engine, job_id, me,
        ProgressState(lines=lambda line: log.info("job %s %s", job_id, line), interval=line_seconds()),
        flush=lambda s: buffer.flush(s, kind=partial_kind, resource_id=resource_id),
    )
    control.lease_until = claimed_at + settings.lease_seconds
    control.log(f"attempt {attempt} started on {me}")
    control.start()
    status, error, outcome = "failed", None, None
    try:
        if typed is None:
            raise runners.LayerTracerError(spec_error)
        outcome = _run(kind, spec, settings, job_id, control, buffer)
        status = "succeeded"
    except LeaseLost:
        status = "lost"
    except Shutdown:
        status = "interrupted"
    except Cancelled:
        status = "cancelled"
    except Exception as exc:  # any failure ends the job with its reason; the worker lives on
        error = one_line(exc)
        log.warning("job %s failed: %s", job_id, error)
        if not isinstance(exc, runners.LayerTracerError):
            log.exception("job %s: unexpected error", job_id)
    finally:
        control.progress.close()
        control.log(f"attempt {attempt}: {status}" + (f" ({error})" if error else ""))
        control.stop()
    final = _finish(settings, engine, job_id, me, kind, resource_id, status, error, outcome, buffer, control)
    append_run_log(settings, job_id, "end", worker=me, attempt=attempt, status=final)
    return {"job_id": job_id, "status": final}


def _run(kind: str, spec: dict[str, Any], settings: Settings, job_id: str, control: JobControl, buffer: _Buffer):
    roots = [str(r) for r in settings.model_roots] + [str(settings.data_dir)]
    model = spec.get("model")
    if isinstance(model, dict) and model.get("trust_remote_code") and not settings.allow_remote_code:
        # The API refuses such a model already; a row written some other way must not run code here either.
        raise runners.LayerTracerError("this worker does not run a model folder's own code "
                                       "(trust_remote_code): LAYERTRACER_ALLOW_REMOTE_CODE is off")
    from worker import lens

    if kind == "lens":
        return lens.run_lens(spec, roots=roots, progress=Sink(control), lens_cache=settings.tuned_lens_cache_dir)
    lens.forget()  # a model kept for the live lens gives its memory to this job
    if kind == "inspect":
        return runners.run_inspect(spec, roots=roots, progress=Sink(control))
    if kind == "trace":
        # A run stopped part-way (killed worker, lost lease, shutdown, cancel then retry) resumes from here.
        checkpoint = settings.jobs_dir / job_id / "trace-checkpoint.npz"
        offload = settings.jobs_dir / job_id / "offload"  # a placement's disk offload, this job's alone
        try:
            result = runners.run_trace(spec, roots=roots, task_set=_task_set_resolver(settings), progress=Sink(control),
                                       checkpoint=checkpoint, checkpoint_every_s=settings.trace_checkpoint_seconds,
                                       offload_folder=offload, lens_cache=settings.tuned_lens_cache_dir)
        finally:
            shutil.rmtree(offload, ignore_errors=True)
        resumed = int((result.get("timings") or {}).get("resumed_prompts") or 0)
        if resumed:
            control.log(f"resumed from the checkpoint of an earlier attempt: {resumed} prompts were done")
        return result
    if kind == "experiment":
        sink = Sink(control, raise_in_training=False)
        journal = MetricsJournal(settings.jobs_dir / job_id / "metrics.jsonl")
        # Steps an earlier (killed) run trained but never flushed to the database: store them too.
        for trial, row in journal.read():
            buffer.add_row(trial, row)

        def on_step(trial: str, metrics) -> None:
            journal.append(trial, buffer.add_step(trial, metrics))

        # The runner hands over its partial results (the baseline, then each trial as it ends); the
        # heartbeat stores them with the next beat.
        processes = int(spec.get("processes") or 1)
        if processes > 1:  # torchrun as a child process group; the lease and the database stay here
            from worker.group import run_experiment_group

            control.log(f"starting {processes} processes (torchrun)")
            run = functools.partial(run_experiment_group, processes=processes)
        else:
            run = runners.run_experiment
        result = run(
            spec, out_dir=settings.jobs_dir / job_id, roots=roots, progress=sink, on_step=on_step,
            should_stop=sink.should_stop, on_partial=lambda values: buffer.add_partial(**values),
            corpus_cache=settings.corpus_cache_dir,
        )
        if result.get("status") == "stopped":
            reason = sink.stop_reason()
            raise reason if reason is not None else Cancelled("stopped")
        return result
    raise runners.LayerTracerError(f"unknown job kind {kind!r}")


def _finish(settings, engine, job_id, me, kind, resource_id, status, error, outcome, buffer, control) -> str:
    """Store the outcome and end the job; returns the final status (or why nothing was written)."""
    if status == "lost":  # the job is someone else's now: write nothing
        return status
    if status == "interrupted":  # the worker is stopping: back to the queue at once, for the next worker
        try:
            with session_scope(engine) as session:
                buffer.flush(session, kind="experiment" if kind == "experiment" else "trace", resource_id=resource_id)
        except Exception as exc:
            log.warning("job %s: could not store the last metrics: %s", job_id, one_line(exc))
        released = release(settings, job_id, me, kind, engine=engine)
        # Not released (cancel requested meanwhile, or lost): the lease lapses and the reaper ends it.
        return "released" if released else status
    with session_scope(engine) as session:
        if not job_fns.lease_held(session, job_id=job_id, worker_id=me):
            return "lost"
        try:
            buffer.flush(session, kind="experiment" if kind == "experiment" else "trace", resource_id=resource_id)
        except Exception as exc:  # metrics are nice to have; the result and the state matter more
            log.warning("job %s: could not store the last metrics: %s", job_id, one_line(exc))
            session.rollback()
        if status == "succeeded":
            try:
                _store(session, kind, resource_id, outcome)
            except Exception as exc:
                session.rollback()
                status, error = "failed", f"storing the result failed: {one_line(exc)}"
        log_line = f"finished: {status}" + (f" ({error})" if error else "")
        job_fns.heartbeat(session, job_id=job_id, worker_id=me, log=log_line + "\n",
                          lease_seconds=settings.lease_seconds, log_limit=settings.log_tail_chars)
        kept = outcome if kind == "lens" and status == "succeeded" else None  # fills no row: kept on the job
        if not job_fns.finish_job(session, job_id=job_id, worker_id=me, status=status, error=error, result=kept):
            return "lost"
    return status


def _store(session, kind: str, resource_id: Optional[str], outcome: dict[str, Any]) -> None:
    if not resource_id:
        return
    if kind == "inspect":
        result_fns.store_model_info(session, model_id=resource_id, info=outcome, fingerprint=outcome.get("fingerprint"))
    elif kind == "trace":
        result_fns.store_trace_result(session, trace_id=resource_id, result=outcome)
    elif kind == "experiment":
        result_fns.store_experiment_result(session, experiment_id=resource_id, result=outcome,
                                           code_version=outcome.get("version"))
