"""Inspection without weights: the architecture, the blocks and every parameter count of a model from
its config alone (the model built on the meta device), plus the element count in its safetensors
headers. Registering or inspecting a 70B model must not need 140 GB of memory, or its weights at all:
for a hub id only ``config.json`` is read from the cache (or fetched).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from layertracer.errors import ModelLoadError
from layertracer.models.loading import LoadedModel, _snapshot_folder, load_config, resolve_source, wrap_model

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def load_structure(source: str, *, revision: Optional[str] = None, trust_remote_code: bool = False,
                   allowed_roots: Optional[Sequence[str]] = None) -> LoadedModel:
    """A LoadedModel whose parameters live on the meta device (no weights read, no memory for them)
    and with no tokenizer: for inspection, parameter counts and allocation exports only."""
    import torch
    from transformers import AutoModelForCausalLM

    parsed = resolve_source(source, revision=revision, allowed_roots=allowed_roots)
    config = load_config(parsed, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        if hasattr(model, "tie_weights"):
            model.tie_weights()  # the head shares the embedding as when loaded (5.0's from_config leaves it apart)
    snapshot = None if parsed.is_local else _snapshot_folder(parsed.location, parsed.revision)
    folder = parsed.location if parsed.is_local else snapshot
    declared = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return wrap_model(model, None, source=str(parsed), revision=parsed.revision,
                      commit=Path(snapshot).name if snapshot else None, fingerprint_of=folder,
                      declared_dtype=str(declared or "float32").replace("torch.", ""))


def _count(params: Iterable[Any], seen: Optional[set[int]] = None) -> int:
    """Elements of ``params``, each tensor once (``seen`` carries ids across calls)."""
    seen = set() if seen is None else seen
    total = 0
    for param in params:
        if id(param) not in seen:
            seen.add(id(param))
            total += param.numel()
    return total


def describe_loaded(loaded: LoadedModel) -> dict[str, Any]:
    """Architecture and parameter counts of a LoadedModel as plain JSON data.

    Keys: everything of ``ModelInfo`` (``source``, ``architecture``, ``num_layers``, ``hidden_size``,
    ``vocab_size``, ``num_parameters``, ``block_kinds`` [L], ``adapter_source``, ``dtype``, ``device``,
    ``fingerprint``, ``revision``, ``commit``, ``weights_sha256``), plus ``mixers`` / ``mlps`` [L]
    (child names or None), ``block_parameters`` [L] (elements per block), ``embedding_parameters``,
    ``head_parameters``, ``final_norm_parameters``, ``other_parameters`` (e.g. learned position
    embeddings) and ``tied_embeddings`` (the head shares the input embedding's weight; its count is
    then also in ``embedding_parameters``). Counts are numbers of elements; ``num_parameters`` counts a
    tied tensor once, so the parts (with the head as 0 when tied) add up to it.
    """
    model, adapter = loaded.model, loaded.adapter
    info = loaded.info.to_dict()
    embedding = model.get_input_embeddings()
    head_weight = getattr(adapter.head, "weight", None)
    tied = embedding is not None and head_weight is not None and head_weight is getattr(embedding, "weight", None)
    block_params = [_count(block.parameters()) for block in adapter.blocks]
    seen: set[int] = set()
    for block in adapter.blocks:
        _count(block.parameters(), seen)
    embedding_params = _count(embedding.parameters(), seen) if embedding is not None else 0
    head_params = _count(adapter.head.parameters(), seen)
    norm_params = _count((p for m in adapter.final_modules for p in m.parameters()), seen)
    total = _count(model.parameters())
    info.update(
        mixers=list(adapter.mixer_names),
        mlps=list(adapter.mlp_names),
        block_parameters=block_params,
        embedding_parameters=embedding_params,
        head_parameters=sum(p.numel() for p in adapter.head.parameters()) if tied else head_params,
        final_norm_parameters=norm_params,
        other_parameters=total - sum(block_params) - embedding_params - head_params - norm_params,
        tied_embeddings=bool(tied),
        num_parameters=total,
    )
    return info


def stored_parameters(folder: Path) -> Optional[int]:
    """Elements in a folder's safetensors files, read from their headers only (None without any)."""
    from safetensors import SafetensorError, safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    count = 1
                    for size in handle.get_slice(name).get_shape():
                        count *= int(size)
                    total += count
        except SafetensorError as exc:
            raise ModelLoadError(f"the safetensors weights of {str(folder)!r} are damaged or incomplete "
                                 f"({str(exc).splitlines()[0]}); download or save them again") from None
    return total


def inspect_model(source: str, *, revision: Optional[str] = None, trust_remote_code: bool = False,
                  allowed_roots: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """``describe_loaded`` of ``load_structure``, with ``device: "meta"``, ``weights_loaded: False``
    and ``stored_parameters`` (elements in the safetensors headers of a local folder or cached
    snapshot; None where there are none, e.g. a hub model whose weights are not downloaded)."""
    loaded = load_structure(source, revision=revision, trust_remote_code=trust_remote_code,
                            allowed_roots=allowed_roots)
    info = describe_loaded(loaded)
    parsed = resolve_source(source, revision=revision, allowed_roots=allowed_roots)
    folder = Path(parsed.location) if parsed.is_local else (
        Path(p) if (p := _snapshot_folder(parsed.location, parsed.revision)) else None)
    info.update(device="meta", weights_loaded=False,
                stored_parameters=stored_parameters(folder) if folder is not None else None)
    return info
