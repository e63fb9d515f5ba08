"""CLI commands for evaluation, trials, experiments, hybrids and allocation exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

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
    err,
    fail,
    out,
    placement,
    print_json,
    spec_option,
    split_list,
)
from layertracer.spec.training import TrainingOptionsSpec

_BENCH_HELP = ("Comma-separated benchmark specs: cmmlu:DIR, ceval:DIR, lm-eval:TASK (any lm-evaluation-harness "
               "task, through its own evaluator) or lm-eval:FILE.yaml (a task config).")
_MODE_HELP = (
    "loglikelihood (lm-eval compatible: the letters ' A'..' D' scored), answer-only (the official prompts: "
    "the letters' logits) or cloze (no options shown: each choice's text scored as the answer)."
)


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in split_list(text)]
    except ValueError:
        fail(f"--seeds must be comma-separated integers, not {text!r}")
        return []


def eval_command(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    revision: Optional[str] = REVISION_OPTION,
    benchmark: str = typer.Option(..., "--benchmark", "-b", help=_BENCH_HELP),
    out_path: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the full result JSON here."),
    mode: str = typer.Option("loglikelihood", help=_MODE_HELP),
    shots: int = typer.Option(5, help="Few-shot examples from the dev split."),
    limit: Optional[int] = typer.Option(None, help="At most this many questions per subject."),
    subjects: Optional[str] = typer.Option(None, help="Comma-separated subjects (default: all)."),
    batch_size: int = typer.Option(8, help="Sequences per forward pass."),
    device: str = typer.Option("auto"),
    dtype: str = typer.Option("auto"),
    trust_remote_code: bool = typer.Option(False, help="Allow the model folder's own Python code to run."),
    device_map: Optional[str] = DEVICE_MAP_OPTION,
    max_memory: Optional[str] = MAX_MEMORY_OPTION,
    offload_folder: Optional[Path] = OFFLOAD_FOLDER_OPTION,
    attn_implementation: Optional[str] = ATTN_OPTION,
    load_in: Optional[str] = LOAD_IN_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Evaluate a model on C-Eval / CMMLU-layout benchmarks (accuracy per subject, category, overall).
    With --json the scores (without the per-question records) go to stdout as JSON instead of tables."""
    from layertracer.evaluation import evaluate
    from layertracer.models.loading import load_model

    if out_path is not None and not out_path.parent.exists():
        fail(f"output folder {str(out_path.parent)!r} does not exist")
    specs = split_list(benchmark)
    loaded = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code, revision=revision,
                        **placement(device_map, max_memory, offload_folder, attn_implementation, load_in))
    results = {}
    for spec in specs:
        with Bar() as progress:
            result = evaluate(
                loaded, spec, mode=mode, shots=shots, batch_size=batch_size, progress=progress,
                subjects=split_list(subjects) if subjects else None, limit=limit,
            )
        results[spec] = result
        if as_json:
            continue
        table = Table(title=f"{spec}  ({result.settings.template}, {shots}-shot)", title_justify="left")
        for column in ("category", "questions", "accuracy"):
            table.add_column(column)
        for name, acc in result.categories.items():
            table.add_row(name, str(acc.n), f"{acc.accuracy:.4f}")
        table.add_row("overall", str(result.overall.n), f"{result.overall.accuracy:.4f}")
        out.print(table)
    if as_json:
        print_json({spec: r.summary() for spec, r in results.items()})
    if out_path is not None:
        payload = {spec: r.to_dict() for spec, r in results.items()}
        temp = out_path.with_name(out_path.name + ".tmp")
        temp.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
        temp.replace(out_path)
        err.print(f"wrote {out_path}", highlight=False)


def _experiment_spec(model, corpus, allocations, benchmark, seeds, steps, batch_size, grad_accum, block_size,
                     lr, warmup_steps, eval_shots, eval_limit, trace_tasks, trace_limit, device, dtype,
                     embeddings, head, final_norm, part, eval_mode="loglikelihood", placed=None, strategy="ddp",
                     gradient_checkpointing=False, autocast="auto"):
    from layertracer.experiments.spec import ExperimentSpec

    spec = ExperimentSpec(
        model=model, corpus=corpus, allocations=allocations, seeds=_seeds(seeds),
        benchmarks=split_list(benchmark), steps=steps, batch_size=batch_size, grad_accum=grad_accum,
        block_size=block_size, lr=lr, warmup_steps=warmup_steps, eval_shots=eval_shots, eval_limit=eval_limit,
        trace_tasks=trace_tasks, trace_limit=trace_limit, device=device, dtype=dtype,
        embeddings=embeddings, head=head, final_norm=final_norm, part=part, eval_mode=eval_mode,
        placement={k: v for k, v in (placed or {}).items() if v is not None},
        strategy=strategy, gradient_checkpointing=gradient_checkpointing, autocast=autocast,
    )
    spec.validate()  # every option checked before the model is even looked for: a typo fails at once
    return spec


