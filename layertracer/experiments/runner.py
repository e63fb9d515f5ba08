"""Running an experiment: evaluate (and trace) the base model once, then for every allocation x seed
continue pre-training a fresh copy, evaluate it again, measure weight drift and re-trace; finally
compare the allocations with seed summaries, paired bootstrap intervals and significance tests.

On disk (``out_dir``)::

    spec.json                      the ExperimentSpec (a re-run with the same folder resumes)
    baseline/eval-<bench>.json     EvalResult of the base model per benchmark
    baseline/trace.json            TraceResult of the base model (when trace tasks are given)
    trials/<slug>/checkpoints/     while a trial trains (removed when it finishes)
    trials/<slug>/eval-<bench>.json, trace.json, result.json
    result.json                    the experiment result (written last)

Every JSON file is written atomically; a trial with a result.json is never run again, and a trial with
checkpoints resumes from the last one.
"""

from __future__ import annotations

import gc
import json
import re
import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from layertracer import __version__
from layertracer.errors import LayerTracerError
from layertracer.experiments.spec import ExperimentSpec, trial_slug
from layertracer.experiments.statistics import compare_allocations, seed_summary
from layertracer.models.loading import LoadedModel, load_model
from layertracer.progress import ProgressCallback, report
from layertracer.spec.benchmarks import LM_EVAL, split_benchmark
from layertracer.training import distributed as dist_utils
from layertracer.training.allocation import count_parameters, resolve_allocation, trainable_parameters
from layertracer.training.sharded import check_strategy
from layertracer.training.shards import TokenBlocks, prepare_corpus
from layertracer.training.drift import weight_drift, weight_snapshot, with_unchanged
from layertracer.training.loop import StepMetrics, train

BASE = "base"

# How long a rank waits in one collective before the group fails (so a rank that died or hangs ends
# the job instead of holding the others for hours): every rank shares the evaluations and re-traces,
# so waits are short, except behind lm-eval tasks, which rank 0 runs alone with lm-eval's evaluator.
RANK_WAIT = timedelta(minutes=30)
RANK_WAIT_BEHIND_LM_EVAL = timedelta(hours=6)


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON write: temp file, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    temp.replace(path)


def bench_slug(spec: str) -> str:
    """``ceval:/data/old-facts`` -> ``ceval-old-facts``."""
    kind, _, folder = spec.partition(":")
    name = Path(folder).name if folder else kind
    return re.sub(r"[^A-Za-z0-9.-]+", "_", f"{kind}-{name}" if folder else name)


Blocks = torch.Tensor | TokenBlocks  # (num_blocks, block_size) token ids, in memory or on disk


def split_blocks(blocks: Blocks, holdout: float, seed: int = 0) -> tuple[Blocks, Optional[Blocks]]:
    """(train, holdout) blocks: a seeded permutation, the last ``holdout`` share held out for eval loss
    (views of the corpus on disk for ``TokenBlocks``: nothing is read)."""
    count = int(len(blocks) * holdout)
    if count == 0 or len(blocks) - count < 1:
        return blocks, None
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))
    if isinstance(blocks, TokenBlocks):
        return blocks.select(order[:-count]), blocks.select(order[-count:])
    return blocks[order[:-count]], blocks[order[-count:]]


def _trace_summary(result) -> dict[str, Any]:
    sens = result.sensitivity
    return {
        "task_particles": {name: task.task_particle for name, task in result.tasks.items()},
        "mean_target_prob": {name: task.mean_target_prob for name, task in result.tasks.items()},
        "final_accuracy": {name: task.final_accuracy for name, task in result.tasks.items()},
        "mean_js": sens.mean_js if sens else None,
        "vulnerable_layer": result.vulnerable_layer,
        "freeze_plan": {"train": result.freeze_plan.train_ranges, "freeze": result.freeze_plan.freeze_ranges},
    }


