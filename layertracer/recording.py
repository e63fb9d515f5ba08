"""One clean forward pass, recorded block by block, and replays of the stack from any block.

Recording the exact arguments each block was called with (masks, rotary embeddings, cache positions,
per-layer masks of hybrids) is what makes replay architecture-agnostic: a replay calls block j with
the same arguments as the clean run and only the hidden state swapped. Masking layer l leaves layers
before l unchanged, so a perturbed run replays blocks l+1.. only.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
from torch import nn

from layertracer.models.adapters import ModelAdapter


@dataclass
class BlockCall:
    """The arguments one block received; the hidden state is either ``args[0]`` or ``kwargs["hidden_states"]``."""

    args: tuple
    kwargs: dict

    def call(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """Run ``block`` on ``hidden`` (B, T, d) with the recorded arguments; returns its output (B, T, d)."""
        if "hidden_states" in self.kwargs:
            kwargs = dict(self.kwargs, hidden_states=hidden)
            out = block(*self.args, **kwargs)
        else:
            out = block(hidden, *self.args[1:], **self.kwargs)
        return first_tensor(out)


@dataclass
class StackRecording:
    """A clean forward pass through the block stack.

    inputs[l]: (B, T, d) hidden state entering block l; outputs[l]: (B, T, d) leaving it (before
    the final norm). calls[l]: the arguments block l received.
    """

    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor]
    calls: list[BlockCall]


def first_tensor(output: Any) -> torch.Tensor:
    """Blocks return a tensor or a tuple whose first element is the hidden state."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    for name in ("last_hidden_state", "hidden_states"):
        hidden = getattr(output, name, None)
        if isinstance(hidden, torch.Tensor):
            return hidden
    raise TypeError(f"cannot find the hidden state in a block output of type {type(output).__name__}")


def _replace_first(output: Any, value: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return value
    if isinstance(output, tuple):
        return (value,) + tuple(output[1:])
    if isinstance(output, list):
        return [value] + list(output[1:])
    raise TypeError(f"cannot replace the output of type {type(output).__name__}")


@contextmanager
def hooks(handles: list) -> Iterator[None]:
    """Remove every hook handle on exit, also when the body raises (a worker's model stays clean)."""
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def record_stack(model: nn.Module, adapter: ModelAdapter, input_ids: torch.Tensor) -> StackRecording:
    """Run the model's backbone on ``input_ids`` (B, T) and record every block's input, output and args.

    No attention mask is passed: batches are right-padded, and in a causal model padding after the
    answer position cannot influence it. The final norm and the head are not applied here.
    """
    n = adapter.num_layers
    inputs: list[Optional[torch.Tensor]] = [None] * n
    outputs: list[Optional[torch.Tensor]] = [None] * n
    calls: list[Optional[BlockCall]] = [None] * n
    handles = []

    def pre_hook(index: int):
        def hook(module, args, kwargs):
            calls[index] = BlockCall(args=tuple(args), kwargs=dict(kwargs))
            inputs[index] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

        return hook

    def post_hook(index: int):
        def hook(module, args, kwargs, output):
            outputs[index] = first_tensor(output)

        return hook

    for i, block in enumerate(adapter.blocks):
        handles.append(block.register_forward_pre_hook(pre_hook(i), with_kwargs=True))
        handles.append(block.register_forward_hook(post_hook(i), with_kwargs=True))
    backbone = getattr(model, "base_model", model)
    with hooks(handles):
        backbone(input_ids=input_ids, use_cache=False)
    if any(o is None for o in outputs):
        missing = [i for i, o in enumerate(outputs) if o is None]
        raise RuntimeError(f"blocks {missing} did not run in the forward pass")
    return StackRecording(inputs=inputs, outputs=outputs, calls=calls)  # type: ignore[arg-type]


def replay(adapter: ModelAdapter, recording: StackRecording, start: int, hidden: torch.Tensor) -> torch.Tensor:
    """Run blocks ``start``.. on ``hidden`` (B, T, d) with their recorded arguments; returns (B, T, d)."""
    for index in range(start, adapter.num_layers):
        hidden = recording.calls[index].call(adapter.blocks[index], hidden)
    return hidden


@contextmanager
def zero_child_output(block: nn.Module, child_name: str) -> Iterator[None]:
    """Within the context, the named child of ``block`` (its attention/mixer or MLP) contributes zeros."""
    child = getattr(block, child_name)

    def hook(module, args, output):
        return _replace_first(output, torch.zeros_like(first_tensor(output)))

    with hooks([child.register_forward_hook(hook)]):
        yield
