"""The API's side of the tuned lens: a ``lens=tuned`` trace is queued only when the service's cache
(``Settings.tuned_lens_cache_dir``) holds a translator file for the trace's model; otherwise a 409 that
says how to put one there. The file name comes from the model's fingerprint by the one rule of
``layertracer.spec.lens`` (a checked fingerprint: the name cannot leave the folder); the worker reads the
same file and checks the fingerprint inside it."""

from __future__ import annotations

from fastapi import HTTPException

from backend.db.models import Model
from backend.settings import Settings
from layertracer.errors import LayerTracerError
from layertracer.spec.lens import cached_file, train_hint


def require_tuned_lens(settings: Settings, model: Model) -> None:
    """Nothing when ``model``'s translator file is in the cache; else HTTPException(409), one line."""
    if not model.fingerprint:
        raise HTTPException(409, f"model {model.id!r} has no fingerprint yet (its inspection has not finished): "
                                 "the tuned lens is looked up by it; try again when the model is ready")
    try:
        path = cached_file(model.fingerprint, settings.tuned_lens_cache_dir)
    except LayerTracerError as exc:
        raise HTTPException(409, f"model {model.id!r}: {exc}, so no tuned lens can be looked up for it") from None
    if not path.is_file():
        raise HTTPException(409, f"no tuned lens for model {model.id!r} ({model.fingerprint}) in the service's cache: "
                                 f"train one on the service's machine with `{train_hint(model.source, path)}`")
