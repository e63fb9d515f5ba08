"""Layer allocations: which blocks (and which of embeddings, head, final norm) a trial trains.

Freezing is reversible: ``apply_allocation`` is a context manager that restores every parameter's
``requires_grad`` in ``finally``, so a failed job never leaves a long-lived worker's model frozen.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

from torch import nn

from layertracer.errors import LayerTracerError
from layertracer.models.adapters import ModelAdapter
from layertracer.ranges import format_ranges, parse_ranges
from layertracer.spec.allocations import PARTS, PRESETS, check_allocation, is_from_trace, preset_layers  # noqa: F401 (PRESETS re-exported)


@dataclass(frozen=True)
class Allocation:
    """What a trial trains.

    name: the preset or the ranges text it came from. layers: trainable block indices (0-based).
    embeddings / head / final_norm: train those too. part: within a trainable block, ``all`` its
    parameters, only its ``mixer`` (attention / linear attention / SSM) or only its ``mlp``.
    """

    name: str
    layers: tuple[int, ...]
    embeddings: bool = False
    head: bool = False
    final_norm: bool = False
    part: str = "all"

    @property
    def ranges(self) -> str:
        return format_ranges(self.layers)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["layers"] = list(self.layers)
        data["ranges"] = self.ranges
        return data


def resolve_allocation(
    spec: str,
    num_layers: int,
    *,
    embeddings: Optional[bool] = None,
    head: Optional[bool] = None,
    final_norm: Optional[bool] = None,
    part: str = "all",
) -> Allocation:
    """An allocation from a preset or ranges.

    ``train-shallow``: blocks [0, L/2) (the deep half frozen). ``train-deep``: [L/2, L). ``full``: every
    parameter (embeddings, head and final norm on unless switched off). ``from-trace:PATH``: the freeze
    plan of a trace result JSON. Anything else is ranges such as ``0-7,12``. Toggles left at None are
    off, except for ``full``.
    """
    if part not in PARTS:
        raise LayerTracerError(f"unknown part {part!r}; use one of {', '.join(PARTS)}")
    spec = check_allocation(spec)
    is_full = spec == "full"
    if is_from_trace(spec):
        _, _, path = spec.partition(":")
        layers = _layers_from_trace(path, num_layers)
    elif spec in PRESETS:
        layers = preset_layers(spec, num_layers)
    else:
        layers = parse_ranges(spec, num_layers)

    def toggle(value: Optional[bool]) -> bool:
        return is_full if value is None else value

    allocation = Allocation(
        name=spec,
        layers=tuple(layers),
        embeddings=toggle(embeddings),
        head=toggle(head),
        final_norm=toggle(final_norm),
        part="all" if is_full and part == "all" else part,
    )
    if not allocation.layers and not (allocation.embeddings or allocation.head or allocation.final_norm):
        raise LayerTracerError(f"allocation {spec!r} trains nothing")
    return allocation


def _layers_from_trace(path: str, num_layers: int) -> list[int]:
    if not path:
        raise LayerTracerError("from-trace needs a trace file: from-trace:PATH")
    file = Path(path)
    if not file.is_file():
        raise LayerTracerError(f"trace file {path!r} does not exist")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        plan = data["freeze_plan"]
        layers = [int(x) for x in plan["train_layers"]]
        traced = int(data["num_layers"])
    except (ValueError, KeyError, TypeError):
        raise LayerTracerError(f"{path} is not a LayerTracer trace result with a freeze plan") from None
    if traced != num_layers:
        raise LayerTracerError(f"the trace in {path} is of a {traced}-layer model, this model has {num_layers}")
    return layers


def trainable_modules(model: nn.Module, adapter: ModelAdapter, allocation: Allocation) -> list[nn.Module]:
    """The modules whose parameters the allocation trains."""
    if allocation.name == "full" and allocation.part == "all" and allocation.embeddings and allocation.head:
        return [model]
    modules: list[nn.Module] = []
    for layer in allocation.layers:
        block = adapter.blocks[layer]
        if allocation.part == "all":
            modules.append(block)
        else:
            name = adapter.mixer_names[layer] if allocation.part == "mixer" else adapter.mlp_names[layer]
            if name is not None:
                modules.append(getattr(block, name))
    if allocation.embeddings:
        modules.append(model.get_input_embeddings())
    if allocation.head:
        modules.append(adapter.head)
    if allocation.final_norm:
        modules.extend(adapter.final_modules)
    return modules


def trainable_parameters(model: nn.Module, adapter: ModelAdapter, allocation: Allocation) -> list[nn.Parameter]:
    """Distinct parameters the allocation trains (tied weights counted once)."""
    seen: set[int] = set()
    params: list[nn.Parameter] = []
    for module in trainable_modules(model, adapter, allocation):
        for param in module.parameters():
            if id(param) not in seen:
                seen.add(id(param))
                params.append(param)
    return params


@dataclass(frozen=True)
class ParameterCount:
    """Trainable and total parameter counts; share = trainable / total."""

    trainable: int
    total: int

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {"trainable": self.trainable, "total": self.total, "share": self.share}


def count_parameters(model: nn.Module, adapter: ModelAdapter, allocation: Allocation) -> ParameterCount:
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    trainable = sum(p.numel() for p in trainable_parameters(model, adapter, allocation))
    return ParameterCount(trainable=trainable, total=total)


@contextmanager
def apply_allocation(model: nn.Module, adapter: ModelAdapter, allocation: Allocation) -> Iterator[list[nn.Parameter]]:
    """Within the context only the allocation's parameters require grad; yields them. Restores every
    parameter's previous ``requires_grad`` on exit, also when the body raises."""
    previous = {id(p): (p, p.requires_grad) for p in model.parameters()}
    params = trainable_parameters(model, adapter, allocation)
    try:
        for param, _ in previous.values():
            param.requires_grad_(False)
        for param in params:
            param.requires_grad_(True)
        yield params
    finally:
        for param, flag in previous.values():
            param.requires_grad_(flag)
