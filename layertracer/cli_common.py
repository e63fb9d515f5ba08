"""Helpers shared by the CLI's command modules: consoles, one-line failures, the progress bar."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from layertracer.progress import LinePrinter, ProgressEvent, line_seconds

err = Console(stderr=True)
out = Console()

# ``--json`` on the commands that print a summary (trace, eval, tasks, inspect): data on stdout, for scripts.
JSON_OPTION = typer.Option(False, "--json", help="Print the result as JSON on stdout instead of a table.")


def spec_option(model, name: str, *flags: str, help: Optional[str] = None):
    """A typer option whose default, range and help come from the spec's field ``name`` (one
    declaration: an out-of-range value is typer's usage error, exit 2, with the same bounds as the API)."""
    from layertracer.spec.fields import number_bounds

    field = model.model_fields[name]
    bounds = number_bounds(model, name)
    limits = {}  # typer ranges are inclusive: an exclusive bound is left to the engine's own check
    if bounds.low is not None and not bounds.strict_low:
        limits["min"] = bounds.low
    if bounds.high is not None and not bounds.strict_high:
        limits["max"] = bounds.high
    return typer.Option(bounds.default, *flags, help=help or (field.description or "").capitalize() + ".", **limits)


# The model options every command that loads a model takes (one declaration each).
MODEL_HELP = "A local model folder, or a hub id: org/name, org/name@revision (from the Hugging Face cache; HF_HUB_OFFLINE honoured)."
REVISION_OPTION = typer.Option(None, "--revision", help="Hub revision (branch, tag or commit) of a hub id; the same as org/name@revision.")


# Big-model placement (layertracer/spec/loading.py has the grammar), for the commands that run a model.
DEVICE_MAP_OPTION = typer.Option(None, "--device-map", help="Place a model larger than one device: auto, balanced, "
                                 "balanced_low_0, sequential, or a JSON file of module -> device (accelerate).")
MAX_MEMORY_OPTION = typer.Option(None, "--max-memory", help="Memory per device for the placement, e.g. 0=70GiB,1=70GiB,cpu=200GiB.")
OFFLOAD_FOLDER_OPTION = typer.Option(None, "--offload-folder", help="Folder for the weights that fit nowhere else (disk offload).")
ATTN_OPTION = typer.Option(None, "--attn-implementation", help="eager, sdpa, flash_attention_2 or flex_attention (default: the model's).")
LOAD_IN_OPTION = typer.Option(None, "--load-in", help="8bit or 4bit: quantize the weights with bitsandbytes (CUDA only).")


def placement(device_map, max_memory, offload_folder, attn_implementation, load_in) -> dict[str, Any]:
    """The placement options as load_model's keyword arguments."""
    return {"device_map": device_map, "max_memory": max_memory,
            "offload_folder": str(offload_folder) if offload_folder else None,
            "attn_implementation": attn_implementation, "load_in": load_in}


def print_json(data: Any) -> None:
    """One JSON document on stdout: plain text (no colours, no wrapping), non-ASCII kept, NaN as null."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, allow_nan=False, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


class LineProgress:
    """rich's Progress interface (add_task / update / context) as plain lines on stderr, for a stderr
    that is no terminal: each task's updates go to a ``layertracer.progress.LinePrinter`` (a line when
    a stage starts, at most one every ``line_seconds()``, one when it finishes; the percentage from
    the count beside it, the time left from the measured rate).

    ``update`` also takes the fields ``fraction`` (the run's share done, 0-1), ``stage_done`` and
    ``stage_total`` (the stage's own count) for a display fed by a run in parts (the demo polling a job).
    """

    def __init__(self, write: Optional[Callable[[str], None]] = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.write = write or (lambda line: err.print(line, highlight=False, markup=False, soft_wrap=True))
        self.clock = clock
        self.interval = line_seconds()
        self.tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        for task in self.tasks.values():
            task["printer"].close()

    def add_task(self, description: str, total: Optional[float] = None, **_: Any) -> int:
        task_id = len(self.tasks)
        self.tasks[task_id] = {"description": description, "total": total, "completed": 0.0,
                               "printer": LinePrinter(self.write, interval=self.interval, clock=self.clock)}
        self._feed(task_id, {})
        return task_id

    def update(self, task_id: int, *, completed: Optional[float] = None, total: Optional[float] = None,
               description: Optional[str] = None, **fields: Any) -> None:
        task = self.tasks[task_id]
        for key, value in (("total", total), ("completed", completed), ("description", description)):
            if value is not None:
                task[key] = value
        self._feed(task_id, fields)

    def _feed(self, task_id: int, fields: dict) -> None:
        task = self.tasks[task_id]
        if fields.get("fraction") is not None:
            event = ProgressEvent(stage=task["description"], done=fields.get("stage_done") or 0,
                                  total=fields.get("stage_total") or 0, fraction=float(fields["fraction"]))
        else:
            event = ProgressEvent(stage=task["description"], done=task["completed"], total=task["total"] or 0)
        task["printer"](event)


def progress_display(*columns, **options):
    """A rich Progress on a terminal, plain progress lines (LineProgress) elsewhere."""
    if err.is_terminal:
        return Progress(*columns, console=err, **options)
    return LineProgress()


class Bar:
    """A progress display on stderr fed by engine ProgressEvents (a bar, or plain lines off a terminal)."""

    def __init__(self) -> None:
        self.progress = progress_display(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self.task_id: Optional[int] = None

    def __enter__(self) -> Callable:
        self.progress.__enter__()
        return self.update

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def update(self, event) -> None:
        if self.task_id is None:
            self.task_id = self.progress.add_task(event.stage, total=event.total)
        self.progress.update(self.task_id, completed=event.done, total=event.total, description=event.stage,
                             fraction=event.fraction, stage_done=event.done, stage_total=event.total)




def default_data_dir() -> Path:
    """``$LAYERTRACER_DATA_DIR``, else ``./data``: where demo models and results are kept."""
    return Path(os.environ.get("LAYERTRACER_DATA_DIR", "data"))


def split_list(text: str) -> list[str]:
    """``a, b,,c`` -> ["a", "b", "c"]."""
    return [part.strip() for part in text.split(",") if part.strip()]
