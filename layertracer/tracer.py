"""``trace``: the logit lens, task particles, layer sensitivity, similarity and a freeze plan in one pass.

Work per batch of prompts (B prompts, T tokens after right-padding, L blocks, V vocabulary):
- one clean forward, recording every block's input and output (no logits at all there);
- the lens at the answer position only: L head projections of (B, d), not (B, T, d);
- per perturbation and layer l: block l perturbed, blocks l+1.. replayed from the recorded state
  (layers before l are unchanged, so they are not recomputed), the head at the answer position only.
With ``lens="tuned"`` the (B, d) lens rows of every residual state but the last pass through its
tuned-lens translator (``layertracer.tuned_lens``) before the head; nothing else changes.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from pydantic import ValidationError

from layertracer._version import __version__
from layertracer.batching import context_length, pad_token_id, right_pad
from layertracer.errors import LayerTracerError
from layertracer.freeze_plan import plan_freeze
from layertracer.lens import HeadBuffer, answer_pass
from layertracer.models.loading import LoadedModel, load_model
from layertracer.perturbation import Perturbation, applicable, perturbed_output
from layertracer.progress import ProgressCallback, report
from layertracer.recording import record_stack, replay
from layertracer.results import PositionView, Sensitivity, Similarity, TaskTrace, TraceResult
from layertracer.stats import (
    ParticleRule,
    bootstrap_mean_ci,
    consecutive_cosine,
    linear_cka_matrix,
    nan_argmax,
)
from layertracer.tasks.encoding import EncodedItem, encode_task
from layertracer.tasks.sets import Task, load_tasks
from layertracer.tokens import readable_sequence, readable_token
from layertracer.tuned_lens import Translators, check_fits
from layertracer.training import distributed as dist_utils
from layertracer.trace_checkpoint import TraceCheckpoint, checkpoint_key
from layertracer.uncertainty import annotate
from layertracer.spec.fields import defaults, validation_message
from layertracer.spec.trace_options import ENGINE_FIELDS, TraceOptionsSpec


# Defaults of the options a user sets: the spec's (layertracer/spec/trace_options.py).
_SPEC = defaults(TraceOptionsSpec)


@dataclass
class TraceOptions:
    """Knobs of a trace; every one is recorded in the result.

    batch_size: prompts per forward pass. top_k: tokens kept per layer in the lens.
    particle_delta / particle_floor: the task-particle rule (see ``stats.ParticleRule``).
    seed: seeds the noise and mask perturbations and the bootstrap. draws: default draws for
    stochastic perturbations. bootstrap_resamples / ci_level: the stability curve's interval.
    similarity_max_prompts: prompts entering the CKA matrix (an (L, N, N) computation).
    position_task / position_prompt: the prompt of the per-position view (default: first task, 0).
    min_train_layers / plan_boundary: freeze-plan rule parameters (see ``freeze_plan``).
    lens: "logit", or "tuned": the residual states pass through tuned-lens translators (``trace``'s
    ``translators``) before the head, for every lens row and the per-position view.
    """

    batch_size: int = _SPEC["batch_size"]
    top_k: int = _SPEC["top_k"]
    particle_delta: float = _SPEC["particle_delta"]
    particle_floor: float = _SPEC["particle_floor"]
    seed: int = _SPEC["seed"]
    draws: int = _SPEC["draws"]
    bootstrap_resamples: int = 1000
    ci_level: float = 0.95
    similarity: bool = _SPEC["similarity"]
    similarity_max_prompts: int = 512
    position_view: bool = _SPEC["position_view"]
    position_task: Optional[str] = _SPEC["position_task"]
    position_prompt: int = _SPEC["position_prompt"]
    min_train_layers: int = _SPEC["min_train_layers"]
    plan_boundary: str = _SPEC["plan_boundary"]
    lens: str = _SPEC["lens"]

    def __post_init__(self) -> None:
        # The spec's limits hold here too: the engine refuses what the API and the forms refuse.
        try:
            TraceOptionsSpec.model_validate({name: getattr(self, name) for name in ENGINE_FIELDS})
        except ValidationError as exc:
            raise LayerTracerError(f"trace option {validation_message(exc)}") from None


@dataclass
class _Prompt:
    task: int
    index: int
    encoded: EncodedItem


class _TokenText:
    """Decodes token ids once each (a trace decodes the same few thousand tokens over and over)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self.cache.get(token_id)
        if text is None:  # bytes of a partial character as <0xNN>, never "�" (layertracer.tokens)
            text = self.cache[token_id] = readable_token(self.tokenizer, token_id)
        return text


