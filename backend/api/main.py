"""The API's entry point for ASGI servers.

    uvicorn --factory backend.api.main:create_app      # the API alone (layertracer api does this)
    uvicorn backend.api.main:app                       # the same, app built on first access

Importing this module has no side effects: ``app`` (settings read, migrations applied) is built on
first access, so tools can import the module without touching a database.
"""

from __future__ import annotations

from typing import Any

from backend.api import create_app

__all__ = ["create_app", "app"]

_app = None


def __getattr__(name: str) -> Any:  # PEP 562: a lazily built module attribute
    global _app
    if name == "app":
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
