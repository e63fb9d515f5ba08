"""Continued pre-training with a layer allocation: causal-LM loss, AdamW over the trainable parameters
only, warmup + cosine, gradient accumulation, clipping, periodic eval loss, atomic checkpoints and an
exact resume.

Frozen parameters have ``requires_grad=False`` and no optimizer state. With the embeddings frozen, the
blocks below the first trainable one see no tensor that requires grad, so autograd records nothing for
them (no saved activations, no backward); frozen blocks above it get input gradients but no weight
gradients.

Data order is a pure function of (seed, step): the sample for micro-batch m of step s is drawn from a
per-epoch permutation seeded by (seed, epoch), so a resumed run sees exactly the batches the
uninterrupted run would have seen. The model's key/value cache is switched off while it trains (no
training forward reads it; it would only cost memory).

Data parallel (several processes, ``torchrun`` / ``accelerate launch``): when a process group is up
(or ``train(..., distributed=True)`` creates one from the launcher's environment), the model is wrapped
in DistributedDataParallel. Only the trainable parameters (``requires_grad``) are in its gradient
buckets. Every process draws the same global micro-batch of ``batch_size`` sequences and takes its
contiguous ``batch_size / world_size`` share; the gradients are averaged over processes on the last
micro-batch of a step only (``no_sync`` on the others), so a step equals a single-process step over the
global batch up to float summation order. Losses are reported as global means, rank 0 alone writes
checkpoints, every rank resumes from them, and rank 0's ``should_stop`` answer is broadcast. Without a
group (or with one process) none of this runs: the single-process path is unchanged.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from torch import nn

from layertracer.errors import LayerTracerError
from layertracer.models.loading import LoadedModel
from layertracer.spec.fields import defaults, validation_message
from layertracer.spec.training import TRAIN_CONFIG_FIELDS, TrainingOptionsSpec
from layertracer.training import distributed as dist_utils
from layertracer.training.allocation import Allocation, ParameterCount, apply_allocation, count_parameters
from layertracer.training.fused_loss import fused_loss_module
from layertracer.training.step_folders import StepFolders
from layertracer.training.precision import LOW_PRECISION, forward_dtype
from layertracer.training.sharded import ShardedCheckpoints, check_strategy, sharded_training
from layertracer.training.sharded import eval_loss as sharded_eval_loss
from layertracer.training.sharded import total_norm as sharded_total_norm


# Defaults of the hyper-parameters a user sets: the spec's (layertracer/spec/training.py).
_SPEC = defaults(TrainingOptionsSpec)


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run.

    batch_size: sequences per micro-batch (over all processes); grad_accum: micro-batches per step,
    so a step sees batch_size * grad_accum * block_size tokens. lr: peak learning rate after
    ``warmup_steps`` linear warmup, then cosine to ``lr * min_lr_ratio`` at ``steps``.
    max_grad_norm: clipping (0 = off). eval_every / checkpoint_every: in steps (0 = never).
    autocast: the forward's precision: "auto" (bf16 on CUDA, or when the model holds bf16/fp16 weights),
        "bf16", "fp16" (float16 autocast with a gradient scaler: its loss scale travels in checkpoints)
        or "off".
    fused_loss: compute the head and the loss in chunks, never holding the (B, T, V) logits (see
        ``training.fused_loss``; the same loss and gradients, less peak memory). Models with
        soft-capped logits always use the standard forward.
    strategy: with several processes, "ddp" (each holds the whole model, its gradients and AdamW state)
        or "fsdp" (each holds 1/N of them; see ``training.sharded``).
    """

    steps: int = _SPEC["steps"]
    batch_size: int = _SPEC["batch_size"]
    grad_accum: int = _SPEC["grad_accum"]
    lr: float = _SPEC["lr"]
    min_lr_ratio: float = _SPEC["min_lr_ratio"]
    warmup_steps: int = _SPEC["warmup_steps"]
    weight_decay: float = _SPEC["weight_decay"]
    beta1: float = 0.9
    beta2: float = 0.95
    max_grad_norm: float = _SPEC["max_grad_norm"]
    seed: int = 0
    eval_every: int = _SPEC["eval_every"]
    eval_batches: int = 4
    checkpoint_every: int = _SPEC["checkpoint_every"]
    autocast: str = _SPEC["autocast"]
    gradient_checkpointing: bool = _SPEC["gradient_checkpointing"]
    fused_loss: bool = True
    strategy: str = _SPEC["strategy"]

    def validate(self) -> None:
        try:  # the spec's limits (layertracer/spec/training.py)
            TrainingOptionsSpec.model_validate({name: getattr(self, name) for name in TRAIN_CONFIG_FIELDS})
        except ValidationError as exc:
            raise LayerTracerError(f"training option {validation_message(exc)}") from None


