"""One rank of a job run as a process group: ``torchrun ... -m worker.rank LAUNCH.json``.

The worker process (``worker.group``) writes ``LAUNCH.json`` and starts torchrun; every rank reads
it and runs the same ``worker.runners.run_experiment`` a single-process job runs, inside the process
group torchrun set up. No database, broker or Celery here: rank 0 talks to its worker through files
in the group's folder, and the worker keeps the lease, the heartbeat and the database:

- ``events.jsonl`` (rank 0 appends, the worker tails): ``{"kind": "progress", ...ProgressEvent}``,
  ``{"kind": "step", "trial", "metrics"}``, ``{"kind": "partial", "values"}``; any rank appends
  ``{"kind": "error", "rank", "message"}`` (one line) before it exits on an error;
- ``stop`` (the worker creates it): the trial checkpoints and the run ends as ``stopped``, exactly as
  a single-process job's ``should_stop``;
- the worker's pid: every rank watches it and exits at once when the worker is gone (killed, out of
  memory), so a group never outlives its worker and never runs beside the group of the worker that
  takes the job over.

The launch file carries only JSON: the runner's spec (paths confined again here, against the roots),
the roots, the folders and the worker's pid.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from worker.processes import process_gone

# How often a rank checks that its worker is alive (seconds): the longest a group outlives its worker.
WATCH_SECONDS = 1.0


def _watch(pid: int) -> None:
    """Exit this rank (with 75, EX_TEMPFAIL) once process ``pid`` is gone; a daemon thread's loop."""
    stop = threading.Event()
    while not stop.wait(WATCH_SECONDS):
        if process_gone(pid):
            os._exit(75)


class Events:
    """Appends JSON lines to the group's events file (one write per line, flushed: the worker tails it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=float) + "\n"
        with self.lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)


def main(launch_path: str) -> int:
    from layertracer.errors import LayerTracerError
    from worker.runners import run_experiment

    launch = json.loads(Path(launch_path).read_text(encoding="utf-8"))
    rank = int(os.environ.get("RANK", "0"))
    threading.Thread(target=_watch, args=(int(launch["worker_pid"]),), name="watch-worker", daemon=True).start()
    events = Events(Path(launch["events"]))
    stop_file = Path(launch["stop_file"])
    main_rank = rank == 0

    def progress(event) -> None:
        if main_rank:
            events.write({"kind": "progress", **dataclasses.asdict(event)})

    def on_step(trial: str, metrics) -> None:
        if main_rank:
            events.write({"kind": "step", "trial": trial, "metrics": dataclasses.asdict(metrics)})

    def on_partial(values: dict[str, Any]) -> None:
        events.write({"kind": "partial", "values": values})  # the runner calls it on rank 0 only

    try:
        run_experiment(launch["spec"], out_dir=launch["out_dir"], roots=launch["roots"], progress=progress,
                       on_step=on_step, should_stop=stop_file.exists, on_partial=on_partial,
                       corpus_cache=launch.get("corpus_cache"))
    except BaseException as exc:
        from worker.control import one_line

        events.write({"kind": "error", "rank": rank, "message": one_line(exc),
                      "expected": isinstance(exc, LayerTracerError)})
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
