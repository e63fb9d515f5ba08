"""The ``lens`` job's runner: one prompt's live logit lens (``layertracer.live_lens``) on a model.

A person waits for it on the trace page, so the loaded model is kept for the next lens job (one model,
keyed by its source, device, dtype and the files of its folder): a second prompt on the same model
costs one forward pass, not a load. Any other job drops it first (``forget``), so a trace or a trial
never shares the worker's memory with a model kept for a lens.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from layertracer.progress import ProgressCallback
from layertracer.spec.jobs import LensRequest
from worker.runners import _allowed_roots, _spec_model, model_source, tuned_translators

_LOCK = threading.Lock()
_KEPT: dict[str, Any] = {}  # {"key": ..., "loaded": LoadedModel}: at most one model


def _folder_stamp(source: str) -> tuple:
    """(name, size, mtime_ns) of the files of a local model folder: a model saved again is loaded again."""
    folder = Path(source)
    if not folder.is_dir():
        return ()
    return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))


def forget() -> None:
    """Drop the kept model (before a job that needs the memory, and in tests)."""
    with _LOCK:
        _KEPT.clear()


def _loaded(source: str, *, device: str, dtype: str, trust: bool, allowed_roots: Optional[list[str]]):
    from layertracer.models.loading import load_model

    key = (source, device, dtype, trust, _folder_stamp(source))
    with _LOCK:
        if _KEPT.get("key") == key:
            return _KEPT["loaded"], True
        _KEPT.clear()  # the old model goes before the new one loads
    loaded = load_model(source, device=device, dtype=dtype, trust_remote_code=trust, allowed_roots=allowed_roots)
    with _LOCK:
        _KEPT.update(key=key, loaded=loaded)
    return loaded, False


def run_lens(spec: Mapping[str, Any], *, roots: Sequence[str | os.PathLike],
             progress: Optional[ProgressCallback] = None,
             lens_cache: Optional[str | os.PathLike] = None) -> dict[str, Any]:
    """The live lens of ``spec``'s prompt: {"model": source or {"source", "trust_remote_code"}, "prompt",
    "target"?, "lens"?: "logit" | "tuned", "device"?, "dtype"?} -> ``live_lens``'s dict plus
    ``"reused_model"`` (bool: the model was kept from an earlier lens job). The prompt's limits are the
    spec's (``LensRequest``); the tuned lens reads this model's translators in ``lens_cache`` as a
    trace does (``runners.tuned_translators``: a missing file says how to train one)."""
    from layertracer.live_lens import live_lens
    from layertracer.progress import report

    request = LensRequest.model_validate({"prompt": spec.get("prompt"), "target": spec.get("target"),
                                          "lens": spec.get("lens") or "logit"})
    source, trust = _spec_model(spec)
    parsed = model_source(source, roots)
    source = str(parsed)
    report(progress, "load", 0, 1)
    loaded, reused = _loaded(source, device=str(spec.get("device") or "auto"), dtype=str(spec.get("dtype") or "auto"),
                             trust=trust, allowed_roots=_allowed_roots(roots) if parsed.is_local else None)
    report(progress, "load", 1, 1)
    report(progress, "lens", 0, 1)
    translators = tuned_translators(loaded, request.lens, lens_cache)
    result = live_lens(loaded, request.prompt, request.target, translators)
    report(progress, "lens", 1, 1)
    return {**result, "reused_model": reused}