@dataclass
class StepMetrics:
    """One optimizer step: mean loss over its micro-batches (nats/token), lr, throughput, grad norm."""

    step: int
    loss: float
    lr: float
    tokens_per_s: float
    grad_norm: float
    elapsed_s: float
    eval_loss: Optional[float] = None


@dataclass
class TrainResult:
    """What a training run did; ``history`` holds one StepMetrics per step, those of the run it resumed
    from included (they travel in the checkpoint).

    world_size: processes that trained together (1 = single process); tokens are counted over all.
    fused_loss: whether the chunked head + loss ran (False: the model's own forward computed the loss).
    precision: the mixed-precision policy (``master_weights``, ``frozen`` load dtypes, ``autocast``).
    """

    allocation: dict
    parameters: dict
    config: dict
    history: list[StepMetrics] = field(default_factory=list)
    eval_history: list[tuple[int, float]] = field(default_factory=list)
    resumed_from: Optional[int] = None
    steps_done: int = 0
    tokens_seen: int = 0
    seconds: float = 0.0
    stopped: bool = False
    world_size: int = 1
    fused_loss: bool = False
    precision: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def lr_at(step: int, config: TrainConfig) -> float:
    """The learning rate used for optimizer step ``step`` (0-based): linear warmup, then cosine."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(config.steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def sample_indices(step: int, micro: int, config: TrainConfig, num_blocks: int) -> list[int]:
    """Block indices of micro-batch ``micro`` of step ``step`` (a function of seed and step only)."""
    first = (step * config.grad_accum + micro) * config.batch_size
    indices = []
    permutations: dict[int, torch.Tensor] = {}
    for position in range(first, first + config.batch_size):
        epoch, offset = divmod(position, num_blocks)
        if epoch not in permutations:
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
            permutations[epoch] = torch.randperm(num_blocks, generator=generator)
        indices.append(int(permutations[epoch][offset]))
    return indices


def data_position(blocks, step: int, config: TrainConfig) -> dict:
    """Where in the data a run is after ``step`` steps, stored in every checkpoint: the corpus (its cache
    key; None for blocks in memory), its block count and the blocks drawn so far. The draw itself is a
    function of seed and step (``sample_indices``), so a resumed run continues with the next block."""
    return {"corpus": getattr(blocks, "key", None), "blocks": len(blocks),
            "samples": step * config.grad_accum * config.batch_size}


def _check_same_data(stored: Optional[dict], current: dict, checkpoint: Path) -> None:
    """Refuse to resume a checkpoint written on other data (its position would mean other blocks)."""
    if not stored:
        return  # a checkpoint from before data positions were recorded
    if stored.get("blocks") != current["blocks"] or (
        stored.get("corpus") and current["corpus"] and stored["corpus"] != current["corpus"]
    ):
        raise LayerTracerError(
            f"the checkpoint {checkpoint} was written on other data ({stored.get('blocks')} blocks of corpus "
            f"{stored.get('corpus')}, now {current['blocks']} of {current['corpus']}): train on the same "
            "corpus and block size, or remove the checkpoint to start over"
        )


def _param_names(model: nn.Module) -> dict[int, str]:
    names: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=True):
        names.setdefault(id(param), name)
    return names


def eval_loss(model: nn.Module, blocks: torch.Tensor, *, batch_size: int, max_batches: int,
              split_ranks: bool = False) -> float:
    """Mean causal-LM loss (nats/token) over the first ``max_batches`` batches of ``blocks`` (N, T).
    ``split_ranks``: in a process group every rank runs every ``world_size``-th batch and the sums are
    added over the ranks (a collective: every rank calls it alike)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    starts = list(range(0, min(len(blocks), batch_size * max_batches), batch_size))
    if split_ranks:
        starts = [starts[i] for i in dist_utils.my_share(len(starts))]
    total, weight = 0.0, 0
    with torch.no_grad():
        for start in starts:
            batch = blocks[start : start + batch_size].to(device)
            total += float(model(input_ids=batch, labels=batch).loss) * len(batch)
            weight += len(batch)
    model.train(was_training)
    if split_ranks:
        total, weight = dist_utils.all_reduce_sum([total, weight])
    return total / max(weight, 1)


