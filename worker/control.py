"""What runs beside a job in a worker process: the heartbeat thread (lease, progress, cancel), the
reaper thread (re-queues jobs whose worker died) and the start-up chores (migrations, task sets).

Threads, not processes: the job runs in the worker's main thread (solo pool); these threads only talk
to the database and the broker, which release the GIL while they wait.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional

from sqlalchemy import Engine

from backend import jobs as job_fns
from backend.db.session import make_engine, session_scope
from backend.settings import Settings
from layertracer.progress import LINE_SECONDS, LinePrinter, ProgressTracker
from worker.processes import process_gone

log = logging.getLogger("layertracer.worker")


@lru_cache(maxsize=4)
def engine_for(url: str) -> Engine:
    """One SQLAlchemy engine per process and database URL (connection pools are per process)."""
    return make_engine(url)


def _pid_namespace() -> str:
    """The inode of this process's pid namespace ("" where unknown): two containers on one host name
    can share a host name but not a pid namespace, so a pid is only compared within one."""
    try:
        return os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        return ""


@lru_cache(maxsize=1)
def worker_id() -> str:
    """This process's identity in leases: ``host:pid:random:pidns`` (a restarted worker is a new identity)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{_pid_namespace()}"


def dead_local_holders(session) -> list[str]:
    """Running jobs held by a worker of this host and pid namespace whose process is gone (killed, out
    of memory): their leases end now, so the reaper re-queues them at once instead of a lease later."""
    from sqlalchemy import select, update

    from backend.db.models import Job
    from backend.db.types import utcnow

    host, namespace = socket.gethostname(), _pid_namespace()
    if not namespace:
        return []
    rows = session.execute(select(Job.id, Job.worker_id).where(Job.status == "running",
                                                                Job.worker_id.like(f"{host}:%"))).all()
    dead = []
    for job_id, holder in rows:
        parts = (holder or "").split(":")
        if len(parts) == 4 and parts[3] == namespace and parts[1].isdigit() and process_gone(int(parts[1])):
            dead.append(job_id)
    if dead:
        session.execute(update(Job).where(Job.id.in_(dead), Job.status == "running")
                        .values(lease_expires_at=utcnow() - timedelta(seconds=1))
                        .execution_options(synchronize_session=False))
        session.commit()
    return dead


def one_line(exc: BaseException) -> str:
    """A one-line reason for a failed job: the message's first line (type name for a bare exception)."""
    from layertracer.errors import LayerTracerError

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, LayerTracerError) and text:
        return text[:500]
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


# -- progress ----------------------------------------------------------------------------------------
class ProgressState:
    """The latest progress of the running job, written by the engine thread, read by the heartbeat.

    One rule with the CLI and the dashboard (``layertracer.spec.progress``): the job's share done is the
    event's own ``fraction`` where the engine gives one (an experiment's parts), else done / total, and
    the time left comes from the rate measured over the last events, never from the job's start (which
    would count model loading). The stored progress is ``{stage, done, total, percent, eta_seconds}``
    (percent: the share done, 0-100, two decimals) plus, for a run in parts, ``item``, ``work``, ``index``
    and ``count`` (see ``layertracer.progress.ProgressEvent``).

    ``lines``: where plain progress lines go (the worker's log, so ``docker logs`` shows a long job move):
    each stage has its own printer, as each stage is its own bar in the CLI, so a trace whose stages
    alternate batch by batch (lens, then each perturbation) writes a line when a stage first starts and
    then at most one every ``interval`` seconds a stage, not three lines a batch; ``clock``: monotonic
    seconds.
    """

    PART_FIELDS = ("item", "work", "index", "count")

    def __init__(self, *, lines: Optional[Callable[[str], None]] = None, interval: float = LINE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lock = threading.Lock()
        self.tracker = ProgressTracker(clock)
        self.lines, self.interval, self.clock = lines, interval, clock
        self.printers: dict[str, LinePrinter] = {}  # stage -> its printer
        self.value: dict[str, Any] = {"stage": "starting", "done": 0, "total": 0, "percent": 0.0, "eta_seconds": None}
        self.stage = "starting"
        self.fraction = 0.0

    def update(self, event) -> bool:
        """Record an engine ProgressEvent; returns whether the stage changed (worth a log line)."""
        with self.lock:
            reading = self.tracker.update(event)
            if reading.fraction is not None:
                self.fraction = reading.fraction
            changed = event.stage != self.stage
            self.stage = event.stage
            self.value = {
                "stage": event.stage,
                "done": int(event.done),
                "total": int(event.total),
                "percent": round(100.0 * self.fraction, 2),
                "eta_seconds": None if reading.eta_seconds is None else round(reading.eta_seconds, 1),
                **{key: getattr(event, key) for key in self.PART_FIELDS if getattr(event, key) is not None},
            }
            if self.lines is not None:
                printer = self.printers.get(event.stage)
                if printer is None:
                    printer = self.printers[event.stage] = LinePrinter(self.lines, interval=self.interval, clock=self.clock)
                printer(event)
            return changed

    def close(self) -> None:
        """Write the last progress line when it was not written (the job ended between two lines)."""
        with self.lock:
            for printer in self.printers.values():
                printer.close()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.value)