def baseline_partial(base: dict[str, Any]) -> dict[str, Any]:
    """What the service shows of the base model while the trials run: ``{"evals": {benchmark slug:
    overall scores}, "trace": {"task_particles", "vulnerable_layer", "freeze_plan": {train_ranges,
    freeze_ranges}} (when traced)}``."""
    out: dict[str, Any] = {"evals": {bench_slug(b): r.summary()["overall"] for b, r in base["evals"].items()}}
    summary = base.get("trace")
    if summary:
        out["trace"] = {"task_particles": summary["task_particles"], "vulnerable_layer": summary["vulnerable_layer"],
                        "freeze_plan": {"train_ranges": summary["freeze_plan"]["train"],
                                        "freeze_ranges": summary["freeze_plan"]["freeze"]}}
    return out


def trial_partial(trial: dict[str, Any]) -> dict[str, Any]:
    """A finished trial, briefly: allocation, seed, steps, final loss, per benchmark accuracy and change."""
    training = trial.get("training") or {}
    return {"allocation": trial.get("allocation_spec"), "seed": trial.get("seed"), "final_loss": training.get("final_loss"),
            "steps": training.get("steps"),
            "evals": {b: {"accuracy": e.get("accuracy"), "change": e.get("change")}
                      for b, e in (trial.get("evals") or {}).items()}}