class Checkpoints(StepFolders):
    """Atomic checkpoints in a folder: ``step-000123/`` written as a temp folder, then renamed.

    Each holds ``trainable.safetensors`` (the trainable parameters by name), ``optimizer.safetensors``
    (AdamW moments and step counts by parameter name, and the RNG state) and ``state.json``. No pickle.
    """

    def save(self, step: int, model: nn.Module, params: list[nn.Parameter], optimizer, extra: dict) -> Path:
        names = _param_names(model)
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"step-{step:06d}"
        temp = self.folder / f".tmp-step-{step:06d}-{os.getpid()}"
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
        save_file({names[id(p)]: p.detach().contiguous().cpu() for p in params}, str(temp / "trainable.safetensors"))
        moments: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
        for param in params:
            state = optimizer.state.get(param, {})
            for key in ("exp_avg", "exp_avg_sq", "step"):
                if key in state:
                    value = state[key]
                    value = value if isinstance(value, torch.Tensor) else torch.tensor(float(value))
                    moments[f"{names[id(param)]}::{key}"] = value.detach().contiguous().cpu()
        save_file(moments, str(temp / "optimizer.safetensors"))
        (temp / "state.json").write_text(json.dumps({"step": step, **extra}), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(temp, final)
        return final

    def load(self, path: Path, model: nn.Module, params: list[nn.Parameter], optimizer) -> dict:
        names = _param_names(model)
        weights = load_file(str(path / "trainable.safetensors"))
        moments = load_file(str(path / "optimizer.safetensors"))
        with torch.no_grad():
            for param in params:
                name = names[id(param)]
                if name not in weights:
                    raise LayerTracerError(f"checkpoint {path} does not match this allocation (no {name})")
                param.copy_(weights[name].to(param.device, param.dtype))
                state = {}
                for key in ("exp_avg", "exp_avg_sq", "step"):
                    stored = moments.get(f"{name}::{key}")
                    if stored is not None:
                        state[key] = stored.to(param.device) if key != "step" else stored.clone()
                if state:
                    optimizer.state[param] = state
        if "rng.torch" in moments:
            torch.set_rng_state(moments["rng.torch"])
        return json.loads((path / "state.json").read_text(encoding="utf-8"))


def _disable_kv_cache(model: nn.Module) -> list:
    """Switch off ``use_cache`` in the model's config (and its text config) for training, as
    ``transformers.Trainer`` does: a training forward never reads the key/value cache, and building it
    copies every block's keys and values (memory and time). Returns the configs to switch back on."""
    configs = []
    config = getattr(model, "config", None)
    candidates = [config]
    if config is not None and hasattr(config, "get_text_config"):
        candidates.append(config.get_text_config())
    for candidate in candidates:
        if getattr(candidate, "use_cache", False) is True and all(candidate is not c for c in configs):
            candidate.use_cache = False
            configs.append(candidate)
    return configs


@dataclass(frozen=True)
class _Ranks:
    """The data-parallel world of a distributed run."""

    rank: int
    size: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def _join_process_group(model: nn.Module, config: TrainConfig, distributed: Optional[bool]) -> Optional[_Ranks]:
    """The world ``train`` runs in: None for a single process (no group, a group of one, or
    ``distributed=False``). With ``distributed=True`` a group is created from the launcher's environment
    when there is none. Checks the batch split and puts a CUDA model on this rank's ``LOCAL_RANK`` GPU."""
    if distributed is False:
        return None
    device = next(model.parameters()).device
    if distributed:
        dist_utils.init_from_env(backend=dist_utils.default_backend(device))
    elif not dist_utils.is_initialized() and dist_utils.env_world_size() > 1:
        warnings.warn(
            f"WORLD_SIZE={dist_utils.env_world_size()} but torch.distributed is not initialised: this process "
            "trains alone on all the data; pass train(..., distributed=True) to train data-parallel",
            RuntimeWarning,
            stacklevel=3,
        )
    if not dist_utils.is_initialized() or dist_utils.world_size() == 1:
        return None
    ranks = _Ranks(rank=dist_utils.rank(), size=dist_utils.world_size())
    if config.batch_size % ranks.size:
        raise LayerTracerError(
            f"the batch size {config.batch_size} is not a multiple of the {ranks.size} processes: every process "
            f"takes batch_size / world_size sequences of each micro-batch; use a multiple of {ranks.size}"
        )
    backend = torch.distributed.get_backend()
    if device.type == "cuda":
        target = torch.device("cuda", dist_utils.local_rank())
        torch.cuda.set_device(target)
        if device != target:
            model.to(target)
    elif backend == "nccl":
        raise LayerTracerError(f"the process group uses nccl but the model is on {device}: use gloo on CPU")
    return ranks


def _agreed_latest(store: "Checkpoints", ranks: _Ranks) -> Optional[Path]:
    """The checkpoint every rank resumes from: rank 0's latest, checked to be visible on every rank."""
    latest = store.latest() if ranks.main else None
    step = dist_utils.broadcast_int(int(latest.name.split("-")[1]) if latest is not None else -1)
    if step < 0:
        return None
    path = store.folder / f"step-{step:06d}"
    if not dist_utils.all_agree((path / "state.json").is_file()):
        raise LayerTracerError(
            f"checkpoint {path} is not visible on every process: the checkpoint folder must be on storage "
            "shared by all ranks"
        )
    return path


def _eval_loss_sharded(model: nn.Module, blocks: torch.Tensor, *, batch_size: int, max_batches: int,
                       ranks: _Ranks) -> float:
    """``eval_loss`` with the batches dealt round-robin over the ranks; the global token-weighted mean."""
    device = next(model.parameters()).device
    starts = list(range(0, min(len(blocks), batch_size * max_batches), batch_size))
    was_training = model.training
    model.eval()
    total, count = 0.0, 0.0
    with torch.no_grad():
        for start in starts[ranks.rank :: ranks.size]:
            batch = blocks[start : start + batch_size].to(device)
            total += float(model(input_ids=batch, labels=batch).loss) * len(batch)
            count += len(batch)
    model.train(was_training)
    total, count = dist_utils.all_reduce_sum([total, count])
    return total / max(count, 1.0)




@contextmanager
def master_weights(model: nn.Module, params: list[nn.Parameter], config: TrainConfig) -> Iterator[dict]:
    """Mixed precision done right, for the duration of a training run: the trainable parameters (and
    so AdamW's state) in float32, the frozen ones left in the load dtype, and bf16 autocast for the
    forward when the model holds bf16/fp16 weights (on CUDA also for an fp32 model, unless
    ``config.autocast`` is "off"). Updates of continued pre-training (lr 1e-5 on weights ~1e-2) are far
    below bf16's resolution: accumulated in float32 they are applied instead of rounded away. On exit
    the trained parameters go back to their load dtype (also when the run raises).

    Yields the precision policy recorded in the result: ``master_weights``, ``frozen`` (the load
    dtypes), ``autocast`` (dtype name or None).
    """
    originals = [(param, param.dtype) for param in params if param.dtype in LOW_PRECISION]
    frozen = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters() if not p.requires_grad})
    low = any(p.dtype in LOW_PRECISION for p in model.parameters())
    device = next(model.parameters()).device
    dtype = forward_dtype(config.autocast, low, device)
    try:
        for param, _ in originals:
            param.data = param.data.float()
        yield {"master_weights": "float32" if all(p.dtype == torch.float32 for p in params) else "mixed",
               "frozen": frozen, "autocast": dtype, "loss_scaling": dtype == "float16"}
    finally:
        for param, dtype in originals:
            param.data = param.data.to(dtype)
            if param.grad is not None:
                param.grad = None


