"""The demo launcher (``layertracer demo``): the papers' experiment in miniature, run through the service on this machine.

1. Train the bundled demo model (or reuse it from the cache) and write the demo world: the old-facts
   benchmark (retention), the new-facts benchmark (acquisition) and the new-domain corpus.
2. Start the embedded service (``layertracer up``'s processes: SQLite, embedded broker, one worker,
   the API and the dashboard on one port bound to 127.0.0.1).
3. Through the API, like any client: register the model, trace it on every built-in task, read the
   freeze plan, and run an experiment: train-shallow (the plan's ranges), full and train-deep, over
   seeds, evaluated before and after on both benchmarks.
4. Print the results table and the dashboard's URLs, and keep serving until Ctrl-C (``--exit`` stops).

The client speaks JSON over ``urllib`` (the engine imports no web package).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

from layertracer.cli_common import err, progress_display
from layertracer.errors import LayerTracerError

POLL_S = 0.5


@dataclass(frozen=True)
class DemoPlan:
    """How much the demo does. ``FULL``: the default (3 seeds, re-traced trials; 287 s on 2 idle CPU
    cores from an empty data folder, about 125 s of it training the demo model); ``QUICK``: one seed, shorter
    training, no re-trace, for a first look and for CI."""

    trace_limit: int
    seeds: list[int]
    steps: int
    retrace_limit: int
    eval_limit: Optional[int] = None
    perturbations: list[str] = field(default_factory=lambda: ["skip", "mask:keep=0.5"])
    batch_size: int = 16
    block_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 6
    eval_shots: int = 3


FULL = DemoPlan(trace_limit=40, seeds=[1, 2, 3], steps=60, retrace_limit=10)
QUICK = DemoPlan(trace_limit=10, seeds=[1], steps=30, retrace_limit=0, eval_limit=25, perturbations=["skip"])


class ApiClient:
    """JSON over HTTP to ``/api/v1``; an error response becomes a LayerTracerError with the API's detail."""

    def __init__(self, base_url: str, token: Optional[str] = None, on_poll: Optional[Callable[[], None]] = None) -> None:
        self.base = base_url.rstrip("/") + "/api/v1"
        self.token = token
        self.on_poll = on_poll

    def request(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("detail")
            except (ValueError, AttributeError):
                detail = exc.reason
            raise LayerTracerError(f"{method} {path}: {exc.code} {detail}") from None
        except urllib.error.URLError as exc:
            raise LayerTracerError(f"{method} {path}: the service does not answer ({exc.reason})") from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: dict) -> Any:
        return self.request("POST", path, body)

    def wait(self, job_id: str, label: str, on_poll: Optional[Callable[[], None]] = None) -> dict:
        """Poll a job to its end with a progress bar; returns the job, or raises with its error.
        ``on_poll`` runs at every poll (the demo keeps its service's worker alive with it)."""
        with progress_display(TextColumn("{task.description:<44}"), BarColumn(),
                              TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn()) as bar:
            task = bar.add_task(label, total=100)
            while True:
                job = self.get(f"/jobs/{job_id}")
                progress = job.get("progress") or {}
                stage = progress.get("stage")
                # the bar: the job's percent; plain lines: the stage's count and the run's percent apart
                bar.update(task, completed=progress.get("percent") or 0,
                           description=f"{label}: {stage}"[:44] if stage else label,
                           fraction=(progress.get("percent") or 0) / 100.0, stage_done=progress.get("done"),
                           stage_total=progress.get("total"))
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    if job["status"] == "succeeded":
                        bar.update(task, completed=100, description=label)
                    break
                for hook in (on_poll, self.on_poll):
                    if hook is not None:
                        hook()
                time.sleep(POLL_S)
        if job["status"] != "succeeded":
            raise LayerTracerError(f"{label} {job['status']}: {job.get('error') or 'no reason given'}")
        return job


def prepare_world(data_dir: Path) -> tuple[Path, Any]:
    """The demo model folder (trained or cached) and the demo world under ``data_dir``."""
    from rich.progress import MofNCompleteColumn

    from layertracer.demo.model import DemoRecipe, build_demo_model, cached_demo_model
    from layertracer.demo.world import build_world

    recipe = DemoRecipe()
    folder = data_dir / "demo-model"
    if cached_demo_model(folder, recipe):
        err.print(f"demo model: cached in {folder}", highlight=False)
    else:
        with progress_display(TextColumn("{task.description:<44}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn()) as bar:
            task = bar.add_task("training the demo model", total=recipe.steps)
            build_demo_model(folder, recipe=recipe, force=True, on_step=lambda m: bar.update(
                task, completed=m.step, description=f"training the demo model (loss {m.loss:.2f})"))
    world = build_world(data_dir / "demo-world")
    return folder, world


def run_demo(api: ApiClient, model_dir: Path, world, plan: DemoPlan) -> dict[str, Any]:
    """Register, trace, plan and experiment through the API; returns ids and the experiment result."""
    model = api.post("/models", {"source": str(model_dir), "name": "demo model"})
    if model.get("job"):
        api.wait(model["job"]["id"], "inspecting the model")
    trace = api.post("/traces", {
        "model_id": model["id"], "task_sets": ["all"], "perturbations": plan.perturbations,
        "options": {"limit": plan.trace_limit, "batch_size": 16}, "name": "demo: all built-in tasks",
    })
    api.wait(trace["job"]["id"], "tracing every built-in task")
    summary = api.get(f"/traces/{trace['id']}")["summary"] or {}
    freeze_plan = summary.get("freeze_plan") or {}
    shallow = freeze_plan.get("train_ranges") or "train-shallow"
    err.print(f"freeze plan: train {shallow}, freeze {freeze_plan.get('freeze_ranges', '?')} "
              f"(vulnerable layer {summary.get('vulnerable_layer')})", highlight=False)
    for reason in freeze_plan.get("reasons", []):
        err.print(f"  {reason}", highlight=False)
    allocations = [shallow, "full", "train-deep"]
    if shallow in allocations[1:]:
        allocations = [shallow] + [a for a in allocations[1:] if a != shallow]
    body = {
        "model_id": model["id"], "name": "demo: train shallow (plan) vs full vs train deep",
        "corpus": str(world.new_corpus), "allocations": allocations, "seeds": plan.seeds,
        "benchmarks": world.benchmarks, "steps": plan.steps, "batch_size": plan.batch_size,
        "block_size": plan.block_size, "lr": plan.lr, "warmup_steps": plan.warmup_steps,
        "eval_mode": "cloze", "eval_shots": plan.eval_shots, "eval_limit": plan.eval_limit,
        "checkpoint_every": 20, "holdout": 0.05,
        "trace_tasks": "all" if plan.retrace_limit else "", "trace_limit": max(plan.retrace_limit, 1),
        "labels": {shallow: "train-shallow (freeze plan)"} if shallow != "train-shallow" else {},
    }
    experiment = api.post("/experiments", body)
    trials = len(allocations) * len(plan.seeds)
    api.wait(experiment["job"]["id"], f"experiment: {trials} trials")
    detail = api.get(f"/experiments/{experiment['id']}")
    return {"model": model["id"], "trace": trace["id"], "experiment": experiment["id"], "result": detail.get("result")}
