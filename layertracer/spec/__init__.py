"""The torch-free part of the engine: the rules that the API, the forms, the CLI and the workers share.

``backend`` and ``frontend`` may import this package and nothing else of ``layertracer``; importing
it loads neither torch, transformers nor numpy (tests/test_layering.py checks both). A rule (what a
model source is, a limit, a default) is declared here once and every part asks it.

Modules:
- ``sources``: model sources, a local folder or a hub repo id with an optional revision.
- ``trace_options``: the options of a trace, their defaults and limits (``TraceOptionsSpec``): the
  API's request model, the New trace form's input limits, ``layertracer trace``'s defaults and ranges,
  and the engine's ``TraceOptions`` defaults and checks.
- ``training``: the hyper-parameters and evaluation settings of trials and experiments
  (``TrainingOptionsSpec``): the API's trial/experiment fields, the form's limits, the CLI's defaults
  and ranges, and the engine's ``ExperimentSpec`` / ``TrainConfig`` defaults and checks.
- ``perturbations``: the perturbation grammar (``parse_perturbation``), shared by all four.
- ``loading``: how a model is placed and loaded (device map, memory budget, attention, quantization).
- ``fields``: reading a declaration back (``number_bounds``, ``defaults``, ``validation_message``).
- ``jsonlines``: one JSON Lines record, parsed alike by task files and uploads.
"""

from layertracer.spec.sources import ModelSource, ModelSourceError, parse_model_source

__all__ = ["ModelSource", "ModelSourceError", "parse_model_source"]
