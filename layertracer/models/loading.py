"""Loading a causal LM and its tokenizer from a local directory or a hub id, safely by default."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from layertracer.errors import ModelLoadError
from layertracer.models.adapters import ModelAdapter, resolve_adapter
from layertracer.spec.loading import (
    LoadOptionError,
    check_attn_implementation,
    check_load_in,
    parse_device_map,
    parse_max_memory,
)
from layertracer.spec.sources import ModelSource, parse_model_source

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
    # Hub models: the revision asked for (None: the default branch) and the commit it resolved to.
    revision: Optional[str] = None
    commit: Optional[str] = None
    # Weight file -> sha256 of its content, where known without reading it (a hub cache snapshot).
    weights_sha256: dict[str, str] = field(default_factory=dict)
    # A model placed by accelerate: module name -> where it went ("0", "cpu", "disk"); else None.
    device_map: Optional[dict[str, str]] = None

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


# Weight and config files that define a model's numbers (what a fingerprint covers).
_FINGERPRINTED = {".json", ".safetensors", ".bin", ".model"}
_SHA256_HEX = 64


def fingerprint(source: str) -> str:
    """A content fingerprint of a model folder, cheap at any size.

    A snapshot folder of the Hugging Face cache: the sha256 over its files' names and blob names (the
    hub names each large file's blob by the sha256 of its content, so this hashes the real weights
    without reading them). Any other folder: the sha256 of each file's name, size and first and last
    MiB (weights can be tens of GB). A hub id that is not on disk: the id itself.
    """
    folder = Path(source)
    digest = hashlib.sha256()
    if not folder.is_dir():
        digest.update(source.encode())
        return "id:" + digest.hexdigest()[:16]
    blobs = _cache_blob_hashes(folder)
    for file in sorted(folder.iterdir()):
        if file.suffix not in _FINGERPRINTED or not file.is_file():
            continue
        if file.name in blobs:
            digest.update(f"{file.name}:{blobs[file.name]}".encode())
            continue
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}".encode())
        with open(file, "rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), os.SEEK_END)
                digest.update(handle.read())
    return "sha256:" + digest.hexdigest()[:16]


def _cache_blob_hashes(folder: Path) -> dict[str, str]:
    """file name -> sha256 of its content, for the files of a hub cache snapshot that link to a blob
    named by its sha256 (the hub's LFS files: weights); {} for an ordinary folder."""
    if folder.parent.name != "snapshots":
        return {}
    hashes = {}
    for file in folder.iterdir():
        if file.is_symlink():
            blob = Path(os.readlink(file)).name
            if len(blob) == _SHA256_HEX and all(c in "0123456789abcdef" for c in blob):
                hashes[file.name] = blob
    return hashes


def weight_hashes(folder: str | Path) -> dict[str, str]:
    """The sha256 of each weight file of a hub cache snapshot (safetensors, bin), from its blob name."""
    return {name: sha for name, sha in _cache_blob_hashes(Path(folder)).items()
            if name.endswith((".safetensors", ".bin"))}


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _require_causal_lm(config, source: str, trust_remote_code: bool) -> None:
    """Fail before reading weights when no causal-LM class exists for this config."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    remote = trust_remote_code and "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})
    if getattr(config, "model_type", None) not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not remote:
        arch = (getattr(config, "architectures", None) or [type(config).__name__])[0]
        raise ModelLoadError(f"{source!r} is not a causal language model ({arch}, model type {config.model_type!r})")


def _weights_error(source: str, exc: Exception) -> Exception:
    """One line for weights that do not load: damaged safetensors, or pickle weights that hold more
    than tensors (torch's weights-only loader refuses them; its advice to turn that off must not
    reach users). Anything else is a bug and is re-raised as it is."""
    import pickle

    from safetensors import SafetensorError

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, SafetensorError):
        return ModelLoadError(f"the safetensors weights of {source!r} are damaged or incomplete ({first}); "
                              "download or save them again")
    if isinstance(exc, pickle.UnpicklingError) or "weights only load failed" in first.lower():
        return ModelLoadError(f"the pickle weights (*.bin) of {source!r} hold objects other than tensors, which "
                              "LayerTracer never unpickles; convert the model to safetensors where you trust it")
    return exc


def _hub_error(source: ModelSource, exc: Exception) -> ModelLoadError:
    """One line for a hub id that could not be resolved: not cached while offline, gated, unknown."""
    from huggingface_hub import constants, is_offline_mode

    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if is_offline_mode():
        return ModelLoadError(
            f"model {str(source)!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is "
            f"set: fetch it where the hub is reachable (hf download {source.location}"
            f"{' --revision ' + source.revision if source.revision else ''}) into that cache, or unset HF_HUB_OFFLINE"
        )
    if "gated" in first.lower() or "401" in first or "403" in first:
        return ModelLoadError(f"model {str(source)!r} is gated or private: accept its licence on the hub and log in "
                              f"(hf auth login, or HF_TOKEN): {first}")
    return ModelLoadError(f"cannot load model {str(source)!r}: {first}")


def load_config(parsed: ModelSource, *, trust_remote_code: bool = False):
    """The config of a resolved source (for a hub id, read through the cache), checked to be a causal
    LM's; ModelLoadError with one line otherwise."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(parsed.location, revision=parsed.revision,
                                            trust_remote_code=trust_remote_code)
    except OSError as exc:
        if not parsed.is_local:
            raise _hub_error(parsed, exc) from None
        raise ModelLoadError(f"cannot load model {str(parsed)!r}: {str(exc).splitlines()[0]}") from None
    except ValueError as exc:
        raise ModelLoadError(f"cannot read the config of {str(parsed)!r}: {str(exc).splitlines()[0]}") from None
    _require_causal_lm(config, str(parsed), trust_remote_code)
    return config


