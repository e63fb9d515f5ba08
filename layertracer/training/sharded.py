"""Sharded data-parallel training for ``train`` with ``strategy="fsdp"``: FSDP2
(``torch.distributed.fsdp.fully_shard``), each of N processes holding 1/N of every parameter, of its
gradient and of its AdamW state.

The user's model itself is never wrapped. A twin of it is built on the meta device from its config,
sharded block by block (each block one FSDP unit, the embeddings, final norm and head the root's),
materialised, and filled with this rank's slice of the model's weights, in float32: the master weights.
The model's own parameter storage is then released, so a rank holds only its shards while it trains;
``restore`` all-gathers the twin's parameters back into the model at the end, in their load dtypes,
and the model is an ordinary module again (evaluated, traced and snapshotted like any other).

On CUDA with bf16 weights (or ``autocast`` asked for) the blocks compute in bf16 through FSDP's
MixedPrecisionPolicy (gradients reduced in float32); on the CPU everything is float32.

Checkpoints are written with ``torch.distributed.checkpoint`` through its safetensors storage (every
rank writes its own shards, their offsets in the safetensors header): no pickle on disk, unlike DCP's
default format, whose ``.metadata`` file is pickled. A checkpoint can be loaded by another number of
processes (DCP reshards from the offsets).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from layertracer.errors import LayerTracerError
from layertracer.models.adapters import resolve_adapter
from layertracer.training import distributed as dist_utils
from layertracer.training.fused_loss import fused_loss_module
from layertracer.training.step_folders import StepFolders
from layertracer.training.precision import LOW_PRECISION, forward_dtype

STRATEGIES = ("ddp", "fsdp")
MOMENTS = ("exp_avg", "exp_avg_sq", "step")


@dataclass
class ShardedModel:
    """The sharded twin of a model while it trains.

    forward: the FSDP root (the fused-loss wrapper of the twin, or the twin); call it as the loop calls
    its model. params: the trainable parameters (DTensors, this rank's shards) in a fixed order.
    names: id(param) -> its name in the user's model. policy: the precision policy recorded in the result.
    """

    twin: nn.Module
    forward: nn.Module
    device: torch.device
    fused: bool
    params: list[nn.Parameter]
    names: dict[int, str]
    policy: dict


def _mixed_precision(model: nn.Module, device: torch.device, autocast: str):
    """FSDP's MixedPrecisionPolicy for ``precision.forward_dtype``: bf16 compute with gradients reduced in
    float32, or None (float32 throughout). fp16 (which needs a loss scaler) is refused."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    low = any(p.dtype in LOW_PRECISION for p in model.parameters())
    dtype = forward_dtype(autocast, low, device)
    if dtype == "float16":
        raise LayerTracerError("strategy fsdp computes in bf16 or float32; fp16 with a loss scaler is for "
                               "strategy ddp (use autocast bf16)")
    if dtype == "bfloat16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return None


def _twin(model: nn.Module) -> nn.Module:
    """The same architecture, parameters on the meta device (no memory), float32."""
    try:
        with torch.device("meta"):
            twin = type(model)(copy.deepcopy(model.config))
    except Exception as exc:  # a class that cannot be rebuilt from its config (assembled in code)
        raise LayerTracerError(
            f"strategy fsdp rebuilds the model from its config, which failed for {type(model).__name__} ({exc}); "
            "use --strategy ddp"
        ) from None
    twin = twin.float()
    mine = [name for name, _ in model.named_parameters()]
    theirs = [name for name, _ in twin.named_parameters()]
    if mine != theirs:
        raise LayerTracerError(
            f"strategy fsdp rebuilt {type(model).__name__} from its config with other parameters than the loaded "
            "model (modified after loading?); use --strategy ddp"
        )
    return twin


@contextmanager
def sharded_training(model: nn.Module, config, device: torch.device) -> Iterator[ShardedModel]:
    """Shard ``model`` (whose trainable parameters are those with ``requires_grad``) over the process
    group for the duration of the context; on exit the trained weights are gathered back into
    ``model`` on every rank (also when the body raises: every rank must leave the context)."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import distribute_tensor

    twin = _twin(model)
    originals = dict(model.named_parameters())
    for name, param in twin.named_parameters():
        param.requires_grad_(originals[name].requires_grad)
    if config.gradient_checkpointing and hasattr(twin, "gradient_checkpointing_enable"):
        twin.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    adapter = resolve_adapter(twin)
    policy = _mixed_precision(model, device, config.autocast)
    # Every unit, the root too, gives its gathered parameters back after its forward and gathers them
    # again for backward: the root holds the embeddings and the head, the largest tensors of a model with
    # a big vocabulary (FSDP's default keeps the root's gathered from forward to backward).
    kwargs = {"reshard_after_forward": True, **({"mp_policy": policy} if policy is not None else {})}
    units = list(adapter.blocks)
    embeddings = twin.get_input_embeddings() if hasattr(twin, "get_input_embeddings") else None
    head_weight = getattr(adapter.head, "weight", None)
    if embeddings is not None and all(p is not head_weight for p in embeddings.parameters()):
        units.insert(0, embeddings)  # its own unit (untied): gathered for the first forward step alone
    for unit in units:
        fully_shard(unit, **kwargs)
    fused = fused_loss_module(twin, adapter) if config.fused_loss else None
    root = fused if fused is not None else twin
    fully_shard(root, **kwargs)
    root.to_empty(device=device)
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for name, param in twin.named_parameters():
            # Each rank slices its own shard from its full copy: no communication.
            shard = distribute_tensor(originals[name].detach().to(device, torch.float32), param.device_mesh,
                                      param.placements, src_data_rank=None)
            param.to_local().copy_(shard.to_local())
        for name, buffer in twin.named_buffers():
            if name in buffers:
                buffer.copy_(buffers[name].to(buffer.device))
    dtypes = {name: p.dtype for name, p in originals.items()}
    for param in originals.values():  # the model's own storage, released while its shards train
        param.data = torch.empty(0, dtype=param.dtype, device=param.device)
    _return_freed_memory(device)
    names = {id(p): n for n, p in twin.named_parameters()}
    params = [p for p in root.parameters() if p.requires_grad]
    frozen = sorted({str(dtypes[n]).replace("torch.", "") for n, p in twin.named_parameters() if not p.requires_grad})
    record = {"master_weights": "float32", "frozen": frozen, "autocast": None, "loss_scaling": False, "strategy": "fsdp",
              "compute": "bfloat16" if policy is not None else "float32"}
    try:
        yield ShardedModel(twin=twin, forward=root, device=device, fused=fused is not None, params=params,
                           names=names, policy=record)
    finally:
        restore(twin, [*units, root], originals, dtypes)


def _return_freed_memory(device: torch.device) -> None:
    """Hand memory just freed back to the system. On the CPU glibc keeps freed heap memory for reuse
    (it stays resident); malloc_trim returns it. On CUDA torch's caching allocator reuses it anyway."""
    if device.type != "cpu":
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def restore(twin: nn.Module, units: list[nn.Module], originals: dict[str, nn.Parameter],
            dtypes: dict[str, torch.dtype]) -> None:
    """All-gather every parameter of the sharded ``twin`` into the model's parameters (by name), in
    their load dtypes. A collective: every rank calls it, in the same order. ``units`` are the FSDP
    modules, resharded first (the root stays unsharded after its forward)."""
    for unit in units:
        unit.reshard()
    with torch.no_grad():
        for name, param in twin.named_parameters():
            full = param.full_tensor()
            originals[name].data = full.to(dtypes[name]).to(originals[name].device)
            del full


def total_norm(params: list[nn.Parameter], max_norm: float) -> float:
    """The global gradient norm over every rank's shards, clipping to ``max_norm`` when it is > 0."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def eval_loss(sharded: ShardedModel, blocks, *, batch_size: int, max_batches: int, ranks) -> float:
    """Held-out loss with every rank in every forward (an FSDP forward is a collective): each batch of
    ``batch_size`` rows split over the ranks; a last batch short of a multiple of the world size is cut
    to one. Returns the token-weighted mean over all rows evaluated."""
    rows = min(len(blocks), batch_size * max_batches)
    was_training = sharded.forward.training
    sharded.forward.eval()
    total = count = 0.0
    with torch.no_grad():
        for start in range(0, rows, batch_size):
            size = min(batch_size, rows - start) // ranks.size * ranks.size
            if size == 0:
                break
            share = dist_utils.shard_indices(list(range(start, start + size)), ranks.rank, ranks.size)
            batch = blocks[share].to(sharded.device)
            loss = sharded.forward(batch) if sharded.fused else sharded.forward(input_ids=batch, labels=batch).loss
            total += float(loss) * len(batch)
            count += len(batch)
    sharded.forward.train(was_training)
    total, count = dist_utils.all_reduce_sum([total, count])
    return total / max(count, 1.0)


class ShardedCheckpoints(StepFolders):
    """``step-000123/`` folders of sharded checkpoints: the trainable parameters and their AdamW moments
    (``NAME`` and ``NAME::exp_avg`` / ``::exp_avg_sq`` / ``::step``), written by every rank through
    torch.distributed.checkpoint's safetensors storage, and ``state.json`` (rank 0). Written into a temp
    folder that rank 0 renames once every rank is done, so a folder with ``state.json`` is complete."""

    @staticmethod
    def _state(sharded: ShardedModel, optimizer, fill: bool) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for param in sharded.params:
            name = sharded.names[id(param)]
            state[name] = param.detach()
            moments = optimizer.state.get(param, {})
            for key in MOMENTS:
                value = moments.get(key)
                if value is None and fill:  # a place for dcp.load to read into
                    value = torch.zeros((), dtype=torch.float32) if key == "step" else torch.zeros_like(param.detach())
                if value is not None:
                    state[f"{name}::{key}"] = value
        return state

    def save(self, step: int, sharded: ShardedModel, optimizer, extra: dict, ranks) -> Path:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import HuggingFaceStorageWriter

        final = self.folder / f"step-{step:06d}"
        temp = self.folder / f".tmp-step-{step:06d}"
        if ranks.main:
            shutil.rmtree(temp, ignore_errors=True)
            temp.mkdir(parents=True)
        dist_utils.barrier()
        dcp.save(self._state(sharded, optimizer, fill=False),
                 storage_writer=HuggingFaceStorageWriter(str(temp), save_distributed=True))
        dist_utils.barrier()
        if ranks.main:
            (temp / "state.json").write_text(json.dumps({"step": step, **extra}), encoding="utf-8")
            if final.exists():
                shutil.rmtree(final)
            os.replace(temp, final)
        dist_utils.barrier()
        return final

    def load(self, path: Path, sharded: ShardedModel, optimizer) -> dict:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import HuggingFaceStorageReader

        state = self._state(sharded, optimizer, fill=True)
        stored = {name for name in _stored_names(path)}
        missing = sorted(name for name in state if "::" not in name and name not in stored)
        if missing:
            raise LayerTracerError(f"checkpoint {path} does not match this allocation (no {missing[0]})")
        dcp.load(state, storage_reader=HuggingFaceStorageReader(str(path)))
        for param in sharded.params:
            name = sharded.names[id(param)]
            optimizer.state[param] = {key: state[f"{name}::{key}"] for key in MOMENTS}
        return json.loads((path / "state.json").read_text(encoding="utf-8"))


def _stored_names(path: Path) -> set[str]:
    from safetensors import safe_open

    names: set[str] = set()
    for file in path.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as handle:
            names.update(handle.keys())
    return names


def fsdp_supported() -> bool:
    """Whether this torch has what strategy fsdp uses: FSDP2 and torch.distributed.checkpoint's
    safetensors storage with every rank writing its own shards (torch >= 2.9)."""
    import inspect

    try:
        import torch.distributed.fsdp as fsdp
        from torch.distributed.checkpoint import HuggingFaceStorageWriter
    except ImportError:
        return False
    return hasattr(fsdp, "fully_shard") and "save_distributed" in inspect.signature(
        HuggingFaceStorageWriter.__init__).parameters


def check_strategy(strategy: str, ranks) -> None:
    """One line for a strategy this launch cannot give."""
    if strategy not in STRATEGIES:
        raise LayerTracerError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    if strategy == "fsdp" and ranks is None:
        raise LayerTracerError(
            "strategy fsdp shards the model over several processes, but this run has one: start it with "
            "torchrun --nproc-per-node N (N >= 2), or use --strategy ddp"
        )
    if strategy == "fsdp" and not fsdp_supported():
        raise LayerTracerError(f"strategy fsdp needs torch >= 2.9 (FSDP2 and sharded safetensors checkpoints); "
                               f"this is torch {torch.__version__}: upgrade torch, or use --strategy ddp")