def _retrace_change(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """How particles, sensitivity and the vulnerable layer moved between two trace summaries."""
    moved = {
        name: {"before": before["task_particles"].get(name), "after": layer}
        for name, layer in after["task_particles"].items()
    }
    js_change = None
    if before.get("mean_js") and after.get("mean_js"):
        js_change = [
            None if a is None or b is None else a - b for a, b in zip(after["mean_js"], before["mean_js"])
        ]
    return {
        "task_particles": moved,
        "mean_js_change": js_change,
        "vulnerable_layer": {"before": before.get("vulnerable_layer"), "after": after.get("vulnerable_layer")},
    }


class ExperimentRunner:
    """Runs one ExperimentSpec into ``out_dir`` (see the module docstring for the layout)."""

    def __init__(
        self,
        spec: ExperimentSpec,
        out_dir: str | Path,
        *,
        progress: Optional[ProgressCallback] = None,
        on_step: Optional[Callable[[str, StepMetrics], None]] = None,
        should_stop: Optional[Callable[[], bool]] = None,
        distributed: Optional[bool] = None,
        on_partial: Optional[Callable[[dict[str, Any]], None]] = None,
        corpus_cache: Optional[str | Path] = None,
    ) -> None:
        spec.validate()
        self.spec = spec
        # Data-parallel training across the processes of a launcher (torchrun, accelerate launch):
        # every rank trains, and the evaluations, re-traces and held-out losses are split over the
        # ranks; rank 0 alone runs lm-eval tasks, measures drift and writes, and the others read its
        # files (out_dir must be shared). None: on when WORLD_SIZE > 1.
        self.distributed = dist_utils.env_world_size() > 1 if distributed is None else distributed
        if self.distributed:
            behind = any(split_benchmark(b)[0] == LM_EVAL for b in spec.benchmarks)
            dist_utils.init_from_env(timeout=RANK_WAIT_BEHIND_LM_EVAL if behind else RANK_WAIT)
        self.main = dist_utils.is_main()
        check_strategy(spec.strategy, self.distributed or None)  # before any work: fsdp needs a launcher
        self.out = Path(out_dir)
        self.progress = progress
        self.on_step = on_step
        self.should_stop = should_stop
        # Partial results while the run goes on (rank 0): {"baseline": ...} once the base model is
        # measured, then {"trials": {slug: summary}} as each trial ends (or is found ended, on a resume).
        self.on_partial = on_partial
        # Where the tokenized corpus is cached (shards.default_cache_dir() when None).
        self.corpus_cache = corpus_cache
        self.trials = [(a, s) for a in spec.allocations for s in spec.seeds]

    # -- progress -----------------------------------------------------------------------------
    def _emit(self, what: str, done: int, total: int, trial: Optional[tuple[int, str]] = None) -> None:
        """A progress event for the baseline (``trial`` None) or trial ``(index, slug)``, with the whole
        run's fraction: a trial's training counts for most of its time, so trial i (0-based) at training
        share f is (i + 0.98 f) / n; its evaluation and re-trace after training are folded into its end."""
        count = len(self.trials)
        work = what.split(" ", 1)[0]
        if trial is None:
            report(self.progress, f"base: {what}", done, total, item="base", work=work, index=0, count=count,
                   fraction=0.0)
            return
        index, slug = trial
        share = min(done / total, 1.0) if work == "train" and total else 1.0
        report(self.progress, f"trial {index + 1}/{count} {slug}: {what}", done, total, item=slug, work=work,
               index=index + 1, count=count, fraction=min(1.0, (index + 0.98 * share) / max(count, 1)))

    def _partial(self, **values: Any) -> None:
        if self.on_partial is not None and self.main:
            self.on_partial(values)

    # -- pieces -------------------------------------------------------------------------------
    def _load(self, training: bool = False) -> LoadedModel:
        placement = dict(self.spec.placement)
        if (placement.get("device_map") or placement.get("max_memory")) and not placement.get("offload_folder"):
            placement["offload_folder"] = str(self.out / "offload")
        loaded = load_model(self.spec.model, device=self.spec.device, dtype=self.spec.dtype,
                            **{k: v for k, v in placement.items() if v is not None})
        if training and any(p.device.type == "meta" for p in loaded.model.parameters()):
            # Offloaded weights live in accelerate's hooks, not in the parameters the optimizer updates.
            where = sorted({str(v) for v in (getattr(loaded.model, "hf_device_map", None) or {}).values()})
            raise LayerTracerError(f"a trial cannot train weights offloaded by its placement (placed on {', '.join(where)}); "
                                   "give the devices more memory (max_memory) or spread the model over GPUs only")
        return loaded

    def _evaluate(self, loaded: LoadedModel, trial: Optional[tuple[int, str]] = None,
                  benchmarks: Optional[list[str]] = None) -> dict[str, Any]:
        """EvalResults by benchmark (default: all of the spec's). With several ranks the built-in
        benchmarks are scored by every rank together; an lm-eval task by rank 0 alone (the others
        leave it out of their dict)."""
        from layertracer.evaluation import evaluate

        results = {}
        for bench in self.spec.benchmarks if benchmarks is None else benchmarks:
            harness = split_benchmark(bench)[0] == LM_EVAL
            if harness and not self.main:
                continue
            result = evaluate(
                loaded,
                bench,
                mode=self.spec.eval_mode,
                shots=self.spec.eval_shots,
                batch_size=self.spec.eval_batch_size,
                limit=self.spec.eval_limit,
                progress=lambda e, b=bench: self._emit(f"eval {bench_slug(b)}", e.done, e.total, trial),
                split_ranks=self.distributed and not harness,
            )
            results[bench] = result
        return results

    def _trace(self, loaded: LoadedModel, trial: Optional[tuple[int, str]] = None):
        from layertracer.tasks.sets import load_tasks
        from layertracer.tracer import TraceOptions, trace

        return trace(
            loaded,
            load_tasks(self.spec.trace_tasks, limit=self.spec.trace_limit),
            perturbations=self.spec.trace_perturbations,
            options=TraceOptions(batch_size=16, position_view=False, similarity=False),
            progress=lambda e: self._emit("trace", e.done, e.total, trial),
            split_ranks=self.distributed,
        )

    def _main_says(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank: decisions that start collective work (is this file there
        yet?) are taken once, so no two ranks see a file another rank is writing differently."""
        return dist_utils.broadcast_flag(flag and self.main) if self.distributed else flag

    def _stop_requested(self) -> bool:
        """``should_stop`` asked on rank 0, its answer shared with every rank."""
        asked = self.main and self.should_stop is not None and bool(self.should_stop())
        return dist_utils.broadcast_flag(asked) if self.distributed else asked

    def _check_spec_file(self) -> None:
        path = self.out / "spec.json"
        if path.is_file():
            stored = json.loads(path.read_text(encoding="utf-8"))
            current = self.spec.to_dict()
            # A field added since the folder was written counts as its default there.
            blank = ExperimentSpec(model=self.spec.model, corpus=self.spec.corpus).to_dict()
            stored = {**{k: v for k, v in current.items() if k not in stored and v == blank[k]}, **stored}
            if stored != current:
                raise LayerTracerError(
                    f"{self.out} holds another experiment (its spec.json differs); use a new --out folder"
                )
        else:
            write_json(path, self.spec.to_dict())

    # -- the run ------------------------------------------------------------------------------
    def baseline(self, loaded: LoadedModel) -> dict[str, Any]:
        """Evaluate and trace the base model once (cached in baseline/). With several ranks they share
        the work, rank 0 writes the files, and every rank returns once they are written (a from-trace
        allocation reads the trace file). Rank 0's dict is complete; the others may lack lm-eval tasks."""
        from layertracer.evaluation import EvalResult

        folder = self.out / "baseline"
        folder.mkdir(parents=True, exist_ok=True)
        evals, missing = {}, []
        for bench in self.spec.benchmarks:
            path = folder / f"eval-{bench_slug(bench)}.json"
            if self._main_says(path.is_file()):
                evals[bench] = EvalResult.load(path)
            else:
                missing.append(bench)
        if missing:
            for bench, fresh in self._evaluate(loaded, benchmarks=missing).items():
                if self.main:
                    fresh.to_json(folder / f"eval-{bench_slug(bench)}.json")
                evals[bench] = fresh
        trace_path = folder / "trace.json"
        trace_summary = None
        if self.spec.trace_tasks:
            from layertracer.results import TraceResult

            if self._main_says(trace_path.is_file()):
                result = TraceResult.load(trace_path)
            else:
                result = self._trace(loaded)
                if self.main:
                    result.to_json(trace_path)
            trace_summary = _trace_summary(result)
        if self.distributed:
            dist_utils.barrier()
        return {"evals": evals, "trace": trace_summary, "trace_path": str(trace_path) if trace_summary else None}

    def run_trial(self, index: int, allocation_spec: str, seed: int, blocks, holdout, base: dict) -> Optional[dict]:
        """One trial; returns its result (None when stopped before finishing)."""
        slug = trial_slug(allocation_spec, seed)
        folder = self.out / "trials" / slug
        done_path = folder / "result.json"
        if self._main_says(done_path.is_file()):
            return json.loads(done_path.read_text(encoding="utf-8"))
        stage = (index, slug)
        loaded = self._load(training=True)
        spec_text = allocation_spec
        if allocation_spec == "from-trace":
            spec_text = f"from-trace:{base['trace_path']}"
        allocation = resolve_allocation(
            spec_text,
            loaded.adapter.num_layers,
            embeddings=self.spec.embeddings,
            head=self.spec.head,
            final_norm=self.spec.final_norm,
            part=self.spec.part,
        )
        counts = count_parameters(loaded.model, loaded.adapter, allocation)
        # Rank 0 alone measures drift, and only the trained parameters change: they alone are copied.
        before = (weight_snapshot(loaded.model, only=trainable_parameters(loaded.model, loaded.adapter, allocation))
                  if self.main else {})
        config = self.spec.train_config(seed)
        torch.manual_seed(seed)

        def step(metrics: StepMetrics) -> None:
            self._emit("train", metrics.step, config.steps, stage)
            if self.on_step is not None:
                self.on_step(slug, metrics)

        trained = train(
            loaded,
            blocks,
            allocation,
            config,
            eval_blocks=holdout,
            checkpoint_dir=folder / "checkpoints",
            on_step=step,
            should_stop=self.should_stop,
            distributed=self.distributed,
        )
        if trained.stopped:
            return None
        result = self._finish_trial(loaded, slug, stage, folder, allocation_spec, allocation, seed, counts,
                                    before, config, trained, blocks, holdout, base)
        if self.distributed:
            dist_utils.barrier()
            if not self.main:  # rank 0 wrote the whole result (drift, lm-eval tasks): read it
                return json.loads(done_path.read_text(encoding="utf-8"))
        return result

    def _finish_trial(self, loaded, slug, stage: tuple[int, str], folder, allocation_spec, allocation, seed, counts, before,
                      config, trained, blocks, holdout, base) -> dict:
        """Evaluate, measure drift, re-trace and write the trial's result.json. Every rank calls it:
        the evaluations, the re-trace and the held-out loss are shared; rank 0 alone measures drift
        and writes (the others return None)."""
        done_path = folder / "result.json"
        after_evals = self._evaluate(loaded, stage)
        holdout_after = _holdout_loss(loaded, holdout, config.batch_size, split=self.distributed)
        retrace = None
        if self.spec.trace_tasks:
            trace_result = self._trace(loaded, stage)
            summary = _trace_summary(trace_result)
            retrace = {"summary": summary, "change": _retrace_change(base["trace"], summary)}
        if not self.main:
            del loaded
            gc.collect()
            return None
        if retrace is not None:
            trace_result.to_json(folder / "trace.json")
        evals = {}
        for bench, result in after_evals.items():
            folder.mkdir(parents=True, exist_ok=True)
            result.to_json(folder / f"eval-{bench_slug(bench)}.json")
            base_result = base["evals"][bench]
            evals[bench] = {
                "accuracy": result.overall.accuracy,
                "macro_accuracy": result.overall.macro_accuracy,
                "before": base_result.overall.accuracy,
                "change": result.overall.accuracy - base_result.overall.accuracy,
                "categories": {k: v.accuracy for k, v in result.categories.items()},
                "subjects": {k: v.accuracy for k, v in result.subjects.items()},
                "question_ids": [f"{r.subject}/{r.id}" for r in result.records],
                "correct": [bool(r.correct) for r in result.records],
                "settings": result.summary()["settings"],
            }
        drift = weight_drift(loaded.adapter, with_unchanged(before, loaded.model), loaded.model)
        history = trained.history
        result = {
            "slug": slug,
            "allocation_spec": allocation_spec,
            "allocation": allocation.to_dict(),
            "seed": seed,
            "parameters": counts.to_dict(),
            "training": {
                "steps": trained.steps_done,
                "resumed_from": trained.resumed_from,
                "tokens_seen": trained.steps_done * config.batch_size * config.grad_accum * blocks.shape[1],
                "seconds": trained.seconds,
                "first_loss": history[0].loss if history else None,
                "final_loss": history[-1].loss if history else None,
                "mean_tokens_per_s": float(np.mean([m.tokens_per_s for m in history])) if history else None,
                "loss_curve": [[m.step, m.loss] for m in history],
                "eval_loss": trained.eval_history,
                "holdout_loss_after": holdout_after,
                "precision": trained.precision,
                "world_size": trained.world_size,
            },
            "evals": evals,
            "drift": drift,
            "retrace": retrace,
        }
        write_json(done_path, result)
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
        del loaded
        gc.collect()
        return result

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._check_spec_file()
        if self.distributed:
            dist_utils.barrier()
        loaded = self._load()
        for allocation in self.spec.allocations:  # fail on a bad allocation before any work
            if allocation != "from-trace":
                resolve_allocation(allocation, loaded.adapter.num_layers, embeddings=self.spec.embeddings,
                                   head=self.spec.head, final_norm=self.spec.final_norm, part=self.spec.part)
        stream = prepare_corpus(self.spec.corpus, loaded.tokenizer, cache_dir=self.corpus_cache,
                                progress=lambda read, total: self._emit("tokenize corpus (bytes)", read, total))
        blocks = stream.blocks(self.spec.block_size)
        train_blocks, holdout = split_blocks(blocks, self.spec.holdout)
        base = self.baseline(loaded)
        self._partial(baseline=baseline_partial(base))
        base_holdout = _holdout_loss(loaded, holdout, self.spec.batch_size, split=self.distributed)
        del loaded
        gc.collect()
        trials = []
        for index, (allocation, seed) in enumerate(self.trials):
            if self._stop_requested():
                break
            outcome = self.run_trial(index, allocation, seed, train_blocks, holdout, base)
            if outcome is None:
                break
            trials.append(outcome)
            self._partial(trials={t["slug"]: trial_partial(t) for t in trials})
        complete = len(trials) == len(self.trials)
        if self.distributed and not self.main:  # rank 0's result is the whole one (lm-eval tasks, timings)
            dist_utils.barrier()
            return json.loads((self.out / "result.json").read_text(encoding="utf-8"))
        result = {
            "spec": self.spec.to_dict(),
            "status": "complete" if complete else "stopped",
            "version": __version__,
            "corpus": {"key": stream.key, "tokens": len(stream.tokens), "documents": stream.index["documents"],
                       "blocks": len(blocks), "train_blocks": len(train_blocks),
                       "holdout_blocks": 0 if holdout is None else len(holdout), "block_size": self.spec.block_size},
            "baseline": {
                "evals": {b: r.summary() for b, r in base["evals"].items()},
                "trace": base["trace"],
                "holdout_loss": base_holdout,
            },
            "trials": [{k: v for k, v in t.items() if k != "evals"} | {"evals": _strip(t["evals"])} for t in trials],
            "statistics": self.statistics(trials, base) if trials else {},
            "table": self.table(trials, base),
            "seconds": time.perf_counter() - started,
        }
        if self.distributed:
            result["world_size"] = dist_utils.world_size()
        write_json(self.out / "result.json", result)
        if self.distributed:
            dist_utils.barrier()
        return result

    # -- comparisons --------------------------------------------------------------------------
    def statistics(self, trials: list[dict], base: dict) -> dict[str, Any]:
        """Per benchmark: allocations (and the base model) compared question by question."""
        out = {}
        for bench in self.spec.benchmarks:
            per_question: dict[str, np.ndarray] = {
                BASE: np.array([[r.correct for r in base["evals"][bench].records]], dtype=float)
            }
            for allocation in self.spec.allocations:
                rows = [t["evals"][bench]["correct"] for t in trials if t["allocation_spec"] == allocation]
                if rows:
                    per_question[allocation] = np.array(rows, dtype=float)
            out[bench] = compare_allocations(per_question)
        return out

    def table(self, trials: list[dict], base: dict) -> list[dict[str, Any]]:
        """One row per allocation (and the base model): accuracy per benchmark over seeds with a t-interval,
        its change from the base model, trainable share and compute."""
        rows = [{
            "allocation": BASE,
            "label": BASE,
            "trainable_share": 0.0,
            "benchmarks": {b: seed_summary([r.overall.accuracy]) for b, r in base["evals"].items()},
        }]
        for allocation in self.spec.allocations:
            mine = [t for t in trials if t["allocation_spec"] == allocation]
            if not mine:
                continue
            row: dict[str, Any] = {
                "allocation": allocation,
                "label": self.spec.labels.get(allocation, allocation),
                "ranges": mine[0]["allocation"]["ranges"],
                "trainable_share": mine[0]["parameters"]["share"],
                "trainable_parameters": mine[0]["parameters"]["trainable"],
                "seeds": [t["seed"] for t in mine],
                "train_seconds": seed_summary([t["training"]["seconds"] for t in mine]),
                "tokens_per_s": seed_summary([t["training"]["mean_tokens_per_s"] or 0.0 for t in mine]),
                "final_loss": seed_summary([t["training"]["final_loss"] for t in mine]),
                "benchmarks": {},
                "change": {},
            }
            for bench in self.spec.benchmarks:
                row["benchmarks"][bench] = seed_summary([t["evals"][bench]["accuracy"] for t in mine])
                row["change"][bench] = seed_summary([t["evals"][bench]["change"] for t in mine])
            rows.append(row)
        return rows


def _strip(evals: dict[str, Any]) -> dict[str, Any]:
    """Trial evals without the per-question lists (those stay in the trial's own files)."""
    return {b: {k: v for k, v in e.items() if k not in ("question_ids", "correct")} for b, e in evals.items()}


def _holdout_loss(loaded: LoadedModel, holdout: Optional[torch.Tensor], batch_size: int,
                  split: bool = False) -> Optional[float]:
    """Mean loss (nats/token) on the held-out blocks; ``split``: shared by the ranks (a collective)."""
    from layertracer.training.loop import eval_loss

    if holdout is None:
        return None
    return eval_loss(loaded.model, holdout, batch_size=batch_size, max_batches=1 << 30, split_ranks=split)


def run_experiment(spec: ExperimentSpec, out_dir: str | Path, **kwargs) -> dict[str, Any]:
    """Run (or resume) an experiment into ``out_dir``; returns the result written to result.json."""
    return ExperimentRunner(spec, out_dir, **kwargs).run()