def resolve_source(source: str, *, revision: Optional[str] = None,
                   allowed_roots: Optional[Sequence[str]] = None) -> ModelSource:
    """The one model-source rule (``layertracer.spec.sources``), plus the engine's checks of a local
    folder: inside ``allowed_roots`` when given, and holding a config.json."""
    parsed = parse_model_source(source, revision=revision, roots=allowed_roots or ())
    if not parsed.is_local:
        return parsed
    path = Path(parsed.location)
    if allowed_roots is not None:
        path = confine_path(path, allowed_roots)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model path {source!r} has no config.json: not a Hugging Face model folder")
    return ModelSource("local", str(path))


def load_model(
    source: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    allowed_roots: Optional[Sequence[str]] = None,
    revision: Optional[str] = None,
    device_map: Optional[str] = None,
    max_memory: Optional[str] = None,
    offload_folder: Optional[str] = None,
    attn_implementation: Optional[str] = None,
    load_in: Optional[str] = None,
) -> LoadedModel:
    """Load ``source`` (a local folder, or a hub id ``org/name[@revision]``) as a causal LM with its
    tokenizer.

    A model larger than one device: ``device_map`` (``auto``, ``balanced``, ``balanced_low_0``,
    ``sequential`` or a JSON file of module -> device) and ``max_memory`` (``0=70GiB,cpu=200GiB``)
    place its blocks with accelerate, spilling to CPU and to ``offload_folder`` on disk; the tracer
    follows the blocks wherever they are. ``load_in`` ``8bit`` / ``4bit`` quantizes with bitsandbytes
    (CUDA only). The grammar is ``layertracer.spec.loading``.

    A hub id is read through the standard Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``) and
    honours ``HF_HUB_OFFLINE``; ``info.commit`` records the commit it resolved to. safetensors weights
    are preferred; ``trust_remote_code`` stays off unless asked. With ``allowed_roots``, a local path
    must lie inside one of them. Raises ModelLoadError with a one-line reason for a missing path, a hub
    id that is malformed or not cached offline, a config that is not a causal LM, or weights that do
    not load.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    placement = _placement(device_map, max_memory, offload_folder, load_in, torch_device)
    attention = {"attn_implementation": check_attn_implementation(attn_implementation)} if attn_implementation else {}
    parsed = resolve_source(source, revision=revision, allowed_roots=allowed_roots)
    where = {"pretrained_model_name_or_path": parsed.location, "revision": parsed.revision}
    source = str(parsed)
    config = load_config(parsed, trust_remote_code=trust_remote_code)
    snapshot = None if parsed.is_local else _snapshot_folder(parsed.location, parsed.revision)
    commit = Path(snapshot).name if snapshot else None
    if commit:
        where["revision"] = commit  # weights and tokenizer from the very commit the config came from
    try:
        model = AutoModelForCausalLM.from_pretrained(
            **where,
            config=config,
            dtype=torch_dtype,
            trust_remote_code=trust_remote_code,
            use_safetensors=None,
            **placement,
            **attention,
        )
    except ValueError as exc:
        arch = (getattr(config, "architectures", None) or [type(config).__name__])[0]
        raise ModelLoadError(
            f"{source!r} is not a causal language model ({arch}): {str(exc).splitlines()[0]}"
        ) from None
    except OSError as exc:
        raise ModelLoadError(f"cannot load the weights of {source!r}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # noqa: BLE001 - the weight readers' own errors, each made one line
        raise _weights_error(source, exc) from None
    if "device_map" not in placement:
        model.to(torch_device)
    _check_disk_offload(model, offload_folder, max_memory)
    model.eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(**where, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the tokenizer of {source!r}: {str(exc).splitlines()[0]}") from None
    folder = parsed.location if parsed.is_local else (snapshot or parsed.location)
    return wrap_model(model, tokenizer, source=source, revision=parsed.revision, commit=commit,
                      fingerprint_of=folder)


def _placement(device_map: Optional[str], max_memory: Optional[str], offload_folder: Optional[str],
               load_in: Optional[str], device: torch.device) -> dict[str, Any]:
    """from_pretrained's placement arguments, checked against this machine (a GPU index that does not
    exist, or bitsandbytes without CUDA, is a one-line error before any weight is read)."""
    arguments: dict[str, Any] = {}
    mapping = parse_device_map(device_map)
    budget = parse_max_memory(max_memory)
    quantize = check_load_in(load_in)
    gpus = torch.cuda.device_count()
    named = [d for d in (list(budget or {}) + (list(mapping.values()) if isinstance(mapping, dict) else []))
             if isinstance(d, int) or str(d).isdigit() or str(d).startswith("cuda:")]
    for entry in named:
        index = int(str(entry).removeprefix("cuda:"))
        if index >= gpus:
            raise LoadOptionError(f"the device map or memory budget names GPU {index}, but this machine has "
                                  f"{gpus} GPU{'s' if gpus != 1 else ''}")
    if budget and mapping is None:
        mapping = "auto"  # a memory budget means placing the blocks by it
    if mapping is not None:
        _need_accelerate()
        arguments["device_map"] = mapping
        if budget:
            arguments["max_memory"] = budget
        if offload_folder:
            arguments["offload_folder"] = str(offload_folder)
    elif offload_folder:
        raise LoadOptionError("--offload-folder needs --device-map (or --max-memory): nothing is placed on disk otherwise")
    if quantize:
        if device.type != "cuda" and gpus == 0:
            raise LoadOptionError(f"{quantize} loading uses bitsandbytes, which needs a CUDA GPU; this machine has none")
        try:
            from transformers import BitsAndBytesConfig
        except ImportError:  # pragma: no cover - transformers always has it
            raise LoadOptionError("this transformers has no bitsandbytes support") from None
        arguments["quantization_config"] = BitsAndBytesConfig(**{f"load_in_{quantize}": True})
        _need_accelerate()
        arguments.setdefault("device_map", "auto")
    return arguments


def _check_disk_offload(model: nn.Module, offload_folder: Optional[str], max_memory: Optional[str]) -> None:
    """A placement that left modules for the disk works only with an offload folder: without one,
    transformers leaves their buffers (rotary frequencies, ...) on the meta device and the first forward
    fails deep inside accelerate. Refuse in one line instead, naming the way out."""
    placed = getattr(model, "hf_device_map", None)
    on_disk = [name for name, where in (placed or {}).items() if str(where) == "disk"] if isinstance(placed, dict) else []
    if not on_disk or offload_folder:
        return
    budget = f" (--max-memory {max_memory})" if max_memory else ""
    raise LoadOptionError(
        f"the memory budget{budget} leaves {len(on_disk)} module{'s' if len(on_disk) != 1 else ''} of the model for "
        f"the disk ({on_disk[0] or 'the whole model'}{', ...' if len(on_disk) > 1 else ''}): give --offload-folder "
        f"DIR to keep them there, or more memory")


def _need_accelerate() -> None:
    """transformers places a model by a device map through accelerate, which is optional here."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("accelerate")
    except PackageNotFoundError:
        raise LoadOptionError("placing a model by a device map needs accelerate: pip install 'layertracer[gpu]'") from None
    major, minor = (int(x) for x in (found.split(".") + ["0"])[:2])
    if (major, minor) < (1, 2):
        raise LoadOptionError(f"placing a model by a device map needs accelerate >= 1.2 (this is {found}): "
                              "pip install -U 'layertracer[gpu]'")


