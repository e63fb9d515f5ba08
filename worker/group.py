"""A trial or experiment job on N processes of this worker host: torchrun as a child process group.

``run_experiment_group`` has the signature of ``worker.runners.run_experiment`` plus ``processes``,
so a job's lease, heartbeat, cancel and crash recovery (``worker.tasks``) cover the group as they
cover a job run in the worker's own process:

- the worker stays the one process that holds the lease and talks to the database; the ranks
  (``worker.rank``) report through files in ``<job folder>/group/`` (events, a stop flag);
- progress, step metrics and partial results come back through ``events.jsonl`` to the same callbacks;
- ``should_stop`` (cancel, shutdown, a lease at risk) creates the stop flag: the trial checkpoints and
  the ranks end the run as ``stopped``; when the progress callback raises (a stop outside training)
  or the ranks do not stop within ``STOP_GRACE_SECONDS``, the group is terminated (SIGTERM, then
  SIGKILL after ``KILL_GRACE_SECONDS``);
- a rank that fails ends the job at once with its one-line reason (torchrun stops the other ranks),
  never a hang: the ranks' collectives time out too (``layertracer.experiments.runner.RANK_WAIT``);
- the group dies with its worker: torchrun gets SIGTERM when the worker dies (Linux's parent-death
  signal) and every rank exits within a second of the worker's end (``worker.rank``); a worker that
  takes a job over first kills a group of the job still alive on this host (its pid in ``group/pid``).

On CUDA each rank takes the GPU of its local rank among the worker's visible ones
(``CUDA_VISIBLE_DEVICES`` of the worker), so a job asking for more GPUs than the worker sees is one
line, before anything starts. On a CPU host the ranks use gloo (as the tests do).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from layertracer.errors import LayerTracerError

STOP_GRACE_SECONDS = 600.0  # a stop flag waits for the running step and its checkpoint at most this long
KILL_GRACE_SECONDS = 15.0  # after SIGTERM, the ranks have this long before SIGKILL
POLL_SECONDS = 0.25  # how often the worker reads the events and checks the group
PR_SET_PDEATHSIG = 1


def visible_gpus() -> int:
    """GPUs this worker process may use (0 on a host without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_processes(processes: int) -> None:
    """One line when this worker cannot give a job ``processes`` ranks (more than its visible GPUs)."""
    gpus = visible_gpus()
    if gpus and processes > gpus:
        raise LayerTracerError(f"the job asks for {processes} processes (one GPU each) and this worker sees {gpus} "
                               f"GPU{'s' if gpus != 1 else ''}: start a worker with more GPUs in CUDA_VISIBLE_DEVICES")


def _exec_with_parent_death_signal(worker_pid: int, command: list[str]) -> None:
    """``python -m worker.group PID COMMAND...``: ask for SIGTERM when the worker dies (Linux's parent-death
    signal, kept across exec; elsewhere the ranks' own watch ends them), then become ``COMMAND``.
    A separate step, not a ``preexec_fn``: the worker has threads, and code between fork and exec in a
    threaded process can deadlock."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() != worker_pid:  # the worker died before the signal was asked for
        sys.exit(75)
    os.execv(command[0], command)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pgid: int, grace_s: float) -> bool:
    """Whether process group ``pgid`` is gone within ``grace_s`` seconds."""
    deadline = time.monotonic() + grace_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _group_alive(pgid)


def kill_group(pgid: int, grace_s: float = KILL_GRACE_SECONDS) -> None:
    """SIGTERM to process group ``pgid``, SIGKILL after ``grace_s`` if any of it is left; returns once
    it is gone (or could not be signalled)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        if _wait_gone(pgid, grace_s):
            return


class EventReader:
    """The complete lines appended to a JSON-lines file since the last read (a line being written stays
    for the next read)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        records = []
        for line in data[:end].splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records


def _progress_event(record: dict[str, Any]):
    from layertracer.progress import ProgressEvent
    import dataclasses

    names = {f.name for f in dataclasses.fields(ProgressEvent)}
    return ProgressEvent(**{k: v for k, v in record.items() if k in names})


def _step_metrics(values: dict[str, Any]):
    from layertracer.training.loop import StepMetrics
    import dataclasses

    names = {f.name for f in dataclasses.fields(StepMetrics)}
    return StepMetrics(**{k: v for k, v in values.items() if k in names})


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())


def run_experiment_group(
    spec: dict[str, Any],
    *,
    processes: int,
    out_dir: str | os.PathLike,
    roots: list[str],
    progress: Optional[Callable[[Any], None]] = None,
    on_step: Optional[Callable[[str, Any], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    on_partial: Optional[Callable[[dict[str, Any]], None]] = None,
    corpus_cache: Optional[str | os.PathLike] = None,
) -> dict[str, Any]:
    """Run (or resume) the experiment of ``spec`` on ``processes`` ranks in ``out_dir``; returns rank 0's
    result.json dict (``"status": "stopped"`` when ``should_stop`` stopped it). Raises a one-line
    LayerTracerError when a rank fails; re-raises what ``progress`` raises after the group is gone."""
    from worker.runners import experiment_spec

    check_processes(processes)
    experiment_spec(spec, roots=roots)  # a bad spec is one line here, before any process starts
    out = Path(out_dir)
    folder = out / "group"
    folder.mkdir(parents=True, exist_ok=True)
    pid_file = folder / "pid"
    if pid_file.is_file():  # a group of an earlier run of this job (its worker died) must be gone first
        try:
            kill_group(int(pid_file.read_text().strip()))
        except ValueError:
            pass
    events, stop_file, ranks_log = folder / "events.jsonl", folder / "stop", folder / "ranks.log"
    for stale in (events, stop_file, out / "result.json"):
        stale.unlink(missing_ok=True)
    launch = {"spec": spec, "roots": list(roots), "out_dir": str(out), "events": str(events),
              "stop_file": str(stop_file), "worker_pid": os.getpid(),
              "corpus_cache": None if corpus_cache is None else str(corpus_cache)}
    (folder / "launch.json").write_text(json.dumps(launch), encoding="utf-8")
    command = [sys.executable, "-m", "worker.group", str(os.getpid()), sys.executable, "-m", "torch.distributed.run",
               "--standalone", f"--nproc-per-node={processes}", "-m", "worker.rank", str(folder / "launch.json")]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([repo] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    with open(ranks_log, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    pid_file.write_text(str(proc.pid))
    reader = EventReader(events)
    errors: list[dict[str, Any]] = []
    stop_since: Optional[float] = None
    try:
        while True:
            exited = proc.poll() is not None  # then every line it wrote is in the file: one last read
            for record in reader.read():
                kind = record.pop("kind", None)
                if kind == "progress" and progress is not None:
                    progress(_progress_event(record))
                elif kind == "step" and on_step is not None:
                    on_step(record["trial"], _step_metrics(record["metrics"]))
                elif kind == "partial" and on_partial is not None:
                    on_partial(record["values"])
                elif kind == "error":
                    errors.append(record)
            if exited:
                break
            if stop_since is None and should_stop is not None and should_stop():
                stop_file.touch()
                stop_since = time.monotonic()
            if stop_since is not None and time.monotonic() - stop_since > STOP_GRACE_SECONDS:
                kill_group(proc.pid)
            try:
                proc.wait(timeout=POLL_SECONDS)
            except subprocess.TimeoutExpired:
                pass
    except BaseException:
        kill_group(proc.pid)  # the job stops (a cancel outside training, Ctrl-C): the group goes with it
        raise
    finally:
        if proc.poll() is None:
            kill_group(proc.pid)
        proc.wait()
        pid_file.unlink(missing_ok=True)
    if proc.returncode != 0:
        first = min(errors, key=lambda e: (not e.get("expected"), e.get("rank", 0))) if errors else None
        if first is not None:
            raise LayerTracerError(f"rank {first.get('rank', '?')}: {first['message']}")
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        raise LayerTracerError(f"the process group ended with {how}: {_tail(ranks_log) or 'no output'}"[:500])
    return json.loads((out / "result.json").read_text(encoding="utf-8"))


if __name__ == "__main__":
    _exec_with_parent_death_signal(int(sys.argv[1]), sys.argv[2:])