def trace(
    model: LoadedModel | str,
    tasks: Sequence[Task] | str,
    *,
    perturbations: Sequence[str | Perturbation] = ("skip",),
    options: Optional[TraceOptions] = None,
    progress: Optional[ProgressCallback] = None,
    device: str = "auto",
    dtype: str = "auto",
    checkpoint: Optional[str | os.PathLike] = None,
    checkpoint_every_s: Optional[float] = None,
    split_ranks: bool = False,
    translators: Optional[Translators] = None,
) -> TraceResult:
    """Trace ``model`` on ``tasks``.

    model: a LoadedModel, or a local folder / hub id loaded with ``device`` and ``dtype``.
    tasks: Task objects, or a comma-separated spec of built-in names and files (see ``load_tasks``).
    perturbations: kinds for the sensitivity scan (see ``layertracer.perturbation``); the first is the
        primary one (``sensitivity``, ``vulnerable_layer`` and the freeze plan use it). May be empty.
    progress: called with ProgressEvent(stage, done, total) as work completes.
    checkpoint: a file for the partial results (``layertracer.trace_checkpoint``): a trace stopped
        part-way resumes from it with the same numbers; it is removed when the trace finishes. It is
        written when the trace is stopped by an exception and, after a batch, at most every
        ``checkpoint_every_s`` seconds (default ``trace_checkpoint.CHECKPOINT_EVERY_S``, 30).
    split_ranks: in a process group (torchrun), every rank runs every ``world_size``-th prompt (longest
        first) and the ranks then sum their rows, so each returns the whole result (the same numbers as one process:
        a prompt's numbers do not depend on its batch). A collective: every rank calls it alike.
    translators: with ``options.lens == "tuned"``, the tuned-lens translators of this model
        (``tuned_lens.load``): every residual state but the last is translated before the final norm
        and head, so the lens rows, the particles, the plan and the per-position view are the tuned
        lens's; the result's ``lens`` records which lens and the translator file's sha256.
    """
    options = options or TraceOptions()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    loaded = model if isinstance(model, LoadedModel) else load_model(model, device=device, dtype=dtype)
    timings["load"] = time.perf_counter() - started
    task_list = list(load_tasks(tasks) if isinstance(tasks, str) else tasks)
    if not task_list:
        raise LayerTracerError("no tasks to trace")
    if options.batch_size < 1 or options.top_k < 1:
        raise LayerTracerError("batch size and top-k must be at least 1")
    if options.plan_boundary not in ("median", "min"):
        raise LayerTracerError(f"plan boundary must be 'median' or 'min', not {options.plan_boundary!r}")
    perts = [
        p if isinstance(p, Perturbation) else Perturbation.parse(p, seed=options.seed, draws=options.draws)
        for p in perturbations
    ]
    names = [p.name for p in perts]
    if len(set(names)) != len(names):
        raise LayerTracerError(f"perturbation given twice: {', '.join(names)}")
    maps, lens_record = _lens(options, translators, loaded)
    split = split_ranks and dist_utils.world_size() > 1
    if split and checkpoint is not None:
        raise LayerTracerError("a trace split over ranks keeps no checkpoint file")

    net, adapter, tokenizer = loaded.model, loaded.adapter, loaded.tokenizer
    device_ = next(net.parameters()).device
    n_layers = adapter.num_layers
    context = context_length(net)
    prompts: list[_Prompt] = []
    for t, task in enumerate(task_list):
        if not task.items:
            raise LayerTracerError(f"task {task.name!r} has no items")
        for i, encoded in enumerate(encode_task(tokenizer, task, max_length=context)):
            prompts.append(_Prompt(task=t, index=i, encoded=encoded))
    n = len(prompts)
    k = min(options.top_k, loaded.info.vocab_size or options.top_k)

    baseline_prob = np.zeros(n)  # the lens on the embedding output, p[-1] of the particle rule
    target_prob = np.zeros((n, n_layers))
    target_rank = np.zeros((n, n_layers), dtype=np.int64)
    entropy = np.zeros((n, n_layers))
    kl_final = np.zeros((n, n_layers))  # KL(output || lens at layer l), nats
    top_ids = np.zeros((n, n_layers, k), dtype=np.int64)
    top_probs = np.zeros((n, n_layers, k))
    js = {p.name: np.full((n, n_layers), np.nan) for p in perts}
    sim_count = min(n, options.similarity_max_prompts) if options.similarity else 0
    sim_states = torch.zeros((n_layers, sim_count, loaded.info.hidden_size or 1), dtype=torch.float32)
    cosine_sum = torch.zeros(max(n_layers - 1, 0), dtype=torch.float64)

    # Longest first, so a batch holds prompts of similar length (less padding) and memory peaks early.
    order = sorted(range(n), key=lambda g: -len(prompts[g].encoded.input_ids))
    if split:  # every world_size-th prompt: the long ones (first) are dealt out like the short ones
        order = [order[i] for i in dist_utils.my_share(n)]
    batches = [order[s : s + options.batch_size] for s in range(0, len(order), options.batch_size)]
    units_per_prompt = 1 + sum(
        p.draws * sum(applicable(p, adapter, layer) for layer in range(n_layers)) for p in perts
    )
    # Progress in prompt-units, so that a batch split after running out of memory keeps the total.
    total_units = units_per_prompt * sum(len(batch) for batch in batches)
    clock = {"done": 0, "lens": 0.0, "sensitivity": 0.0}
    pad_id = pad_token_id(tokenizer)
    done_rows = np.zeros(n, dtype=bool)  # prompts whose batch has finished

    def partial_arrays() -> dict[str, np.ndarray]:
        """Everything the finished batches wrote: what a checkpoint holds."""
        arrays = {"done_rows": done_rows, "baseline_prob": baseline_prob, "target_prob": target_prob,
                  "target_rank": target_rank, "entropy": entropy, "kl_final": kl_final, "top_ids": top_ids,
                  "top_probs": top_probs,
                  "sim_states": sim_states.numpy(), "cosine_sum": cosine_sum.numpy()}
        arrays.update({f"js_{i}": js[p.name] for i, p in enumerate(perts)})
        return arrays

    store = None
    if checkpoint is not None:
        store = TraceCheckpoint(checkpoint, checkpoint_key([
            "trace-checkpoint-1", loaded.info.fingerprint, n_layers, k, sim_count, asdict(options),
            [p.describe() for p in perts],
            [[[int(i) for i in p.encoded.input_ids], int(p.encoded.target_id)] for p in prompts], lens_record,
        ]), every_s=checkpoint_every_s)
        saved = store.load()
        if saved is not None:
            current = partial_arrays()
            if set(saved) == set(current) and all(saved[name].shape == current[name].shape for name in current):
                for name, array in current.items():
                    array[...] = saved[name]  # sim_states / cosine_sum: numpy views of the tensors
                clock["done"] = int(done_rows.sum()) * units_per_prompt
                report(progress, "lens", clock["done"], total_units)
    resumed = int(done_rows.sum())

    head_buffer = HeadBuffer()  # one logits buffer for every batch's head pass

    def run_batch(batch: list[int]) -> None:
        """Lens and sensitivity for one batch; writes its rows only after all of it succeeded."""
        rows = np.asarray(batch)
        size = len(batch)
        done = clock["done"]
        ids, last = right_pad([prompts[g].encoded.input_ids for g in batch], pad_id, device_)
        arange = torch.arange(size, device=device_)
        targets = torch.tensor([prompts[g].encoded.target_id for g in batch], device=device_)
        tick = time.perf_counter()
        js_rows: dict[str, np.ndarray] = {}
        with torch.inference_mode():
            recording = record_stack(net, adapter, ids)
            answer = torch.stack([out[arange, last] for out in recording.outputs])  # (L, B, d)
            embedded = recording.inputs[0][arange, last]  # (B, d): the lens baseline, p[-1]
            # One stacked lens over the baseline and every layer: rows (L + 1) * B, layer-major.
            stacked = torch.cat([embedded[None], answer]).reshape(-1, answer.shape[-1])
            if maps is not None:  # the tuned lens: state j's (B, d) rows through translator j; the last as is
                stacked = torch.cat([maps(stacked[j * size : (j + 1) * size], j) for j in range(n_layers)]
                                    + [stacked[n_layers * size :]])
            done += size  # the clean pass: the lens's share of the batch (its statistics come with the head pass)
            report(progress, "lens", done, total_units)
            clock["lens"] += time.perf_counter() - tick
            tick = time.perf_counter()
            ids_list = [int(g) for g in batch]
            lengths = [len(prompts[g].encoded.input_ids) for g in batch]
            finals = []  # answer states of every perturbed run: per kind, (layers * draws) x (B, d)
            placed: list[tuple[Perturbation, list[int], int]] = []  # per kind: its layers, its first row in finals
            rows_so_far = 0
            for pert in perts:
                layers = [layer for layer in range(n_layers) if applicable(pert, adapter, layer)]
                placed.append((pert, layers, rows_so_far))
                for layer in layers:
                    for draw in range(pert.draws):
                        hidden = perturbed_output(pert, adapter, recording, layer, draw, ids_list, lengths)
                        finals.append(replay(adapter, recording, layer + 1, hidden)[arange, last])
                        done += size
                        report(progress, f"sensitivity:{pert.name}", done, total_units)
                rows_so_far += len(layers) * pert.draws * size
            clock["sensitivity"] += time.perf_counter() - tick
            tick = time.perf_counter()
            # One pass of the head over every answer state of the batch (its last B lens rows, the last
            # layer's, are the model's output: the reference of each lens row's KL and each run's JS).
            lens, run_js = answer_pass(adapter, stacked, targets.repeat(n_layers + 1), k, size,
                                       torch.cat(finals) if finals else None, buffer=head_buffer)
            for pert, layers, first in placed:
                js_rows[pert.name] = np.full((size, n_layers), np.nan)
                if layers:
                    count = len(layers) * pert.draws * size
                    per_layer = run_js[first : first + count].view(len(layers), pert.draws, size).mean(dim=1)  # (layers, B)
                    js_rows[pert.name][:, layers] = per_layer.T.numpy()
            # The head pass's time, shared by rows between the lens and the sensitivity.
            elapsed = time.perf_counter() - tick
            share = stacked.shape[0] / (stacked.shape[0] + rows_so_far)
            clock["lens"] += elapsed * share
            clock["sensitivity"] += elapsed * (1 - share)
            states = answer.float().cpu()
        # Everything computed: store it (a batch that ran out of memory above stored nothing).
        def by_layer(values: torch.Tensor) -> np.ndarray:
            """(L + 1) * B stacked rows -> (B, L + 1, ...) with the baseline in column 0."""
            return values.view(n_layers + 1, size, *values.shape[1:]).transpose(0, 1).numpy()

        baseline_prob[rows] = by_layer(lens.prob)[:, 0]
        target_prob[rows] = by_layer(lens.prob)[:, 1:]
        target_rank[rows] = by_layer(lens.rank)[:, 1:]
        entropy[rows] = by_layer(lens.entropy)[:, 1:]
        kl_final[rows] = by_layer(lens.kl)[:, 1:]
        top_ids[rows] = by_layer(lens.top_ids)[:, 1:]
        top_probs[rows] = by_layer(lens.top_probs)[:, 1:]
        for name, values in js_rows.items():
            js[name][rows] = values
        if n_layers > 1:
            cosine_sum.add_(consecutive_cosine(states).sum(dim=1))
        for column, g in enumerate(batch):
            if g < sim_count:
                sim_states[:, g] = states[:, column]
        done_rows[rows] = True
        clock["done"] = done

    # Batches of the prompts still to do (all of them unless resuming from a checkpoint).
    queue = [todo for todo in ([g for g in batch if not done_rows[g]] for batch in batches) if todo]
    splits = 0
    while queue:
        batch = queue.pop(0)
        try:
            run_batch(batch)
            if store is not None and store.due():
                store.save(partial_arrays())
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise LayerTracerError(
                    f"out of memory on a single prompt of {len(prompts[batch[0]].encoded.input_ids)} tokens: "
                    "use --dtype bfloat16, a larger device, or shorter prompts"
                ) from None
            if device_.type == "cuda":
                torch.cuda.empty_cache()
            half = len(batch) // 2
            queue[:0] = [batch[:half], batch[half:]]
            splits += 1
        except BaseException:
            # Stopped (cancelled, lease lost, shutting down, Ctrl-C): keep what the finished batches did.
            if store is not None and done_rows.sum() > resumed:
                store.save(partial_arrays())
            raise
    if split:
        _gather_ranks(partial_arrays(), [f"js_{i}" for i in range(len(perts))])
    timings["oom_batch_splits"] = float(splits)
    timings["resumed_prompts"] = float(resumed)
    lens_time, sens_time = clock["lens"], clock["sensitivity"]
    timings["lens"] = lens_time
    timings["sensitivity"] = sens_time

    rule = ParticleRule(delta=options.particle_delta, floor=options.particle_floor)
    text = _TokenText(tokenizer)
    task_traces: dict[str, TaskTrace] = {}
    prompt_index: list[tuple[str, int]] = []
    for t, task in enumerate(task_list):
        members = [g for g, p in enumerate(prompts) if p.task == t]
        prompt_index.extend((task.name, prompts[g].index) for g in members)
        probs_t = target_prob[members]
        base_t = baseline_prob[members]
        particles = [rule.find(row, base) for row, base in zip(probs_t, base_t)]
        counts: dict[str, int] = {}
        for particle in particles:
            key = "none" if particle is None else str(particle)
            counts[key] = counts.get(key, 0) + 1
        mean_curve = probs_t.mean(axis=0)
        encoded = [prompts[g].encoded for g in members]
        task_traces[task.name] = TaskTrace(
            name=task.name,
            language=task.language,
            prompts=[item.prompt for item in task.items],
            targets=[item.target for item in task.items],
            target_tokens=[e.target_token for e in encoded],
            target_token_ids=[e.target_id for e in encoded],
            boundary_merged=[e.boundary_merged for e in encoded],
            target_prob=probs_t.tolist(),
            target_rank=target_rank[members].tolist(),
            entropy=entropy[members].tolist(),
            kl_to_final=kl_final[members].tolist(),
            top_tokens=[[[text(int(i)) for i in layer] for layer in row] for row in top_ids[members]],
            top_probs=top_probs[members].tolist(),
            mean_target_prob=mean_curve.tolist(),
            baseline_prob=base_t.tolist(),
            task_particle=rule.find(mean_curve, float(base_t.mean())),
            prompt_particles=particles,
            particle_counts=counts,
            final_accuracy=float(np.mean(top_ids[members, -1, 0] == np.array([e.target_id for e in encoded]))),
        )
    # Rows of js follow prompt_index (task order), as documented.
    flat_order = [g for t in range(len(task_list)) for g, p in enumerate(prompts) if p.task == t]
    tick = time.perf_counter()
    sensitivities: dict[str, Sensitivity] = {}
    for pert in perts:
        values = js[pert.name][flat_order]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: not applicable layers
            mean = np.nanmean(values, axis=0)
        low, high = bootstrap_mean_ci(
            values, resamples=options.bootstrap_resamples, level=options.ci_level, seed=options.seed
        )
        by_task = {}
        for t, task in enumerate(task_list):
            rows_t = [g for g, p in enumerate(prompts) if p.task == t]
            by_task[task.name] = js[pert.name][rows_t].mean(axis=0).tolist()
        sensitivities[pert.name] = Sensitivity(
            perturbation=pert.name,
            params=pert.describe(),
            js=values.tolist(),
            mean_js=mean.tolist(),
            ci_low=low.tolist(),
            ci_high=high.tolist(),
            ci_level=options.ci_level,
            mean_js_by_task=by_task,
            vulnerable_layer=nan_argmax(mean),
        )
    timings["statistics"] = time.perf_counter() - tick
    primary = sensitivities[perts[0].name] if perts else None

    similarity = None
    if sim_count:
        tick = time.perf_counter()
        similarity = Similarity(
            cka=linear_cka_matrix(sim_states).tolist(),
            consecutive_cosine=(cosine_sum / n).tolist(),
            prompts_used=sim_count,
        )
        timings["similarity"] = time.perf_counter() - tick

    view = None
    if options.position_view:
        tick = time.perf_counter()
        view = _position_view(loaded, task_list, prompts, options, text, maps)
        timings["positions"] = time.perf_counter() - tick

    plan = plan_freeze(
        n_layers,
        {name: tt.task_particle for name, tt in task_traces.items()},
        primary.mean_js if primary else [],
        min_train=options.min_train_layers,
        boundary=options.plan_boundary,
    )
    timings["total"] = time.perf_counter() - started
    if store is not None:
        store.remove()
    return annotate(TraceResult(  # annotate: the bootstrap of the particles and the plan
        num_layers=n_layers,
        block_kinds=list(adapter.block_kinds),
        normalized_depth=[(layer + 1) / n_layers for layer in range(n_layers)],
        model=loaded.info.to_dict(),
        options={**asdict(options), "perturbations": [p.describe() for p in perts]},
        tasks=task_traces,
        prompt_index=prompt_index,
        sensitivity=primary,
        sensitivities=sensitivities,
        vulnerable_layer=primary.vulnerable_layer if primary else None,
        similarity=similarity,
        position_view=view,
        freeze_plan=plan,
        timings=timings,
        version=__version__,
        lens=lens_record,
    ))