def _run_and_report(spec, out_dir: Path) -> None:
    """Run (or resume) the experiment. Under a launcher (torchrun / accelerate launch: WORLD_SIZE > 1)
    every process trains data-parallel and rank 0 alone shows progress, evaluates and writes."""
    import os
    from contextlib import nullcontext

    from layertracer.experiments.runner import run_experiment

    main_rank = os.environ.get("RANK", "0") == "0"
    with Bar() if main_rank else nullcontext() as progress:
        result = run_experiment(spec, out_dir, progress=progress)
    if main_rank:
        print_experiment_table(result)
        err.print(f"wrote {out_dir / 'result.json'}", highlight=False)


def print_experiment_table(result: dict) -> None:
    """The papers' results table: a row per allocation, accuracy (mean ± t-interval over seeds) per
    benchmark, the change from the base model, trainable share and training time."""
    benches = result["spec"]["benchmarks"]
    table = Table(title="Experiment", title_justify="left")
    table.add_column("allocation")
    table.add_column("blocks")
    table.add_column("trainable")
    for bench in benches:
        table.add_column(bench.split(":")[-1].rstrip("/").split("/")[-1])
    table.add_column("train s")
    for row in result["table"]:
        cells = [row.get("label", row["allocation"]), row.get("ranges", "—"), f"{row['trainable_share']:.1%}"]
        for bench in benches:
            summary = row["benchmarks"].get(bench)
            if summary is None:
                cells.append("—")
                continue
            text = f"{summary['mean']:.3f}"
            if summary.get("ci_low") is not None:
                text += f" [{summary['ci_low']:.3f}, {summary['ci_high']:.3f}]"
            change = row.get("change", {}).get(bench)
            if change is not None:
                text += f" ({change['mean']:+.3f})"
            cells.append(text)
        seconds = row.get("train_seconds")
        cells.append(f"{seconds['mean']:.0f}" if seconds else "—")
        table.add_row(*cells)
    out.print(table)
    for bench, stats in result.get("statistics", {}).items():
        for comparison in stats.get("comparisons", []):
            mcnemar = comparison["mcnemar"]
            out.print(
                f"  {bench.rstrip('/').split('/')[-1]}: {comparison['a']} − {comparison['b']} = "
                f"{comparison['diff']:+.3f} [{comparison['ci_low']:+.3f}, {comparison['ci_high']:+.3f}], "
                f"McNemar p={mcnemar['p_value']:.3g} (Holm {mcnemar['p_adjusted']:.3g}), "
                f"permutation p={comparison['permutation']['p_value']:.3g}",
                highlight=False,
            )


_MODEL = typer.Option(..., "--model", "-m", help="Base model folder or hub id.")
_EVAL_MODE = typer.Option(TrainingOptionsSpec.model_fields["eval_mode"].default, help=_MODE_HELP)
# The hyper-parameters of trial and experiment: defaults and ranges from layertracer/spec/training.py.
_STEPS = spec_option(TrainingOptionsSpec, "steps", "--steps")
_BATCH_SIZE = spec_option(TrainingOptionsSpec, "batch_size", "--batch-size")
_GRAD_ACCUM = spec_option(TrainingOptionsSpec, "grad_accum", "--grad-accum")
_BLOCK_SIZE = spec_option(TrainingOptionsSpec, "block_size", "--block-size")
_LR = spec_option(TrainingOptionsSpec, "lr", "--lr")
_WARMUP = spec_option(TrainingOptionsSpec, "warmup_steps", "--warmup-steps")
_EVAL_SHOTS = spec_option(TrainingOptionsSpec, "eval_shots", "--eval-shots")
_EVAL_LIMIT = spec_option(TrainingOptionsSpec, "eval_limit", "--eval-limit")
_TRACE_LIMIT = spec_option(TrainingOptionsSpec, "trace_limit", "--trace-limit")
_PART = typer.Option(TrainingOptionsSpec.model_fields["part"].default, help="Within trainable blocks: all, mixer or mlp.")
_STRATEGY = typer.Option(TrainingOptionsSpec.model_fields["strategy"].default, "--strategy",
                         help="Under torchrun: ddp (every process holds the model) or fsdp (parameters, gradients "
                         "and AdamW state sharded over the processes).")
_AUTOCAST = typer.Option(TrainingOptionsSpec.model_fields["autocast"].default, "--autocast",
                         help="The forward's precision: auto (bf16 on CUDA or for bf16 weights), bf16, fp16 "
                         "(with a gradient scaler) or off; the trained weights stay float32 either way.")
_GRADIENT_CHECKPOINTING = typer.Option(TrainingOptionsSpec.model_fields["gradient_checkpointing"].default,
                                       "--gradient-checkpointing/--no-gradient-checkpointing",
                                       help="Recompute activations in backward: less memory, more compute.")
