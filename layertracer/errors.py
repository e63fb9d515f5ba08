"""User-facing errors: each carries a one-line message the CLI prints without a traceback."""


class LayerTracerError(Exception):
    """A problem with the user's input (model, task file, options), not a bug in LayerTracer."""


class ModelLoadError(LayerTracerError):
    """The model path or id could not be loaded as a causal LM."""


class UnsupportedArchitectureError(LayerTracerError):
    """Neither the adapter table nor generic discovery found the blocks, final norm and head."""


class TaskFileError(LayerTracerError):
    """A task file is missing, empty or malformed; the message names the file and line."""


class PromptError(LayerTracerError):
    """A prompt or target cannot be scored (target tokenizes to nothing, prompt too long)."""
