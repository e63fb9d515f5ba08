"""Per-layer weight drift: how far continued pre-training moved each block's weights.

Take a :func:`weight_snapshot` before training, train, then call :func:`weight_drift`. For a group
of parameters G (one block, the embeddings, the head, the final norm) the drift is the relative
Frobenius change of all of G's parameters concatenated into one vector:

    drift(G) = sqrt(sum_{W in G} ||W_after - W_before||_F^2) / sqrt(sum_{W in G} ||W_before||_F^2)

i.e. ||vec(G_after) - vec(G_before)||_2 / ||vec(G_before)||_2. It is unitless; 0 means unchanged,
0.01 means the block moved by 1% of its own norm. Large matrices dominate a block's value, as they
dominate its function; per-tensor values can be had by passing single-name groups to
:func:`drift_between`. Sums are taken in float64 (on the parameters' own device, in chunks, so
neither a bf16 model nor a 600M-element embedding loses precision or needs a float64 copy of itself).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Union

import torch
from torch import nn

from layertracer.errors import LayerTracerError
from layertracer.models.adapters import ModelAdapter, resolve_adapter
from layertracer.models.loading import LoadedModel

# Elements per chunk when summing squares: bounds the float64 temporaries to 64 MiB per tensor.
_CHUNK = 1 << 23

DEFINITION = (
    "relative Frobenius change ||W_after - W_before||_F / ||W_before||_F over all parameters of the group "
    "concatenated (float64 sums); null when the group's norm before is 0 but it changed"
)


def _module(model: Union[nn.Module, LoadedModel]) -> nn.Module:
    return model.model if isinstance(model, LoadedModel) else model


def weight_snapshot(model: Union[nn.Module, LoadedModel],
                    only: Optional[Iterable[nn.Parameter]] = None) -> dict[str, torch.Tensor]:
    """CPU copies of every parameter, by name (``named_parameters(remove_duplicate=False)``), or of the
    parameters in ``only`` (those a training run will change: a frozen one needs no copy, the model's
    own tensor is its "before"; see ``with_unchanged``).

    Tied parameters (e.g. input embeddings and head) appear under each of their names but are copied
    once and share the copy, so a snapshot costs one model's worth of CPU memory, in the model's dtype.
    Works for a model on any device; the model is not modified.
    """
    wanted = None if only is None else {id(p) for p in only}
    copies: dict[int, torch.Tensor] = {}
    snapshot: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, param in _module(model).named_parameters(remove_duplicate=False):
            if wanted is not None and id(param) not in wanted:
                continue
            if id(param) not in copies:
                # copy=True: .to("cpu") alone returns the same storage for a CPU model, which training
                # would then change under the snapshot.
                copies[id(param)] = param.detach().to("cpu", copy=True)
            snapshot[name] = copies[id(param)]
    return snapshot


def with_unchanged(snapshot: Mapping[str, torch.Tensor], model: Union[nn.Module, LoadedModel]) -> dict[str, torch.Tensor]:
    """A partial ``weight_snapshot`` completed with the model's own tensors for every parameter it
    left out: the frozen ones, which training did not change, so they are their own "before"."""
    return {**{n: p for n, p in _module(model).named_parameters(remove_duplicate=False)}, **snapshot}


def parameter_groups(model: Union[nn.Module, LoadedModel], adapter: ModelAdapter) -> dict[str, Any]:
    """Parameter names of each group, from the model's structure.

    Returns ``blocks``: (L,) lists of names (block l's parameters), ``embeddings`` (the input
    embedding module), ``head`` (the output head), ``final_norm`` (the adapter's final modules),
    ``other`` (every parameter in none of these, e.g. GPT-2's position embeddings), ``total`` (every
    distinct parameter once) and ``head_tied`` (the head's weights are the input embeddings').
    Within a group a tensor is listed once even when reachable under several names.
    """
    module = _module(model)
    names_of: dict[int, list[str]] = {}
    tensors: dict[int, torch.Tensor] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(param), []).append(name)
        tensors[id(param)] = param
    prefix_of = {id(m): name for name, m in module.named_modules(remove_duplicate=False)}

    def names_in(sub: Optional[nn.Module]) -> list[str]:
        if sub is None:
            return []
        if id(sub) not in prefix_of:
            raise LayerTracerError("the adapter does not belong to this model (a module of it is not found)")
        prefix = prefix_of[id(sub)]
        seen: set[int] = set()
        names: list[str] = []
        for local, param in sub.named_parameters(remove_duplicate=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            names.append(f"{prefix}.{local}" if prefix else local)
        return names

    blocks = [names_in(block) for block in adapter.blocks]
    getter = getattr(module, "get_input_embeddings", None)
    embedding_module = getter() if callable(getter) else None
    embeddings = names_in(embedding_module)
    head = names_in(adapter.head)
    final_norm = [name for part in adapter.final_modules for name in names_in(part)]
    grouped_ids = set()
    for group in [*blocks, embeddings, head, final_norm]:
        for name in group:
            grouped_ids.add(id(module.get_parameter(name)))
    other = [names[0] for pid, names in names_of.items() if pid not in grouped_ids]
    total = [names[0] for names in names_of.values()]
    head_ids = {id(module.get_parameter(n)) for n in head}
    embedding_ids = {id(module.get_parameter(n)) for n in embeddings}
    return {
        "blocks": blocks,
        "embeddings": embeddings,
        "head": head,
        "final_norm": final_norm,
        "other": other,
        "total": total,
        "head_tied": bool(head_ids) and head_ids <= embedding_ids,
    }


def _squared_norms(after: torch.Tensor, before: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(||after - before||^2, ||before||^2) as float64 scalars on ``after``'s device (float32 on MPS,
    which has no float64). ``before`` may live on another device; it is moved chunk by chunk."""
    device = after.device
    dtype = torch.float32 if device.type == "mps" else torch.float64
    flat_after = after.detach().reshape(-1)
    flat_before = before.detach().reshape(-1)
    delta_sq = torch.zeros((), dtype=dtype, device=device)
    before_sq = torch.zeros((), dtype=dtype, device=device)
    for start in range(0, flat_after.numel(), _CHUNK):
        a = flat_after[start : start + _CHUNK].to(dtype)
        b = flat_before[start : start + _CHUNK].to(device=device, dtype=dtype)
        delta_sq += torch.sum((a - b) ** 2)
        before_sq += torch.sum(b * b)
    return delta_sq, before_sq


def _group_drift(names: list[str], before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    delta_sq = before_sq = 0.0
    numel = 0
    for name in names:
        if name not in before:
            raise LayerTracerError(f"the snapshot before has no parameter {name!r}: it is of another model")
        if name not in after:
            raise LayerTracerError(f"the weights after have no parameter {name!r}: they are of another model")
        a, b = after[name], before[name]
        if tuple(a.shape) != tuple(b.shape):
            raise LayerTracerError(
                f"parameter {name!r} has shape {tuple(b.shape)} before and {tuple(a.shape)} after: not the same model"
            )
        d, s = _squared_norms(a, b)
        # One host sync per tensor, not per chunk.
        delta_sq += float(d)
        before_sq += float(s)
        numel += a.numel()
    delta_norm, before_norm = delta_sq**0.5, before_sq**0.5
    if before_norm > 0:
        relative: Optional[float] = delta_norm / before_norm
    else:
        # An all-zero group (or an empty one) has no scale: unchanged is 0, changed has no ratio.
        relative = 0.0 if delta_norm == 0 else None
    return {
        "relative": relative,
        "delta_norm": delta_norm,
        "before_norm": before_norm,
        "numel": numel,
        "tensors": len(names),
    }


def drift_between(
    before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor], groups: Mapping[str, Any]
) -> dict[str, Any]:
    """Drift between two state dicts (name -> tensor, any devices) for the groups of
    :func:`parameter_groups`.

    Returns a JSON-able dict: ``blocks`` (L,) relative drift per block (see the module docstring),
    ``block_details`` (L,) dicts with ``layer``, ``relative``, ``delta_norm`` and ``before_norm``
    (Frobenius norms of the concatenated block, in the weights' units), ``numel`` and ``tensors``;
    the same dict for ``embeddings``, ``head`` (plus ``tied_to_embeddings``), ``final_norm``,
    ``other`` (plus its ``names``) and ``total``; ``num_layers`` and ``definition``.
    """
    details = []
    for layer, names in enumerate(groups["blocks"]):
        details.append({"layer": layer, **_group_drift(names, before, after)})
    head = _group_drift(groups["head"], before, after)
    head["tied_to_embeddings"] = bool(groups.get("head_tied", False))
    other = _group_drift(groups["other"], before, after)
    other["names"] = list(groups["other"])
    return {
        "definition": DEFINITION,
        "num_layers": len(details),
        "blocks": [d["relative"] for d in details],
        "block_details": details,
        "embeddings": _group_drift(groups["embeddings"], before, after),
        "head": head,
        "final_norm": _group_drift(groups["final_norm"], before, after),
        "other": other,
        "total": _group_drift(groups["total"], before, after),
    }


def weight_drift(
    adapter: ModelAdapter,
    before_snapshot: Mapping[str, torch.Tensor],
    model_after: Union[nn.Module, LoadedModel],
) -> dict[str, Any]:
    """Per-block (and embeddings, head, final norm) weight drift from a snapshot to a model.

    adapter: the model's adapter (``LoadedModel.adapter``). If it was resolved on another model
    object (e.g. the model before training was a separate copy), ``model_after``'s own adapter is
    resolved and must have the same number of blocks.
    before_snapshot: :func:`weight_snapshot` of the model before (or any name -> tensor mapping with
    the same names and shapes, e.g. a loaded safetensors state dict).
    model_after: the trained model, on any device. Returns :func:`drift_between`'s dict, plus
    ``block_kinds``.
    """
    module = _module(model_after)
    own_modules = {id(m) for m in module.modules()}
    if adapter.num_layers == 0 or id(adapter.blocks[0]) not in own_modules:
        resolved = resolve_adapter(module)
        if resolved.num_layers != adapter.num_layers:
            raise LayerTracerError(
                f"the adapter has {adapter.num_layers} blocks but the model after has {resolved.num_layers}"
            )
        adapter = resolved
    groups = parameter_groups(module, adapter)
    after = dict(module.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        result = drift_between(before_snapshot, after, groups)
    result["block_kinds"] = list(adapter.block_kinds)
    return result


__all__ = ["DEFINITION", "drift_between", "parameter_groups", "weight_drift", "weight_snapshot", "with_unchanged"]
