"""The ``layertracer`` command line: a thin shell over the engine's functions.

User errors (bad paths, bad files, bad options) print one line ``error: ...`` on stderr and exit 2,
with no traceback.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from layertracer import cli_lens, cli_trials
from layertracer._version import __version__
from layertracer.cli_common import (
    ATTN_OPTION,
    DEVICE_MAP_OPTION,
    JSON_OPTION,
    LOAD_IN_OPTION,
    MAX_MEMORY_OPTION,
    OFFLOAD_FOLDER_OPTION,
    MODEL_HELP,
    REVISION_OPTION,
    Bar,
    default_data_dir,
    err,
    fail,
    out,
    placement,
    print_json,
    progress_display,
    spec_option,
)
from layertracer.errors import LayerTracerError
from layertracer.spec.perturbations import split_perturbations
from layertracer.spec.trace_options import TraceOptionsSpec

app = typer.Typer(
    name="layertracer",
    help="Layer diagnostics for causal LMs: logit lens, task particles, layer sensitivity, freeze plans.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Arguments that only print text: they must not pay for importing transformers (see main).
_PRINT_ONLY_FLAGS = frozenset({"--help", "-h", "--version"})


def _print_version(value: bool) -> None:
    if value:
        out.print(f"layertracer {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Layer diagnostics for causal LMs: logit lens, task particles, layer sensitivity, freeze plans."""

