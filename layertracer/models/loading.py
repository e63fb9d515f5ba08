"""Loading a causal LM and its tokenizer from a local directory or a hub id, safely by default."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from layertracer.errors import ModelLoadError
from layertracer.models.adapters import ModelAdapter, resolve_adapter

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


@dataclass(frozen=True)
class ModelInfo:
    """What a result needs to say about the model it came from (provenance)."""

    source: str
    architecture: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    num_parameters: int
    block_kinds: list[str]
    adapter_source: str
    dtype: str
    device: str
    fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedModel:
    """A model ready to trace: the module (eval mode), its tokenizer, adapter and description."""

    model: nn.Module
    tokenizer: Any
    adapter: ModelAdapter
    info: ModelInfo
    hybrid: Optional[dict] = None  # the recipe, for a model assembled by layertracer.hybrid


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else as torch understands it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available on this machine")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 on CUDA, float32 on CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(sorted(_DTYPES))}")
    return _DTYPES[dtype]


def confine_path(path: str | os.PathLike, roots: Sequence[str | os.PathLike]) -> Path:
    """The real path of ``path`` if it lies inside one of ``roots`` (symlinks resolved), else an error.

    Used by the service so that a model path sent over the API cannot reach outside the folders an
    operator configured (no ``..`` traversal, no symlink escape).
    """
    real = Path(path).expanduser().resolve()
    for root in roots:
        real_root = Path(root).expanduser().resolve()
        if real == real_root or real_root in real.parents:
            return real
    raise ModelLoadError(f"model path {str(path)!r} is outside the allowed model roots")


def fingerprint(source: str) -> str:
    """A cheap content fingerprint of a local model folder (sha256 of its config, and of each weight
    file's name, size and first and last MiB); for a hub id, the id itself. Weight files can be tens of
    GB, so hashing them whole on every trace would cost more than the trace."""
    folder = Path(source)
    digest = hashlib.sha256()
    if not folder.is_dir():
        digest.update(source.encode())
        return "id:" + digest.hexdigest()[:16]
    for file in sorted(folder.iterdir()):
        if file.suffix not in {".json", ".safetensors", ".bin", ".model"} or not file.is_file():
            continue
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}".encode())
        with open(file, "rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), os.SEEK_END)
                digest.update(handle.read())
    return "sha256:" + digest.hexdigest()[:16]


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _require_causal_lm(config, source: str, trust_remote_code: bool) -> None:
    """Fail before reading weights when no causal-LM class exists for this config."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    remote = trust_remote_code and "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})
    if getattr(config, "model_type", None) not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not remote:
        arch = (getattr(config, "architectures", None) or [type(config).__name__])[0]
        raise ModelLoadError(f"{source!r} is not a causal language model ({arch}, model type {config.model_type!r})")


def load_model(
    source: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    allowed_roots: Optional[Sequence[str]] = None,
) -> LoadedModel:
    """Load ``source`` (a local folder or a hub id) as a causal LM with its tokenizer.

    safetensors weights are preferred; ``trust_remote_code`` stays off unless asked. With
    ``allowed_roots``, a local path must lie inside one of them. Raises ModelLoadError with a one-line
    reason for a missing path, a config that is not a causal LM, or weights that do not load.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    looks_local = os.sep in source or source.startswith(".") or Path(source).exists()
    if looks_local:
        path = Path(source).expanduser()
        if allowed_roots is not None:
            path = confine_path(path, allowed_roots)
        if not path.exists():
            raise ModelLoadError(f"model path {source!r} does not exist")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model path {source!r} has no config.json: not a Hugging Face model folder")
        source = str(path)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise ModelLoadError(f"cannot load model {source!r}: {str(exc).splitlines()[0]}") from None
    except ValueError as exc:
        raise ModelLoadError(f"cannot read the config of {source!r}: {str(exc).splitlines()[0]}") from None
    _require_causal_lm(config, source, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source,
            config=config,
            dtype=torch_dtype,
            trust_remote_code=trust_remote_code,
            use_safetensors=None,
        )
    except ValueError as exc:
        arch = (getattr(config, "architectures", None) or [type(config).__name__])[0]
        raise ModelLoadError(
            f"{source!r} is not a causal language model ({arch}): {str(exc).splitlines()[0]}"
        ) from None
    except OSError as exc:
        raise ModelLoadError(f"cannot load the weights of {source!r}: {str(exc).splitlines()[0]}") from None
    model.to(torch_device).eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the tokenizer of {source!r}: {str(exc).splitlines()[0]}") from None
    return wrap_model(model, tokenizer, source=source)


def wrap_model(model: nn.Module, tokenizer: Any, *, source: str = "<in memory>") -> LoadedModel:
    """Make an already loaded model traceable (eval mode, adapter resolved, info filled in)."""
    model.eval()
    adapter = resolve_adapter(model)
    text_config = _text_config(model.config)
    first = next(model.parameters())
    info = ModelInfo(
        source=source,
        architecture=adapter.architecture,
        num_layers=adapter.num_layers,
        hidden_size=int(getattr(text_config, "hidden_size", 0) or getattr(text_config, "n_embd", 0)),
        vocab_size=int(getattr(text_config, "vocab_size", 0)),
        num_parameters=sum(p.numel() for p in model.parameters()),
        block_kinds=list(adapter.block_kinds),
        adapter_source=adapter.source,
        dtype=str(first.dtype).replace("torch.", ""),
        device=str(first.device),
        fingerprint=fingerprint(source),
    )
    return LoadedModel(model=model, tokenizer=tokenizer, adapter=adapter, info=info)


def describe(source: str, **kwargs: Any) -> dict[str, Any]:
    """Model introspection as plain JSON-able data (used by the CLI's ``inspect`` and the worker)."""
    loaded = load_model(source, **kwargs)
    return json.loads(json.dumps(loaded.info.to_dict()))
