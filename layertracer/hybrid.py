"""Hybrid models: a base model whose blocks in a chosen depth range are replaced.

The case study of the papers: keep a model's embeddings, head and most of its blocks, and swap a
depth range either for the same blocks of a **donor** checkpoint (e.g. the deep blocks of a model
continued-pre-trained on another language) or for **re-initialized** blocks (standing in for a new
module type that has to be trained from scratch). Tracing and training the hybrid then shows what
that range carries.

:func:`build_hybrid` never modifies its inputs: it deep-copies the base model and copies tensors into
the copy. The recipe (which layers, from where, seeds, fingerprints) is kept as provenance on the
result (``loaded.hybrid``) and in its config (``config.layertracer_hybrid``), so it survives
:func:`save_hybrid` and a reload with :func:`layertracer.models.loading.load_model`.
"""

from __future__ import annotations

import copy
import json
import operator
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from layertracer.errors import LayerTracerError
from layertracer.models.adapters import resolve_adapter
from layertracer.models.loading import LoadedModel, wrap_model
from layertracer.ranges import format_ranges

RECIPE_VERSION = 1
CONFIG_KEY = "layertracer_hybrid"

# Config keys that say nothing about how a block computes (bookkeeping, depth, vocabulary); any
# other difference between base and donor configs is recorded in the recipe.
_BOOKKEEPING_KEYS = frozenset(
    {
        "_name_or_path",
        "architectures",
        "torch_dtype",
        "dtype",
        "transformers_version",
        "_commit_hash",
        "_attn_implementation_autoset",
        "_attn_implementation",
        "num_hidden_layers",
        "n_layer",
        "vocab_size",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
        "tie_word_embeddings",
        "max_position_embeddings",
        "n_positions",
        "output_attentions",
        "output_hidden_states",
        "use_cache",
        CONFIG_KEY,
    }
)


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _model_ref(loaded: LoadedModel) -> dict[str, Any]:
    """Provenance of one input model (and its own recipe when it is itself a hybrid)."""
    ref = {
        "source": loaded.info.source,
        "fingerprint": loaded.info.fingerprint,
        "architecture": loaded.info.architecture,
        "num_layers": loaded.info.num_layers,
        "hidden_size": loaded.info.hidden_size,
        "dtype": loaded.info.dtype,
    }
    previous = hybrid_recipe(loaded)
    if previous is not None:
        ref["hybrid"] = previous
    return ref


def _check_layers(layers: Sequence[int], num_layers: int, what: str) -> list[int]:
    checked = []
    for item in layers:
        try:
            layer = operator.index(item)  # int and numpy integers; not floats or strings
        except TypeError:
            raise LayerTracerError(f"{what} must be integers, got {item!r}") from None
        if isinstance(item, bool):
            raise LayerTracerError(f"{what} must be integers, got {item!r}")
        if not 0 <= layer < num_layers:
            raise LayerTracerError(f"{what}: layer {layer} is out of range for a {num_layers}-layer model (0-{num_layers - 1})")
        checked.append(layer)
    return checked


def _first_block_mismatch(donor_block: nn.Module, base_block: nn.Module) -> Optional[str]:
    """A sentence naming the first difference in parameter/buffer names or shapes, else None."""
    donor_state, base_state = donor_block.state_dict(), base_block.state_dict()
    for name, tensor in base_state.items():
        if name not in donor_state:
            return f"{name!r} is missing in the donor block"
        if tuple(donor_state[name].shape) != tuple(tensor.shape):
            return (
                f"{name!r} has shape {tuple(donor_state[name].shape)} in the donor and {tuple(tensor.shape)} in the base"
            )
    for name in donor_state:
        if name not in base_state:
            return f"the donor block has {name!r}, which the base block lacks"
    return None


def _config_differences(base: LoadedModel, donor: LoadedModel) -> dict[str, Any]:
    """Block-relevant config keys whose values differ: {key: [base value, donor value]}.

    The donor's *weights* are run by the base's code and config, so e.g. a different rope_theta or
    norm epsilon changes what the donor blocks compute; recorded, not refused (same shapes can be a
    deliberate choice)."""
    base_cfg = _text_config(base.model.config).to_dict()
    donor_cfg = _text_config(donor.model.config).to_dict()
    differences = {}
    for key in sorted(set(base_cfg) | set(donor_cfg)):
        if key in _BOOKKEEPING_KEYS:
            continue
        if base_cfg.get(key) != donor_cfg.get(key):
            differences[key] = [base_cfg.get(key), donor_cfg.get(key)]
    return _jsonable(differences)