def _snapshot_folder(repo_id: str, revision: Optional[str]) -> Optional[str]:
    """The cache snapshot folder (``.../snapshots/<commit>``) the config of ``repo_id`` at ``revision``
    was read from: the commit a branch or tag resolved to, whether it was just downloaded or cached."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return str(Path(found).parent) if isinstance(found, str) else None


def wrap_model(model: nn.Module, tokenizer: Any, *, source: str = "<in memory>", revision: Optional[str] = None,
               commit: Optional[str] = None, fingerprint_of: Optional[str] = None,
               declared_dtype: Optional[str] = None) -> LoadedModel:
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
        # A model on the meta device (inspection) reports the dtype its checkpoint declares.
        dtype=declared_dtype or str(first.dtype).replace("torch.", ""),
        device=str(first.device),
        fingerprint=fingerprint(fingerprint_of or source),
        revision=revision,
        commit=commit,
        weights_sha256=weight_hashes(fingerprint_of) if fingerprint_of else {},
        device_map=({str(k): str(v) for k, v in model.hf_device_map.items()}
                    if isinstance(getattr(model, "hf_device_map", None), dict) else None),
    )
    return LoadedModel(model=model, tokenizer=tokenizer, adapter=adapter, info=info)


def describe(source: str, **kwargs: Any) -> dict[str, Any]:
    """Model introspection as plain JSON-able data (used by the CLI's ``inspect`` and the worker)."""
    loaded = load_model(source, **kwargs)
    return json.loads(json.dumps(loaded.info.to_dict()))