class _Translate:
    """The tuned lens's translators applied to rows (..., d) of residual state ``index`` on the rows' own
    device (a copy is placed on each device once); the last state, which has no translator, as is.
    The rows never move: only the maps do, once. They are float32, L * d * d * 4 bytes on that device
    (0.5 MiB for the demo model, 20 GiB for 80 blocks of width 8192, as tuned-lens's own)."""

    def __init__(self, translators: Translators) -> None:
        self.translators = translators
        self.placed: dict[torch.device, Translators] = {}

    def __call__(self, states: torch.Tensor, index: int) -> torch.Tensor:
        if index >= self.translators.count:
            return states
        placed = self.placed.get(states.device)
        if placed is None:
            placed = self.placed[states.device] = self.translators.placed(states.device)
        return placed(states, index)


def _lens(options: TraceOptions, translators: Optional[Translators], loaded: LoadedModel
          ) -> tuple[Optional[_Translate], dict]:
    """(the translators to apply or None, the result's ``lens`` record) for ``options.lens``."""
    if options.lens == "logit":
        if translators is not None:
            raise LayerTracerError("translators were given but the lens is 'logit': set lens to 'tuned'")
        return None, {"kind": "logit"}
    if translators is None:
        raise LayerTracerError("the tuned lens needs translators for this model: train them with "
                               "`layertracer train-lens` and load them with layertracer.tuned_lens.load")
    check_fits(translators, loaded)
    return _Translate(translators), {"kind": "tuned", **translators.source}