@app.command()
def trace(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    revision: Optional[str] = REVISION_OPTION,
    tasks: str = typer.Option(
        ..., "--tasks", "-t", help="Comma-separated built-in task names, 'all', or JSONL/CSV task files."
    ),
    out_path: Path = typer.Option(..., "--out", "-o", help="Where to write the result JSON."),
    perturbation: list[str] = typer.Option(
        ["skip"],
        "--perturbation",
        "-p",
        help="skip, zero-attn, zero-mlp, noise[:scale=S], mask[:keep=R]; repeat or comma-separate. The first is primary.",
    ),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto."),
    dtype: str = typer.Option("auto", help="float32, bfloat16, float16 or auto (bf16 on CUDA, fp32 on CPU)."),
    batch_size: int = spec_option(TraceOptionsSpec, "batch_size", "--batch-size"),
    seed: int = spec_option(TraceOptionsSpec, "seed", "--seed"),
    limit: Optional[int] = spec_option(TraceOptionsSpec, "limit", "--limit"),
    shots: int = spec_option(TraceOptionsSpec, "shots", "--shots"),
    top_k: int = spec_option(TraceOptionsSpec, "top_k", "--top-k"),
    draws: int = spec_option(TraceOptionsSpec, "draws", "--draws"),
    particle_delta: float = spec_option(TraceOptionsSpec, "particle_delta", "--particle-delta"),
    particle_floor: float = spec_option(TraceOptionsSpec, "particle_floor", "--particle-floor"),
    similarity: bool = typer.Option(True, help="Compute the layer x layer CKA matrix."),
    position_view: bool = typer.Option(True, help="Compute the per-position view for one prompt."),
    position_task: Optional[str] = typer.Option(None, help="Task of the per-position view (default: the first)."),
    position_prompt: int = spec_option(TraceOptionsSpec, "position_prompt", "--position-prompt"),
    boundary: str = typer.Option("median", help="Freeze-plan boundary: the median or the earliest (min) task particle."),
    min_train: int = spec_option(TraceOptionsSpec, "min_train_layers", "--min-train"),
    lens: str = cli_lens.LENS_OPTION,
    lens_file: Optional[Path] = cli_lens.LENS_FILE_OPTION,
    trust_remote_code: bool = typer.Option(False, help="Allow the model folder's own Python code to run."),
    device_map: Optional[str] = DEVICE_MAP_OPTION,
    max_memory: Optional[str] = MAX_MEMORY_OPTION,
    offload_folder: Optional[Path] = OFFLOAD_FOLDER_OPTION,
    attn_implementation: Optional[str] = ATTN_OPTION,
    load_in: Optional[str] = LOAD_IN_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Trace a model on tasks and write OUT.json (schema in the README). A trace stopped part-way keeps
    its partial results in OUT.json.partial.npz; the same command run again resumes from them.
    With --json the summary goes to stdout as JSON instead of a table."""
    from layertracer.models.loading import load_model
    from layertracer.tasks.sets import load_tasks
    from layertracer.tracer import TraceOptions, trace as run_trace

    from layertracer.perturbation import Perturbation

    # Everything that can be checked without the model is checked first: a typo fails in a second.
    kinds = [
        Perturbation.parse(p, seed=seed, draws=draws) for item in perturbation for p in split_perturbations(item)
    ]
    if not out_path.parent.exists():
        fail(f"output folder {str(out_path.parent)!r} does not exist")
    cli_lens.check_lens_flags(lens, lens_file)
    options = TraceOptions(
        batch_size=batch_size,
        top_k=top_k,
        particle_delta=particle_delta,
        particle_floor=particle_floor,
        seed=seed,
        draws=draws,
        similarity=similarity,
        position_view=position_view,
        position_task=position_task,
        position_prompt=position_prompt,
        min_train_layers=min_train,
        plan_boundary=boundary,
        lens=lens,
    )
    if boundary not in ("median", "min"):
        fail(f"--boundary must be 'median' or 'min', not {boundary!r}")
    task_list = load_tasks(tasks, shots=shots, limit=limit)
    with err.status(f"loading {model}"):
        loaded = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code, revision=revision,
                            **placement(device_map, max_memory, offload_folder, attn_implementation, load_in))
    translators = cli_lens.translators_for(lens, lens_file, loaded, model)  # a missing file: one line, first
    err.print(
        f"{loaded.info.architecture}: {loaded.info.num_layers} blocks "
        f"({', '.join(sorted(set(loaded.info.block_kinds)))}), {loaded.info.num_parameters:,} parameters, "
        f"{loaded.info.dtype} on {loaded.info.device}",
        highlight=False,
    )
    # Partial results: a trace stopped part-way (Ctrl-C, a crash) resumes when the same command runs again.
    partial = out_path.with_name(out_path.name + ".partial.npz")
    try:
        with Bar() as progress:
            result = run_trace(loaded, task_list, perturbations=kinds, options=options, progress=progress,
                               checkpoint=partial, translators=translators)
    except KeyboardInterrupt:
        if partial.exists():
            err.print(f"partial results kept in {partial}: the same command resumes from them", highlight=False)
        raise
    resumed = int(result.timings.get("resumed_prompts", 0))
    if resumed:
        err.print(f"resumed: {resumed} prompts came from {partial}", highlight=False)
    result.to_json(out_path)
    if as_json:
        print_json({**result.summary(), "out": str(out_path)})
    else:
        _print_summary(result.summary())
    err.print(f"wrote {out_path}", highlight=False)


def _print_summary(summary: dict) -> None:
    """The table of ``TraceResult.summary()``, then the vulnerable layer and the freeze plan."""
    from layertracer.spec.uncertainty import interval_text, plan_stability_text

    table = Table(title="Tasks", title_justify="left")
    for column in ("task", "prompts", "task particle", "interval", "same in resamples", "final top-1 accuracy",
                   "peak mean p(target)"):
        table.add_column(column)
    for name, task in summary["tasks"].items():
        particle = "—" if task["task_particle"] is None else str(task["task_particle"])
        peak = task["peak_mean_target_prob"]
        agreement = task.get("particle_agreement")
        table.add_row(name, str(task["prompts"]), particle, interval_text({"interval": task.get("particle_interval")}),
                      "—" if agreement is None else f"{agreement:.0%}", f"{task['final_accuracy']:.2f}",
                      "—" if peak is None else f"{peak:.3f}")
    out.print(table)
    for warning in summary.get("warnings") or []:
        out.print(f"warning: {warning}", highlight=False)
    if summary["perturbation"] is not None:
        layer, value = summary["vulnerable_layer"], summary["vulnerable_layer_mean_js"]
        shown = "—" if value is None else f"{value:.4f}"
        out.print(f"vulnerable layer ({summary['perturbation']}): {layer}  mean JS {shown} nats")
    plan = summary["freeze_plan"]
    out.print(f"freeze plan: train {plan['train_ranges'] or '—'}  freeze {plan['freeze_ranges'] or '—'}"
              + ("  (tuned lens)" if summary.get("lens") == "tuned" else ""))
    stability = plan_stability_text(plan)
    if stability:
        out.print(f"stability: {stability}", highlight=False)
    for reason in plan["reasons"]:
        out.print(f"  · {reason}", highlight=False)


@app.command()
def inspect(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    revision: Optional[str] = REVISION_OPTION,
    trust_remote_code: bool = typer.Option(False, help="Allow the model folder's own Python code to run."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Print a model's architecture, blocks, their kinds and parameter counts (a table, or JSON with
    --json). Reads the config and the safetensors headers only: no weights are loaded."""
    from layertracer.models.inspection import inspect_model

    info = inspect_model(model, revision=revision, trust_remote_code=trust_remote_code)
    if as_json:
        print_json(info)
        return
    table = Table(title=f"{info.get('architecture')}: {info.get('num_layers')} blocks", title_justify="left")
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in info.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
        table.add_row(key, shown)
    out.print(table)


@app.command("tasks")
def list_tasks(as_json: bool = JSON_OPTION) -> None:
    """List the built-in task sets (a table, or JSON with --json)."""
    from layertracer.tasks.sets import BUILTIN_TASKS, builtin_task

    if as_json:
        listing = []
        for name, spec in BUILTIN_TASKS.items():
            items = builtin_task(name, shots=0).items
            listing.append({"name": name, "language": spec.language, "items": len(items), "description": spec.description,
                            "example": {"prompt": items[0].prompt, "target": items[0].target}})
        print_json(listing)
        return

    table = Table(title="Built-in tasks", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("language", no_wrap=True)
    table.add_column("items", no_wrap=True)
    table.add_column("description")
    table.add_column("example prompt → target", overflow="fold")
    for name, spec in BUILTIN_TASKS.items():
        task = builtin_task(name, shots=0)
        first = task.items[0]
        table.add_row(name, spec.language, str(len(task.items)), spec.description, f"{first.prompt!r} → {first.target!r}")
    out.print(table)


@app.command()
def plan(
    trace_path: Path = typer.Argument(..., help="A trace result JSON written by `layertracer trace`."),
    min_train: int = typer.Option(1, help="At least this many layers stay trainable."),
    protect_vulnerable: bool = typer.Option(True, help="Freeze the vulnerable layer when it lies in the shallow part."),
    perturbation: Optional[str] = typer.Option(None, help="Use this perturbation's curve (default: the primary)."),
    boundary: str = typer.Option("median", help="The median or the earliest (min) task particle."),
) -> None:
    """Recompute the freeze plan of a trace with other rule parameters and print it as JSON, with its
    stability over the trace's bootstrap resamples of the prompts (same seed and count as the trace)."""
    from layertracer.freeze_plan import plan_freeze
    from layertracer.results import TraceResult
    from layertracer.uncertainty import plan_stability, resample_trace, settings

    if not trace_path.is_file():
        fail(f"trace file {str(trace_path)!r} does not exist")
    if boundary not in ("median", "min"):
        fail(f"--boundary must be 'median' or 'min', not {boundary!r}")
    try:
        result = TraceResult.load(trace_path)
    except (ValueError, KeyError, TypeError) as exc:
        fail(f"{trace_path} is not a LayerTracer trace result ({type(exc).__name__}: {exc})")
        return
    sens = result.sensitivities.get(perturbation) if perturbation else result.sensitivity
    if perturbation and sens is None:
        fail(f"the trace has no perturbation {perturbation!r} (it has {', '.join(result.sensitivities)})")
    new_plan = plan_freeze(
        result.num_layers,
        {name: task.task_particle for name, task in result.tasks.items()},
        [float("nan") if v is None else v for v in (sens.mean_js if sens else [])],
        min_train=min_train,
        protect_vulnerable=protect_vulnerable,
        boundary=boundary,
    )
    resamples, seed, level = settings(result)
    new_plan.stability = plan_stability(result, new_plan, resample_trace(result, sens, resamples=resamples, seed=seed,
                                                                         level=level))
    out.print_json(json.dumps(new_plan.to_dict()))


for _name, _command in cli_trials.COMMANDS.items():
    app.command(_name)(_command)
app.command("train-lens")(cli_lens.train_lens)
# Commands of other parts of the distribution (the service's `up`, `api`, `worker`, `dashboard`,
# `demo`: service/commands.py) arrive as entry points, so the engine never imports them; a part that is
# not installed (the engine-only image) just has no command.
COMMAND_ENTRY_POINTS = "layertracer.commands"
for _entry in entry_points(group=COMMAND_ENTRY_POINTS):
    try:
        app.command(_entry.name)(_entry.load())
    except ImportError:
        pass


def _quiet_transformers() -> None:
    """Our own bar replaces transformers' weight-loading bars and per-kernel fallback notices."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


@app.command("demo-model")
def demo_model(
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Model folder (default: DATA_DIR/demo-model)."),
    force: bool = typer.Option(False, help="Train again even when a cached model of this recipe exists."),
    steps: Optional[int] = typer.Option(None, help="Training steps (default: the recipe's)."),
) -> None:
    """Train the offline demo model (a small bilingual Qwen3) or reuse it from the cache; print its folder."""
    from dataclasses import replace

    from layertracer.demo.model import DemoRecipe, build_demo_model, cached_demo_model

    recipe = DemoRecipe() if steps is None else replace(DemoRecipe(), steps=steps)
    folder = out_dir or default_data_dir() / "demo-model"
    if not force and cached_demo_model(folder, recipe):
        err.print(f"demo model cached in {folder}", highlight=False)
    else:
        err.print(
            f"training the demo model ({recipe.num_layers} blocks, hidden {recipe.hidden_size}, "
            f"{recipe.steps} steps) into {folder}",
            highlight=False,
        )
        with progress_display(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(),
        ) as bar:
            task = bar.add_task("training", total=recipe.steps)

            def on_step(metrics) -> None:
                bar.update(task, completed=metrics.step, description=f"training  loss {metrics.loss:.3f}")

            build_demo_model(folder, recipe=recipe, force=True, on_step=on_step)
    out.print(str(folder), highlight=False)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: typer in standalone mode, with LayerTracer's user errors as one line and exit code 2.

    Standalone mode leaves usage errors (an unknown option, a missing required one) to typer itself:
    its usage line and exit code 2, whatever copy of click the installed typer carries. Our commands
    raise LayerTracerError for bad input, which click does not catch; it arrives here.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    if not _PRINT_ONLY_FLAGS.intersection(args):
        _quiet_transformers()
    try:
        app(args=args, prog_name="layertracer")
    except LayerTracerError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