def train(
    loaded: LoadedModel,
    blocks: torch.Tensor,
    allocation: Allocation,
    config: TrainConfig,
    *,
    eval_blocks: Optional[torch.Tensor] = None,
    checkpoint_dir: Optional[str | Path] = None,
    on_step: Optional[Callable[[StepMetrics], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    distributed: Optional[bool] = None,
    find_unused_parameters: bool = False,
) -> TrainResult:
    """Train ``loaded.model`` in place on ``blocks`` (N, T) token ids with ``allocation``.

    With ``checkpoint_dir``, checkpoints are written every ``config.checkpoint_every`` steps and at the
    end, and a run finding a checkpoint there resumes from it. ``should_stop`` is polled between steps
    (cancellation): the run checkpoints and returns with ``stopped=True``. The allocation's freezing is
    undone on return or error.

    Data parallel: ``distributed=None`` (default) trains data-parallel when a torch.distributed group
    of more than one process is already up; ``True`` also creates it from the launcher's environment
    (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``; gloo on CPU, nccl on
    CUDA) and leaves it up for later calls; ``False`` never does. Every process calls ``train`` with
    the same blocks and config; ``config.batch_size`` is the global micro-batch and must be a multiple
    of the world size. A CUDA model is moved to the rank's ``LOCAL_RANK`` GPU. ``on_step`` runs on every
    rank with the same (global) metrics; ``should_stop`` is asked on rank 0 only; ``checkpoint_dir``
    must be shared by all ranks (rank 0 writes, all read). ``find_unused_parameters`` is passed to
    DistributedDataParallel, for models whose forward leaves some trainable parameter unused.
    """
    config.validate()
    model, adapter = loaded.model, loaded.adapter
    if blocks.ndim != 2 or len(blocks) == 0:
        raise LayerTracerError("the training data must be a non-empty (num_blocks, block_size) tensor")
    ranks = _join_process_group(model, config, distributed)
    check_strategy(config.strategy, ranks)
    fsdp = config.strategy == "fsdp"
    device = next(model.parameters()).device
    counts: ParameterCount = count_parameters(model, adapter, allocation)
    result = TrainResult(allocation=allocation.to_dict(), parameters=counts.to_dict(), config=asdict(config))
    result.world_size = ranks.size if ranks is not None else 1
    store = (ShardedCheckpoints if fsdp else Checkpoints)(Path(checkpoint_dir)) if checkpoint_dir else None
    started = time.perf_counter()
    if config.gradient_checkpointing and not fsdp and hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable()
    ddp = sharded = None
    with ExitStack() as contexts:
        params = contexts.enter_context(apply_allocation(model, adapter, allocation))
        if fsdp:  # the model's shards train in a sharded twin; its weights come back on exit
            sharded = contexts.enter_context(sharded_training(model, config, device))
            params, policy = sharded.params, sharded.policy
        else:
            policy = contexts.enter_context(master_weights(model, params, config))
        result.precision = policy
        autocast_dtype = getattr(torch, policy["autocast"]) if policy["autocast"] else None
        # fp16's narrow range: the loss is scaled up before backward so small gradients do not flush to
        # zero, and unscaled before clipping; a step with inf/nan gradients is skipped, the scale lowered.
        scaler = torch.amp.GradScaler(device.type) if policy.get("loss_scaling") else None
        optimizer = torch.optim.AdamW(
            params, lr=config.lr, betas=(config.beta1, config.beta2), weight_decay=config.weight_decay
        )

        def save(step_done: int) -> None:
            # The metrics so far travel with the weights, so a resumed run's result covers every step.
            extra = {"allocation": allocation.to_dict(), "history": [asdict(m) for m in result.history],
                     "eval_history": result.eval_history, "tokens_seen": result.tokens_seen,
                     "data": data_position(blocks, step_done, config)}
            if scaler is not None:
                extra["loss_scale"] = scaler.state_dict()
            if ranks is None:
                store.save(step_done, model, params, optimizer, extra)
                return
            if sharded is not None:  # every rank writes its shards
                store.save(step_done, sharded, optimizer, {**extra, "world_size": ranks.size}, ranks)
                return
            error: Optional[BaseException] = None
            if ranks.main:
                try:
                    store.save(step_done, model, params, optimizer, {**extra, "world_size": ranks.size})
                except Exception as exc:  # re-raised below, after the other ranks heard of it
                    error = exc
            # The barrier: no rank goes on before rank 0 has finished writing, and all learn whether it could.
            if dist_utils.broadcast_flag(error is not None):
                if error is not None:
                    raise error
                raise LayerTracerError(f"rank 0 could not write the checkpoint of step {step_done} (see its log)")

        start_step = 0
        if store is not None:
            latest = store.latest() if ranks is None else _agreed_latest(store, ranks)
            if latest is not None:
                # Checked before any weight is loaded: a checkpoint of other data leaves the model as it was.
                written = json.loads((latest / "state.json").read_text(encoding="utf-8"))
                _check_same_data(written.get("data"), data_position(blocks, int(written["step"]), config), latest)
                state = (store.load(latest, sharded, optimizer) if sharded is not None
                         else store.load(latest, model, params, optimizer))
                start_step = int(state["step"])
                result.resumed_from = start_step
                result.history = [StepMetrics(**m) for m in state.get("history", [])]
                result.eval_history = [(int(step), float(loss)) for step, loss in state.get("eval_history", [])]
                result.tokens_seen = int(state.get("tokens_seen", 0))
                if scaler is not None and state.get("loss_scale"):
                    scaler.load_state_dict(state["loss_scale"])
        if sharded is not None:
            fused = sharded.forward if sharded.fused else None
            forward: nn.Module = sharded.forward
        else:
            fused = fused_loss_module(model, adapter) if config.fused_loss else None
            forward = fused if fused is not None else model
        result.fused_loss = fused is not None
        if ranks is not None and sharded is None:
            from torch.nn.parallel import DistributedDataParallel

            ddp = DistributedDataParallel(
                forward,
                device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False,  # no trained buffers in these models; saves a broadcast per forward
                gradient_as_bucket_view=True,  # gradients live in the buckets: no second copy
                find_unused_parameters=find_unused_parameters,
            )
            forward = ddp
        model.train()
        forward.train()
        cache_configs = _disable_kv_cache(model) + (_disable_kv_cache(sharded.twin) if sharded is not None else [])
        tokens_per_step = config.batch_size * config.grad_accum * blocks.shape[1]
        try:
            for step in range(start_step, config.steps):
                if ranks is None:
                    stop = should_stop is not None and should_stop()
                else:
                    stop = dist_utils.broadcast_flag(ranks.main and should_stop is not None and bool(should_stop()))
                if stop:
                    result.stopped = True
                    break
                tick = time.perf_counter()
                lr = lr_at(step, config)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                total_loss = 0.0
                for micro in range(config.grad_accum):
                    indices = sample_indices(step, micro, config, len(blocks))
                    if ranks is not None:
                        indices = dist_utils.shard_indices(indices, ranks.rank, ranks.size)
                    batch = blocks[indices].to(device)
                    # DDP averages gradients over ranks on the last micro-batch only; FSDP likewise
                    # reduce-scatters them only then.
                    last = micro == config.grad_accum - 1
                    if sharded is not None:
                        sharded.forward.set_requires_gradient_sync(last)
                    with nullcontext() if ddp is None or last else ddp.no_sync():
                        with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16,
                                            enabled=autocast_dtype is not None):
                            loss = forward(batch) if fused is not None else forward(input_ids=batch, labels=batch).loss
                        scaled = loss / config.grad_accum
                        (scaler.scale(scaled) if scaler is not None else scaled).backward()
                    total_loss += float(loss.detach()) / config.grad_accum
                    del loss, batch  # the graph's bookkeeping, not kept through the next forward
                if ranks is not None:
                    total_loss = dist_utils.all_reduce_mean(total_loss)
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if sharded is not None:
                    grad_norm = sharded_total_norm(params, config.max_grad_norm)
                elif config.max_grad_norm > 0:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
                else:
                    grad_norm = float(torch.linalg.vector_norm(
                        torch.stack([p.grad.norm() for p in params if p.grad is not None])
                    ))
                if scaler is not None:
                    scaler.step(optimizer)  # skipped when the unscaled gradients hold inf/nan
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                seconds = time.perf_counter() - tick
                metrics = StepMetrics(
                    step=step + 1,
                    loss=total_loss,
                    lr=lr,
                    tokens_per_s=tokens_per_step / max(seconds, 1e-9),
                    grad_norm=grad_norm,
                    elapsed_s=time.perf_counter() - started,
                )
                if eval_blocks is not None and config.eval_every and (step + 1) % config.eval_every == 0:
                    if sharded is not None:
                        metrics.eval_loss = sharded_eval_loss(
                            sharded, eval_blocks, batch_size=config.batch_size, max_batches=config.eval_batches,
                            ranks=ranks,
                        )
                    elif ranks is None:
                        metrics.eval_loss = eval_loss(
                            model, eval_blocks, batch_size=config.batch_size, max_batches=config.eval_batches
                        )
                    else:
                        metrics.eval_loss = _eval_loss_sharded(
                            model, eval_blocks, batch_size=config.batch_size, max_batches=config.eval_batches,
                            ranks=ranks,
                        )
                    result.eval_history.append((step + 1, metrics.eval_loss))
                result.history.append(metrics)
                result.tokens_seen += tokens_per_step
                result.steps_done = step + 1
                if on_step is not None:
                    on_step(metrics)
                if store is not None and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
                    save(step + 1)
            else:
                result.steps_done = config.steps
            if store is not None and result.steps_done > start_step:
                save(result.steps_done)
        except torch.OutOfMemoryError:
            raise LayerTracerError(
                f"out of memory at batch size {config.batch_size} x {blocks.shape[1]} tokens: lower the batch "
                "size (raise gradient accumulation to keep the global batch), shorten the blocks, or enable "
                "gradient checkpointing"
            ) from None
        finally:
            forward = ddp = None  # frees the DDP wrapper, which removes its gradient hooks from the parameters
            if sharded is not None:  # AdamW's shards are not needed to gather the weights back: freed first
                optimizer.state.clear()
            for cache_config in cache_configs:
                cache_config.use_cache = True
            model.eval()
            if config.gradient_checkpointing and hasattr(model, "gradient_checkpointing_disable"):
                model.gradient_checkpointing_disable()
    if scaler is not None:
        result.precision["loss_scale"] = scaler.get_scale()
    result.seconds = time.perf_counter() - started
    return result