_CORPUS = typer.Option(..., "--corpus", "-c", help="Text/JSONL/parquet file, a folder of them, or a hub dataset "
                       "hf:org/name[@revision][:split]; tokenized once into $LAYERTRACER_CORPUS_CACHE (default "
                       "~/.cache/layertracer/corpora).")


def trial_command(
    model: str = _MODEL,
    corpus: str = _CORPUS,
    allocation: str = typer.Option(..., "--allocation", "-a", help="train-shallow, train-deep, full, from-trace[:PATH] or ranges such as 0-7,12."),
    benchmark: str = typer.Option("", "--benchmark", "-b", help=_BENCH_HELP),
    seeds: str = typer.Option("0", help="Comma-separated seeds: one trial each."),
    steps: int = _STEPS,
    batch_size: int = _BATCH_SIZE,
    grad_accum: int = _GRAD_ACCUM,
    block_size: int = _BLOCK_SIZE,
    lr: float = _LR,
    warmup_steps: int = _WARMUP,
    eval_shots: int = _EVAL_SHOTS,
    eval_mode: str = _EVAL_MODE,
    eval_limit: Optional[int] = _EVAL_LIMIT,
    trace_tasks: str = typer.Option("", help="Tasks to trace before and after training ('' to skip)."),
    trace_limit: int = _TRACE_LIMIT,
    embeddings: Optional[bool] = typer.Option(None, "--embeddings/--no-embeddings", help="Train the input embeddings too."),
    head: Optional[bool] = typer.Option(None, "--head/--no-head", help="Train the output head too."),
    final_norm: Optional[bool] = typer.Option(None, "--final-norm/--no-final-norm", help="Train the final norm too."),
    part: str = _PART,
    device: str = typer.Option("auto"),
    dtype: str = typer.Option("auto"),
    device_map: Optional[str] = DEVICE_MAP_OPTION,
    max_memory: Optional[str] = MAX_MEMORY_OPTION,
    offload_folder: Optional[Path] = OFFLOAD_FOLDER_OPTION,
    attn_implementation: Optional[str] = ATTN_OPTION,
    load_in: Optional[str] = LOAD_IN_OPTION,
    strategy: str = _STRATEGY,
    autocast: str = _AUTOCAST,
    gradient_checkpointing: bool = _GRADIENT_CHECKPOINTING,
    out_dir: Path = typer.Option(..., "--out", "-o", help="Result folder (a re-run resumes)."),
) -> None:
    """Continue pre-training with one allocation over seeds; evaluate before and after."""
    spec = _experiment_spec(model, corpus, [allocation], benchmark, seeds, steps, batch_size, grad_accum,
                            block_size, lr, warmup_steps, eval_shots, eval_limit, trace_tasks, trace_limit,
                            device, dtype, embeddings, head, final_norm, part, eval_mode,
                            placement(device_map, max_memory, offload_folder, attn_implementation, load_in),
                            strategy, gradient_checkpointing, autocast)
    _run_and_report(spec, out_dir)


def experiment_command(
    model: str = _MODEL,
    corpus: str = _CORPUS,
    allocations: str = typer.Option("train-shallow,full,train-deep", "--allocations", "-a", help="Comma-separated allocations; ranges inside need quoting with ';' between ranges, e.g. '0-3;6'."),
    benchmark: str = typer.Option("", "--benchmark", "-b", help=_BENCH_HELP),
    seeds: str = typer.Option("1,2,3", help="Comma-separated seeds."),
    steps: int = _STEPS,
    batch_size: int = _BATCH_SIZE,
    grad_accum: int = _GRAD_ACCUM,
    block_size: int = _BLOCK_SIZE,
    lr: float = _LR,
    warmup_steps: int = _WARMUP,
    eval_shots: int = _EVAL_SHOTS,
    eval_mode: str = _EVAL_MODE,
    eval_limit: Optional[int] = _EVAL_LIMIT,
    trace_tasks: str = typer.Option("", help="Tasks to trace before and after training ('' to skip)."),
    trace_limit: int = _TRACE_LIMIT,
    embeddings: Optional[bool] = typer.Option(None, "--embeddings/--no-embeddings"),
    head: Optional[bool] = typer.Option(None, "--head/--no-head"),
    final_norm: Optional[bool] = typer.Option(None, "--final-norm/--no-final-norm"),
    part: str = _PART,
    device: str = typer.Option("auto"),
    dtype: str = typer.Option("auto"),
    device_map: Optional[str] = DEVICE_MAP_OPTION,
    max_memory: Optional[str] = MAX_MEMORY_OPTION,
    offload_folder: Optional[Path] = OFFLOAD_FOLDER_OPTION,
    attn_implementation: Optional[str] = ATTN_OPTION,
    load_in: Optional[str] = LOAD_IN_OPTION,
    strategy: str = _STRATEGY,
    autocast: str = _AUTOCAST,
    gradient_checkpointing: bool = _GRADIENT_CHECKPOINTING,
    out_dir: Path = typer.Option(..., "--out", "-o", help="Result folder (a re-run resumes)."),
) -> None:
    """Several allocations x seeds on the same data, compared with intervals and significance tests."""
    names = [a.replace(";", ",") for a in split_list(allocations)]
    spec = _experiment_spec(model, corpus, names, benchmark, seeds, steps, batch_size, grad_accum, block_size,
                            lr, warmup_steps, eval_shots, eval_limit, trace_tasks, trace_limit, device, dtype,
                            embeddings, head, final_norm, part, eval_mode,
                            placement(device_map, max_memory, offload_folder, attn_implementation, load_in),
                            strategy, gradient_checkpointing, autocast)
    _run_and_report(spec, out_dir)