# -- the heartbeat -----------------------------------------------------------------------------------
class JobControl:
    """Heartbeat thread of one running job, and the flags the job's progress sink checks.

    Every ``settings.heartbeat_seconds`` it extends the lease, stores the latest progress, appends the
    pending log lines and hands buffered training metrics and partial results to ``flush`` (called
    with a session, inside the same transaction scope). ``cancelled`` / ``lost`` are set when the
    heartbeat says stop (a cancel request / the lease is no longer ours).
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        job_id: str,
        worker: str,
        progress: ProgressState,
        flush: Optional[Callable[[Any], None]] = None,
    ) -> None:
        self.settings, self.engine, self.job_id, self.worker = settings, engine, job_id, worker
        self.progress = progress
        self.flush = flush
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._lines: deque[str] = deque()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id}", daemon=True)
        # Until when (monotonic clock) our lease surely holds: the claim or the last successful beat
        # plus the lease. Past it, another worker may claim the job, so this one must have stopped.
        self.lease_until = time.monotonic() + settings.lease_seconds

    def lease_at_risk(self) -> bool:
        """Whether the lease could lapse before the next beat (beats failed: the database is away).

        The job then stops by itself (as if lost) half a heartbeat before the lease can expire, so a
        second worker claiming it after the expiry never runs beside this one.
        """
        return time.monotonic() > self.lease_until - 0.5 * self.settings.heartbeat_seconds

    def log(self, line: str) -> None:
        """Queue a line for the job's log tail (timestamped, written at the next beat)."""
        stamp = time.strftime("%H:%M:%S", time.gmtime())
        self._lines.append(f"{stamp} {line.rstrip()}\n")

    def start(self) -> "JobControl":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread after one last beat (progress, log lines and metrics written)."""
        self._stop.set()
        self._thread.join(timeout=max(30.0, 3 * self.settings.heartbeat_seconds))

    def beat(self) -> bool:
        """One heartbeat now; returns True when the job must stop (cancel requested or lease lost)."""
        lines = []
        while self._lines:
            lines.append(self._lines.popleft())
        started = time.monotonic()
        with session_scope(self.engine) as session:
            if self.flush is not None:
                self.flush(session)
                session.commit()
            stop = job_fns.heartbeat(
                session,
                job_id=self.job_id,
                worker_id=self.worker,
                progress=self.progress.snapshot(),
                log="".join(lines) or None,
                lease_seconds=self.settings.lease_seconds,
                log_limit=self.settings.log_tail_chars,
            )
            if stop and not job_fns.lease_held(session, job_id=self.job_id, worker_id=self.worker):
                self.lost.set()
            else:
                # A cancel request renews the lease too: the job may take a while to stop (a trial's
                # checkpoint, a process group's exit) and is still ours until it has.
                self.lease_until = started + self.settings.lease_seconds
                if stop:
                    self.cancelled.set()
        return stop

    def _loop(self) -> None:
        interval = float(self.settings.heartbeat_seconds)
        while True:
            stopping = self._stop.wait(interval)
            try:
                self.beat()
            except Exception as exc:  # a database hiccup must not kill the job; the next beat retries
                log.warning("heartbeat of job %s failed: %s", self.job_id, one_line(exc))
            if stopping or self.lost.is_set():
                return


# -- run log -----------------------------------------------------------------------------------------
def append_run_log(settings: Settings, job_id: str, event: str, **fields: Any) -> None:
    """One JSON line in ``<data_dir>/jobs/<job_id>/runs.jsonl`` per start and end of a run (wall-clock
    seconds since the epoch), so an operator (and the tests) can see every attempt and that no two
    overlapped."""
    folder = Path(settings.jobs_dir) / job_id
    folder.mkdir(parents=True, exist_ok=True)
    record = {"event": event, "time": time.time(), "pid": os.getpid(), **fields}
    with open(folder / "runs.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


# -- the reaper --------------------------------------------------------------------------------------
def reap(settings: Settings, engine: Optional[Engine] = None, send: Optional[Callable[[str, str], None]] = None) -> list[str]:
    """Re-queue jobs whose lease expired (their worker died) and re-send them; returns their ids.

    Jobs at their attempt cap fail with the reason instead (``backend.jobs.reap_expired``). Jobs left
    queued for long without a claim (a lost message, e.g. a broker restart) are re-sent too. Safe from
    several workers at once: each job changes state in one UPDATE, and a duplicate delivery is dropped
    by ``claim_job``.
    """
    from sqlalchemy import select

    from backend.broker import send_job
    from backend.db.models import Job

    engine = engine or engine_for(settings.database_url)
    queues: dict[str, str] = {}
    send = send or (lambda job_id, kind: send_job(job_id, kind, settings, queue=queues.get(job_id)))
    with session_scope(engine) as session:
        released = dead_local_holders(session)
        if released:
            log.warning("reaper: the worker of job(s) %s died; re-queued without waiting for the lease", ", ".join(released))
        requeued = job_fns.reap_expired(session)
        # A queued job whose message got lost waits forever; one lease of silence is enough to re-send.
        stale = job_fns.stale_queued(session, older_than_seconds=max(10.0 * settings.lease_seconds, 60.0))
        if stale:
            # A job waiting behind a running one is a backlog, not a lost message: only re-send jobs of
            # queues where nothing runs (idle workers, yet the job waits: its message is gone).
            busy = set(session.execute(select(Job.queue).where(Job.status == "running").distinct()).scalars())
            stale = list(session.execute(select(Job.id).where(Job.id.in_(stale), Job.queue.not_in(busy))).scalars())
        if stale:
            # Re-sent now: touch them, so a long backlog is re-sent once per period, not on every pass.
            from sqlalchemy import update

            from backend.db.types import utcnow

            session.execute(update(Job).where(Job.id.in_(stale), Job.status == "queued").values(updated_at=utcnow())
                            .execution_options(synchronize_session=False))
        ids = list(dict.fromkeys(requeued + stale))
        rows = session.query(Job.id, Job.kind, Job.queue).filter(Job.id.in_(ids)).all() if ids else []
        kinds = {job_id: kind for job_id, kind, _ in rows}
        queues.update({job_id: queue for job_id, _, queue in rows})
    for job_id in ids:
        send(job_id, kinds[job_id])
        if job_id in requeued:
            log.warning("job %s: lease expired, re-queued", job_id)
    return ids


def release(settings: Settings, job_id: str, worker: str, kind: str, engine: Optional[Engine] = None,
            send: Optional[Callable[[str, str], None]] = None) -> bool:
    """Give a running job this worker holds back to the queue and re-send it (the worker is shutting
    down: Ctrl-C, SIGTERM, a rolling restart). The interrupted run does not count as an attempt, so
    restarts never exhaust a job's attempts; a trial resumes from the checkpoint it just wrote. Returns
    False when the job is no longer ours or a cancel was requested (the reaper then finishes it)."""
    from sqlalchemy import case, select, update

    from backend.broker import send_job
    from backend.db.models import Job
    from backend.db.types import utcnow

    engine = engine or engine_for(settings.database_url)
    with session_scope(engine) as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.worker_id == worker, Job.status == "running",
                   Job.cancel_requested.is_(False))
            .values(status="queued", worker_id=None, lease_expires_at=None, updated_at=utcnow(),
                    attempts=case((Job.attempts > 0, Job.attempts - 1), else_=0))
            .execution_options(synchronize_session=False)
        )
        session.commit()
    if result.rowcount != 1:
        return False
    if send is None:
        with session_scope(engine) as session:
            queue = session.execute(select(Job.queue).where(Job.id == job_id)).scalar_one_or_none()
        send_job(job_id, kind, settings, queue=queue)
    else:
        send(job_id, kind)
    return True


class Reaper:
    """A daemon thread calling ``reap`` every ``interval`` seconds (default: the heartbeat period)."""

    def __init__(self, settings: Settings, interval: Optional[float] = None) -> None:
        self.settings = settings
        self.interval = float(interval or settings.heartbeat_seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reaper", daemon=True)

    def start(self) -> "Reaper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        # Once at start too: a worker started in place of one that died (by `up`) frees its job at once.
        try:
            reap(self.settings)
        except Exception as exc:  # noqa: BLE001
            log.warning("reaper: %s", one_line(exc))
        while not self._stop.wait(self.interval):
            try:
                reap(self.settings)
            except Exception as exc:  # keep reaping after a transient database or broker error
                log.warning("reaper: %s", one_line(exc))


# -- start-up ----------------------------------------------------------------------------------------
def builtin_task_sets(examples: int = 3) -> list[dict[str, Any]]:
    """The engine's built-in task sets as plain rows: name, language, description, num_items and a few
    (prompt, target) examples (zero-shot prompts, so the example is readable)."""
    from layertracer.tasks.sets import BUILTIN_TASKS, builtin_facts, builtin_task

    rows = []
    for name, spec in BUILTIN_TASKS.items():
        task = builtin_task(name, shots=0, limit=examples)
        rows.append(
            {
                "name": name,
                "language": spec.language,
                "description": spec.description,
                "num_items": len(builtin_facts(name)),
                "examples": [{"prompt": item.prompt, "target": item.target} for item in task.items],
                "example": {"prompt": task.items[0].prompt, "target": task.items[0].target},
            }
        )
    return rows


_services_lock = threading.Lock()
_reaper: Optional[Reaper] = None


def start_worker_services(settings: Settings, *, reaper: bool = True) -> None:
    """Worker start: migrate the database, upsert the built-in task sets, start the reaper thread."""
    from backend.db.migrate import upgrade

    global _reaper
    with _services_lock:
        upgrade(settings.database_url)
        upsert_builtin_task_sets(settings)
        if reaper and _reaper is None:
            _reaper = Reaper(settings).start()


def upsert_builtin_task_sets(settings: Settings) -> int:
    """Write the built-in task sets into the database (backend.tasksets); returns how many."""
    from backend import tasksets

    rows = builtin_task_sets()
    with session_scope(engine_for(settings.database_url)) as session:
        tasksets.upsert_builtin_task_sets(session, rows)
    return len(rows)
