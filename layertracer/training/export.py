"""An allocation as configuration for other trainers: LLaMA-Factory, axolotl and ms-swift.

Each export says plainly when the trainer cannot express the allocation, instead of writing a config
that trains something else. LLaMA-Factory's freeze tuning takes only the first or the last n layers
(``freeze_trainable_layers``: negative = first n, positive = last n); axolotl's
``unfrozen_parameters`` and ms-swift's ``trainable_parameters_regex`` take regular expressions over
parameter names, so they express any set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from torch import nn

from layertracer.errors import LayerTracerError
from layertracer.models.adapters import ModelAdapter
from layertracer.training.allocation import Allocation

FORMATS = ("llamafactory", "axolotl", "ms-swift")


@dataclass(frozen=True)
class Export:
    """A config snippet (YAML text), or ``supported=False`` with the reason in ``note``."""

    format: str
    supported: bool
    text: str
    note: str = ""


def _module_name(model: nn.Module, module: Optional[nn.Module]) -> Optional[str]:
    if module is None:
        return None
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    return None


def _block_prefix(model: nn.Module, adapter: ModelAdapter) -> str:
    """``model.layers`` for Llama-style models: the qualified name of the first block without its index."""
    first = _module_name(model, adapter.blocks[0])
    if first is None or not first.endswith(".0"):
        raise LayerTracerError("cannot name the model's blocks for an export")
    return first[: -len(".0")]


def _extra_names(model: nn.Module, adapter: ModelAdapter, allocation: Allocation) -> list[str]:
    names = []
    if allocation.embeddings:
        names.append(_module_name(model, model.get_input_embeddings()))
    if allocation.head:
        names.append(_module_name(model, adapter.head))
    if allocation.final_norm:
        names.extend(_module_name(model, m) for m in adapter.final_modules)
    return [n for n in names if n]


def _part_child(adapter: ModelAdapter, allocation: Allocation) -> Optional[str]:
    """The child name for mixer/MLP-only allocations (the first trainable block's)."""
    if allocation.part == "all" or not allocation.layers:
        return None
    layer = allocation.layers[0]
    return adapter.mixer_names[layer] if allocation.part == "mixer" else adapter.mlp_names[layer]


def _regexes(model: nn.Module, adapter: ModelAdapter, allocation: Allocation) -> list[str]:
    prefix = re.escape(_block_prefix(model, adapter))
    patterns = []
    if allocation.layers:
        ids = "|".join(str(layer) for layer in allocation.layers)
        child = _part_child(adapter, allocation)
        tail = rf"\.{re.escape(child)}\." if child else r"\."
        patterns.append(rf"^{prefix}\.({ids}){tail}")
    patterns.extend(rf"^{re.escape(name)}\." for name in _extra_names(model, adapter, allocation))
    return patterns


def export_allocation(model: nn.Module, adapter: ModelAdapter, allocation: Allocation, fmt: str) -> Export:
    """The allocation as a config snippet for ``fmt`` (one of FORMATS)."""
    if fmt not in FORMATS:
        raise LayerTracerError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    layers = list(allocation.layers)
    total = adapter.num_layers
    header = f"# LayerTracer allocation {allocation.name!r}: train blocks {allocation.ranges or 'none'} of {total}\n"
    if fmt == "llamafactory":
        n = len(layers)
        if layers == list(range(n)) and n:
            count = -n
        elif layers == list(range(total - n, total)) and n:
            count = n
        else:
            return Export(fmt, False, "", (
                f"LLaMA-Factory's freeze_trainable_layers takes only the first or the last n layers; "
                f"blocks {allocation.ranges} are neither (use axolotl or ms-swift, or LayerTracer's own trainer)"
            ))
        child = _part_child(adapter, allocation)
        extras = [n.split(".")[-1] for n in _extra_names(model, adapter, allocation)]
        lines = [
            "finetuning_type: freeze",
            f"freeze_trainable_layers: {count}",
            f"freeze_trainable_modules: {child or 'all'}",
        ]
        if extras:
            lines.append(f"freeze_extra_modules: {','.join(extras)}")
        return Export(fmt, True, header + "\n".join(lines) + "\n")
    patterns = _regexes(model, adapter, allocation)
    if fmt == "axolotl":
        body = "unfrozen_parameters:\n" + "".join(f"  - '{p}.*'\n" for p in patterns)
        return Export(fmt, True, header + body)
    regex = "|".join(f"({p})" for p in patterns)
    body = (
        "train_type: full\n"
        "freeze_parameters_ratio: 1.0\n"
        f"trainable_parameters_regex: '{regex}'\n"
    )
    return Export(fmt, True, header + body, "ms-swift 3.x argument names (as a YAML config or --flags)")