def hybrid_command(
    base: str = typer.Option(..., "--base", help="Base model folder."),
    layers: str = typer.Option(..., "--layers", help="Blocks to replace, as ranges (0-based): 4-7."),
    donor: Optional[str] = typer.Option(None, "--donor", help="Donor model folder (same hidden size and block type)."),
    donor_layers: Optional[str] = typer.Option(None, help="Donor blocks to take (default: the same indices)."),
    reinit: bool = typer.Option(False, help="Re-initialise the blocks instead (a stand-in for a new module type)."),
    seed: int = typer.Option(0),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for the hybrid model."),
) -> None:
    """Assemble a hybrid model: blocks in a depth range from a donor, or re-initialised."""
    from layertracer.hybrid import build_hybrid, save_hybrid
    from layertracer.models.loading import load_model
    from layertracer.ranges import parse_ranges

    if (donor is None) == (not reinit):
        fail("give either --donor DIR or --reinit")
    base_model = load_model(base, device="cpu", dtype="float32")
    chosen = parse_ranges(layers, base_model.adapter.num_layers)
    donor_model = load_model(donor, device="cpu", dtype="float32") if donor else None
    donor_ids = parse_ranges(donor_layers, donor_model.adapter.num_layers) if donor_layers and donor_model else None
    hybrid = build_hybrid(base_model, layers=chosen, donor=donor_model, donor_layers=donor_ids, reinit=reinit, seed=seed)
    save_hybrid(hybrid, out_dir)
    out.print(str(out_dir), highlight=False)


def export_command(
    model: str = typer.Option(..., "--model", "-m", help="Model folder (its parameter names are used)."),
    allocation: str = typer.Option(..., "--allocation", "-a", help="Preset, ranges, or from-trace:PATH."),
    fmt: str = typer.Option("axolotl", "--format", "-f", help="llamafactory, axolotl or ms-swift."),
    embeddings: Optional[bool] = typer.Option(None, "--embeddings/--no-embeddings"),
    head: Optional[bool] = typer.Option(None, "--head/--no-head"),
    final_norm: Optional[bool] = typer.Option(None, "--final-norm/--no-final-norm"),
    part: str = _PART,
) -> None:
    """Print an allocation as a config snippet for LLaMA-Factory, axolotl or ms-swift."""
    from layertracer.models.inspection import load_structure
    from layertracer.training.allocation import count_parameters, resolve_allocation
    from layertracer.training.export import export_allocation

    loaded = load_structure(model)  # the config alone: names and counts need no weights
    chosen = resolve_allocation(allocation, loaded.adapter.num_layers, embeddings=embeddings, head=head,
                                final_norm=final_norm, part=part)
    result = export_allocation(loaded.model, loaded.adapter, chosen, fmt)
    if not result.supported:
        fail(result.note)
    counts = count_parameters(loaded.model, loaded.adapter, chosen)
    out.print(result.text.rstrip("\n"), highlight=False, markup=False)
    err.print(f"trainable {counts.trainable:,} of {counts.total:,} parameters ({counts.share:.1%})"
              + (f"; {result.note}" if result.note else ""), highlight=False)


def demo_world_command(
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for the benchmarks and the corpus."),
    seed: int = typer.Option(0),
) -> None:
    """Write the demo's old-facts and new-facts benchmarks (C-Eval layout) and new-domain corpus."""
    from layertracer.demo.world import build_world

    world = build_world(out_dir, seed=seed)
    out.print_json(json.dumps({"old_facts": str(world.old_facts), "new_facts": str(world.new_facts),
                               "new_corpus": str(world.new_corpus), "benchmarks": world.benchmarks}))


COMMANDS = {
    "eval": eval_command,
    "trial": trial_command,
    "experiment": experiment_command,
    "hybrid": hybrid_command,
    "export-plan": export_command,
    "demo-world": demo_world_command,
}
