"""LayerTracer's FastAPI service: versioned REST API, database models and migrations.

Never imports torch or the engine: jobs are sent to workers by task name (see ``worker``).
"""

from importlib import metadata as _metadata

try:  # the installed distribution's version (no engine import)
    __version__ = _metadata.version("layertracer")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0"