def _reinit_block(model: nn.Module, block: nn.Module, seed: int) -> str:
    """Re-initialize ``block`` in place the way ``model`` initializes fresh weights; returns the method.

    The block is re-initialized as a float32 CPU copy under a seeded, forked RNG, then copied back,
    so the result depends only on (seed, layer), not on the device, dtype or the global RNG state, and
    the caller's RNG stream is untouched.
    """
    fresh = copy.deepcopy(block).to("cpu").float()
    # transformers (v5) marks loaded tensors ``_is_hf_initialized`` and its init functions then skip
    # them; the flags were deep-copied along, so they are cleared on the copy (not on the base).
    for item in [*fresh.parameters(), *fresh.buffers(), *fresh.modules()]:
        if "_is_hf_initialized" in getattr(item, "__dict__", {}):
            del item.__dict__["_is_hf_initialized"]
    init = getattr(model, "_init_weights", None)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        if callable(init):
            method = "_init_weights"
            for module in fresh.modules():
                init(module)
        else:
            method = "reset_parameters"
            for module in fresh.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
    block.load_state_dict(fresh.state_dict())
    return method


def _layer_seed(seed: int, layer: int) -> int:
    # One seed per (seed, layer), so re-initializing layer 5 gives the same weights whether or not
    # layer 4 is re-initialized too.
    return int(seed) * 1_000_003 + int(layer)


