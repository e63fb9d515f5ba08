"""One architecture table: where each causal LM keeps its blocks, final norm, output head and
final-logit processing, plus a generic discovery fallback for architectures not in the table.

Nothing else in LayerTracer asks which architecture a model is: everything goes through the
:class:`ModelAdapter` resolved here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from layertracer.errors import UnsupportedArchitectureError

ATTENTION = "attention"
LINEAR_ATTENTION = "linear-attention"
SSM = "ssm"

# Child names of a block, by what they are. The first one present in a block wins.
_MIXER_KINDS: tuple[tuple[str, str], ...] = (
    ("self_attn", ATTENTION),
    ("attn", ATTENTION),
    ("attention", ATTENTION),
    ("linear_attn", LINEAR_ATTENTION),
    ("mamba", SSM),
    ("mixer", SSM),
)
_MLP_NAMES: tuple[str, ...] = ("mlp", "feed_forward", "block_sparse_moe", "fc2")
_FINAL_NORM_NAMES: tuple[str, ...] = ("norm", "ln_f", "final_layer_norm", "norm_f", "final_layernorm")


@dataclass(frozen=True)
class ArchitectureSpec:
    """Where one architecture keeps its parts, as dotted paths from the ``*ForCausalLM`` module.

    ``final_modules`` are applied in order to a block output to get the head's input (the final norm,
    and for OPT its optional ``project_out``); a path whose module is ``None`` is skipped. ``head`` is
    None for "the model's own ``get_output_embeddings()``" (its name changed across releases).
    """

    blocks: str
    final_modules: tuple[str, ...]
    head: Optional[str] = None


# The table. Keys are ``config.architectures[0]`` / the model class name.
ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "LlamaForCausalLM": ArchitectureSpec("model.layers", ("model.norm",)),
    "MistralForCausalLM": ArchitectureSpec("model.layers", ("model.norm",)),
    "Qwen2ForCausalLM": ArchitectureSpec("model.layers", ("model.norm",)),
    "Qwen3ForCausalLM": ArchitectureSpec("model.layers", ("model.norm",)),
    "Qwen3MoeForCausalLM": ArchitectureSpec("model.layers", ("model.norm",)),
    "Qwen3NextForCausalLM": ArchitectureSpec("model.layers", ("model.norm",)),
    "Gemma2ForCausalLM": ArchitectureSpec("model.layers", ("model.norm",)),
    "Gemma3ForCausalLM": ArchitectureSpec("model.layers", ("model.norm",)),
    "Phi3ForCausalLM": ArchitectureSpec("model.layers", ("model.norm",)),
    "GPT2LMHeadModel": ArchitectureSpec("transformer.h", ("transformer.ln_f",)),
    "GPTNeoXForCausalLM": ArchitectureSpec("gpt_neox.layers", ("gpt_neox.final_layer_norm",)),
    "OPTForCausalLM": ArchitectureSpec(
        "model.decoder.layers", ("model.decoder.final_layer_norm", "model.decoder.project_out")
    ),
    "MambaForCausalLM": ArchitectureSpec("backbone.layers", ("backbone.norm_f",)),
    "Mamba2ForCausalLM": ArchitectureSpec("backbone.layers", ("backbone.norm_f",)),
    "JambaForCausalLM": ArchitectureSpec("model.layers", ("model.final_layernorm",)),
    "BambaForCausalLM": ArchitectureSpec("model.layers", ("model.final_layernorm",)),
}


@dataclass
class ModelAdapter:
    """The parts of one loaded model that the tracer needs.

    blocks: the decoder blocks in execution order (``num_layers`` of them).
    final_modules: applied in order to a block output (B, ..., d) to give the head input.
    head: the output projection d -> vocab.
    process_logits: whatever the model does to its final logits (soft-capping, scaling).
    block_kinds: per block, ``attention`` / ``linear-attention`` / ``ssm``.
    mixer_names / mlp_names: per block, the child whose output is the token-mixer or MLP
        contribution (``None`` where the block has none, e.g. a Mamba block has no MLP).
    source: ``"table"`` or ``"discovered"``.
    """

    architecture: str
    blocks: nn.ModuleList
    final_modules: list[nn.Module]
    head: nn.Module
    process_logits: Callable[[torch.Tensor], torch.Tensor]
    block_kinds: list[str]
    mixer_names: list[Optional[str]]
    mlp_names: list[Optional[str]]
    source: str = "table"
    notes: list[str] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def head_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm (and projection) of block outputs. hidden: (..., d) -> (..., d_head)."""
        for module in self.final_modules:
            hidden = module(hidden)
        return hidden

    def logits(self, hidden: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The logit lens: block outputs (..., d) -> the model's own final logits (..., vocab).
        ``out``: see :meth:`project`."""
        return self.process_logits(self.project(self.head_input(hidden), out=out))

    def project(self, hidden: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The output head on (..., d) -> (..., vocab). For a plain Linear head on CPU and the few
        rows the lens projects, ``W @ x^T`` is computed instead of ``F.linear`` (1.4-2x faster, the
        same values up to float rounding), ``HEAD_VOCAB_BLOCK`` vocabulary rows at a time so the
        result comes out row-major (R, V): the transposed (V, R) product would make every later pass
        over the rows, log_softmax first, several times slower. A head with hooks (accelerate's, which
        load an offloaded weight at call time, or a user's) is always called as a module.

        out: an optional (R, V) contiguous buffer the CPU path writes into (of the result's dtype;
        other paths ignore it): a caller projecting chunk after chunk reuses one, where a fresh
        allocation of a chunk's 100 MB would be mapped and faulted in page by page every time."""
        head = self.head
        if (type(head) is nn.Linear and hidden.device.type == "cpu" and hidden.dim() == 2
                and head.weight.device.type == "cpu" and not hasattr(head, "_hf_hook")
                and not head._forward_hooks and not head._forward_pre_hooks):
            weight = head.weight  # (V, d)
            columns = hidden.T.contiguous()  # (d, R)
            dtype = torch.result_type(weight, hidden)
            shape = (hidden.shape[0], weight.shape[0])
            if out is None or out.shape != shape or out.dtype != dtype or not out.is_contiguous():
                out = hidden.new_empty(shape, dtype=dtype)
            block = hidden.new_empty((HEAD_VOCAB_BLOCK, hidden.shape[0]), dtype=dtype)  # one buffer for every block
            for start in range(0, weight.shape[0], HEAD_VOCAB_BLOCK):
                stop = min(start + HEAD_VOCAB_BLOCK, weight.shape[0])
                product = torch.mm(weight[start:stop], columns, out=block[: stop - start])  # (block, R)
                out[:, start:stop].copy_(product.T)  # transposed while in cache
            return out + head.bias if head.bias is not None else out
        return head(hidden)


# Vocabulary rows per CPU head product (2,048 x R float32: in cache, however large the vocabulary).
HEAD_VOCAB_BLOCK = 2048


def _get_path(root: nn.Module, path: str) -> Optional[nn.Module]:
    module: Optional[nn.Module] = root
    for part in path.split("."):
        if module is None or not hasattr(module, part):
            return None
        module = getattr(module, part)
    return module


def _logit_processing(config) -> Callable[[torch.Tensor], torch.Tensor]:
    """The final-logit transforms transformers applies after the head, read from the config.

    Gemma 2/3: ``tanh(x / cap) * cap``; Cohere-style ``logit_scale``: ``x * s``; Granite-style
    ``logits_scaling``: ``x / s``. The tests check every architecture's last-layer lens equals its
    real output, which catches a transform missing here.
    """
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    cap = getattr(text_config, "final_logit_softcapping", None)
    scale = getattr(text_config, "logit_scale", None)
    divide = getattr(text_config, "logits_scaling", None)
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
    if isinstance(scale, (int, float)) and scale != 1:
        steps.append(lambda x, s=float(scale): x * s)
    if isinstance(divide, (int, float)) and divide != 1:
        steps.append(lambda x, s=float(divide): x / s)
    if cap:
        steps.append(lambda x, c=float(cap): torch.tanh(x / c) * c)

    def process(logits: torch.Tensor) -> torch.Tensor:
        for step in steps:
            logits = step(logits)
        return logits

    return process


def _block_parts(block: nn.Module) -> tuple[str, Optional[str], Optional[str]]:
    """(kind, mixer child name, mlp child name) of one block."""
    children = dict(block.named_children())
    kind, mixer = ATTENTION, None
    for name, mixer_kind in _MIXER_KINDS:
        if name in children:
            kind, mixer = mixer_kind, name
            break
    mlp = next((name for name in _MLP_NAMES if name in children), None)
    return kind, mixer, mlp


def _discover_blocks(model: nn.Module, num_layers: Optional[int]) -> Optional[nn.ModuleList]:
    """The longest ModuleList of same-typed modules (the decoder stack), preferring the config's length."""
    best: Optional[nn.ModuleList] = None
    for _, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if num_layers is not None and len(module) != num_layers:
            continue
        if best is None or len(module) > len(best):
            best = module
    return best


def _discover_final_norm(model: nn.Module, blocks: nn.ModuleList) -> Optional[nn.Module]:
    block_ids = {id(m) for m in blocks.modules()}
    for name, module in model.named_modules():
        if id(module) in block_ids:
            continue
        if name.split(".")[-1] in _FINAL_NORM_NAMES:
            return module
    return None


def _output_embeddings(model: nn.Module) -> Optional[nn.Module]:
    getter = getattr(model, "get_output_embeddings", None)
    return getter() if callable(getter) else None


def architecture_name(model: nn.Module) -> str:
    archs = getattr(model.config, "architectures", None) or []
    return archs[0] if archs else type(model).__name__


def resolve_adapter(model: nn.Module) -> ModelAdapter:
    """The adapter for a loaded ``*ForCausalLM`` model: from the table, else by discovery.

    Raises UnsupportedArchitectureError naming the architecture when neither finds the blocks,
    the final norm and the output head.
    """
    arch = architecture_name(model)
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    num_layers = getattr(text_config, "num_hidden_layers", None) or getattr(text_config, "n_layer", None)
    spec = ARCHITECTURES.get(arch) or ARCHITECTURES.get(type(model).__name__)
    source = "table"
    blocks: Optional[nn.Module] = None
    final_modules: list[nn.Module] = []
    head: Optional[nn.Module] = None
    if spec is not None:
        blocks = _get_path(model, spec.blocks)
        final_modules = [m for m in (_get_path(model, p) for p in spec.final_modules) if m is not None]
        head = _get_path(model, spec.head) if spec.head else _output_embeddings(model)
    if not isinstance(blocks, nn.ModuleList) or not final_modules or head is None:
        source = "discovered"
        blocks = _discover_blocks(model, num_layers)
        if blocks is None:
            blocks = _discover_blocks(model, None)
        head = _output_embeddings(model)
        norm = _discover_final_norm(model, blocks) if blocks is not None else None
        final_modules = [norm] if norm is not None else []
    missing = [
        what
        for what, found in (("decoder blocks", blocks), ("final norm", final_modules), ("output head", head))
        if not found
    ]
    if missing:
        raise UnsupportedArchitectureError(
            f"unsupported architecture {arch}: could not find its {', '.join(missing)}"
        )
    assert isinstance(blocks, nn.ModuleList) and head is not None
    # Some models build more blocks than they run (e.g. the config caps the stack).
    if num_layers is not None and len(blocks) > num_layers:
        blocks = nn.ModuleList(list(blocks)[:num_layers])
    parts = [_block_parts(b) for b in blocks]
    return ModelAdapter(
        architecture=arch,
        blocks=blocks,
        final_modules=final_modules,
        head=head,
        process_logits=_logit_processing(config),
        block_kinds=[p[0] for p in parts],
        mixer_names=[p[1] for p in parts],
        mlp_names=[p[2] for p in parts],
        source=source,
    )


def supported_architectures() -> Sequence[str]:
    """Architecture names with an explicit table entry (others may still work by discovery)."""
    return sorted(ARCHITECTURES)