def _gather_ranks(arrays: dict[str, np.ndarray], nan_marked: Sequence[str]) -> None:
    """Fill ``arrays`` in place with every rank's rows. A rank leaves the rows it did not do at their
    initial zeros, so sums gather them (and sum ``cosine_sum``, a sum over prompts, as a whole); the
    ``nan_marked`` arrays start as NaN (and keep NaN for a layer a perturbation does not apply to), so
    their values travel with a count of finite ones: an element no rank filled stays NaN."""
    mine = arrays["done_rows"].astype(bool)
    send: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        if name in nan_marked:
            finite = np.isfinite(array) & mine[:, None]
            send[name] = np.where(finite, array, 0.0)
            send[f"{name}:finite"] = finite
        else:
            send[name] = array
    summed = dist_utils.sum_over_ranks(send)
    for name, array in arrays.items():
        if name in nan_marked:
            array[...] = np.where(summed[f"{name}:finite"] > 0, summed[name], np.nan)
        else:
            array[...] = summed[name]


def _position_view(
    loaded: LoadedModel, task_list: Sequence[Task], prompts: Sequence[_Prompt], options: TraceOptions, text: _TokenText,
    maps: Optional["_Translate"] = None,
) -> PositionView:
    """Lens at every layer and position for one prompt: (L, T, V) computed layer by layer (through the
    translators ``maps`` of the tuned lens when given: block l's output is residual state l + 1)."""
    names = [t.name for t in task_list]
    task_name = options.position_task or names[0]
    if task_name not in names:
        raise LayerTracerError(f"position-view task {task_name!r} is not among the traced tasks")
    t = names.index(task_name)
    members = [p for p in prompts if p.task == t]
    if not 0 <= options.position_prompt < len(members):
        raise LayerTracerError(f"position-view prompt {options.position_prompt} is out of range 0-{len(members) - 1}")
    prompt = members[options.position_prompt]
    device = next(loaded.model.parameters()).device
    ids = torch.tensor([prompt.encoded.input_ids], device=device)
    target = prompt.encoded.target_id
    target_rows, top_rows, top_prob_rows = [], [], []
    with torch.inference_mode():
        recording = record_stack(loaded.model, loaded.adapter, ids)
        for layer, output in enumerate(recording.outputs):
            states = output[0] if maps is None else maps(output[0], layer + 1)  # (T, d)
            probs = torch.softmax(loaded.adapter.logits(states).float(), dim=-1)  # (T, V)
            values, indices = probs.max(dim=-1)
            target_rows.append(probs[:, target].double().cpu().tolist())
            top_rows.append([text(int(i)) for i in indices.cpu()])
            top_prob_rows.append(values.double().cpu().tolist())
    return PositionView(
        task=task_name,
        prompt_index=options.position_prompt,
        tokens=readable_sequence(text.tokenizer, [int(i) for i in prompt.encoded.input_ids]),
        target_token=prompt.encoded.target_token,
        target_prob=target_rows,
        top1_tokens=top_rows,
        top1_probs=top_prob_rows,
    )