def build_hybrid(
    base: LoadedModel,
    *,
    layers: Sequence[int],
    donor: Optional[LoadedModel] = None,
    donor_layers: Optional[Sequence[int]] = None,
    reinit: bool = False,
    seed: int = 0,
) -> LoadedModel:
    """A new model: ``base`` with the blocks at ``layers`` taken from ``donor`` or re-initialized.

    layers: base block indices (0-based) to replace, e.g. ``list(range(12, 24))``; distinct.
    donor: a model with the same hidden size and, at the mapped positions, blocks of the same class
        with the same parameter names and shapes. Its block ``donor_layers[k]`` goes to base block
        ``layers[k]``; ``donor_layers`` defaults to ``layers`` (same depth positions) and may differ
        in position (e.g. donor 0-3 -> base 4-7) but not in count. Tensors are copied exactly (cast
        to the base's dtype and device if they differ).
    reinit: instead of a donor, re-initialize those blocks with the model's own ``_init_weights``
        (transformers' init for that architecture; ``reset_parameters`` of each submodule for a
        plain torch model), seeded per layer by ``seed``.

    Returns a new LoadedModel (a deep copy of the base; the base and donor are not modified) sharing
    the base's tokenizer, with ``.hybrid`` (and ``model.config.layertracer_hybrid``) holding the
    recipe: mode, layers, mapping, seed, init method, base/donor provenance, config differences.
    Raises LayerTracerError for: no or both of donor/reinit, empty or repeated layers, a layer out of
    range, mismatched counts, a hidden-size mismatch, a donor block of another class or kind, or
    blocks whose parameters differ (the message names the first difference).
    """
    num_layers = base.adapter.num_layers
    if reinit and donor is not None:
        raise LayerTracerError("a hybrid takes its blocks from a donor or re-initializes them, not both")
    if not reinit and donor is None:
        raise LayerTracerError("build_hybrid needs a donor model or reinit=True")
    targets = _check_layers(list(layers), num_layers, "layers")
    if not targets:
        raise LayerTracerError("build_hybrid needs at least one layer to replace")
    if len(set(targets)) != len(targets):
        raise LayerTracerError(f"layers must be distinct, got {targets}")

    recipe: dict[str, Any] = {
        "version": RECIPE_VERSION,
        "mode": "reinit" if reinit else "donor",
        "layers": targets,
        "ranges": format_ranges(targets),
        "base": _model_ref(base),
    }
    sources: list[int] = []
    if donor is not None:
        if donor.info.hidden_size != base.info.hidden_size:
            raise LayerTracerError(
                f"hidden size mismatch: the base has hidden size {base.info.hidden_size}, "
                f"the donor {donor.info.hidden_size}"
            )
        sources = _check_layers(list(targets if donor_layers is None else donor_layers), donor.adapter.num_layers, "donor_layers")
        if len(sources) != len(targets):
            raise LayerTracerError(
                f"donor_layers ({len(sources)}) and layers ({len(targets)}) must have the same number of entries"
            )
        for source, target in zip(sources, targets):
            donor_block, base_block = donor.adapter.blocks[source], base.adapter.blocks[target]
            donor_kind, base_kind = donor.adapter.block_kinds[source], base.adapter.block_kinds[target]
            if type(donor_block).__name__ != type(base_block).__name__ or donor_kind != base_kind:
                raise LayerTracerError(
                    f"donor block {source} is a {type(donor_block).__name__} ({donor_kind}) but base block "
                    f"{target} is a {type(base_block).__name__} ({base_kind}): blocks must be of the same type"
                )
            mismatch = _first_block_mismatch(donor_block, base_block)
            if mismatch is not None:
                raise LayerTracerError(
                    f"donor block {source} does not match base block {target}: {mismatch}"
                )
        recipe.update(
            donor=_model_ref(donor),
            donor_layers=sources,
            mapping=[{"donor_layer": s, "base_layer": t} for s, t in zip(sources, targets)],
            config_differences=_config_differences(base, donor),
        )
        if donor.info.dtype != base.info.dtype:
            recipe["cast"] = f"donor weights cast from {donor.info.dtype} to {base.info.dtype}"
    elif donor_layers is not None:
        raise LayerTracerError("donor_layers only applies with a donor")

    # Deep copy: the result owns its tensors (tied weights stay tied within it), and the base, which
    # a long-lived worker may still be serving, is never touched.
    model = copy.deepcopy(base.model)
    adapter = resolve_adapter(model)
    with torch.no_grad():
        if donor is not None:
            for source, target in zip(sources, targets):
                # load_state_dict copies (with a cast) into the copy's own tensors: no storage is
                # shared with the donor.
                adapter.blocks[target].load_state_dict(donor.adapter.blocks[source].state_dict())
        else:
            methods = {_reinit_block(model, adapter.blocks[t], _layer_seed(seed, t)) for t in targets}
            recipe.update(
                seed=int(seed),
                layer_seeds={str(t): _layer_seed(seed, t) for t in targets},
                init=sorted(methods)[0],
            )
    recipe = _jsonable(recipe)
    setattr(model.config, CONFIG_KEY, recipe)
    if donor is not None:
        what = f"{base.info.source} + {donor.info.source} at {recipe['ranges']}"
    else:
        what = f"{base.info.source}, re-initialized {recipe['ranges']} with seed {seed}"
    loaded = wrap_model(model, base.tokenizer, source=f"hybrid({what})")
    # LoadedModel is a plain dataclass; the recipe rides along as an extra attribute.
    loaded.hybrid = recipe
    return loaded


def hybrid_recipe(loaded: LoadedModel) -> Optional[dict[str, Any]]:
    """The recipe of a hybrid, built here or reloaded from a saved folder (its config); else None."""
    recipe = getattr(loaded, "hybrid", None)
    if recipe is None:
        recipe = getattr(loaded.model.config, CONFIG_KEY, None)
    return recipe


def save_hybrid(loaded: LoadedModel, folder: str | Path) -> Path:
    """Write a hybrid to ``folder``: safetensors weights and config.json (with the recipe under
    ``layertracer_hybrid``), the tokenizer, and ``hybrid.json`` (the recipe on its own). The folder
    loads back with :func:`layertracer.models.loading.load_model`. Returns the folder."""
    recipe = hybrid_recipe(loaded)
    if recipe is None:
        raise LayerTracerError("this model has no hybrid recipe: build it with build_hybrid first")
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    setattr(loaded.model.config, CONFIG_KEY, recipe)
    loaded.model.save_pretrained(path)  # transformers >= 5 writes safetensors only
    if loaded.tokenizer is not None:
        loaded.tokenizer.save_pretrained(path)
    (path / "hybrid.json").write_text(json.dumps(recipe, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


__all__ = ["CONFIG_KEY", "build_hybrid", "hybrid_recipe", "save_hybrid"]
