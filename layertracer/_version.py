"""The one version string of LayerTracer (pyproject.toml reads it; so do the engine and the service)."""

__version__ = "0.1.0"
