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
- ``ranges``: layer ranges as text (``0-7,12``); ``allocations``: which blocks a trial trains (presets,
  ``from-trace:PATH``, ranges); ``benchmarks``: ``ceval:DIR`` / ``cmmlu:DIR``; ``tasks``: the table
  of built-in tasks.
- ``jobs``: the typed job specs the API queues and the worker parses once (``parse_job_spec``), and
  the experiment fields the API's trial and experiment requests take.
- ``views``: the views derived from a trace result's JSON (summary, overview, the task x layer table).
- ``significance``: the one verdict rule of a comparison.
- ``uncertainty``: when a task particle counts as stable, and the wording of the particles' and the
  plan's bootstrap (computed by the engine's ``layertracer.uncertainty``).
- ``loading``: how a model is placed and loaded (device map, memory budget, attention, quantization).
- ``fields``: reading a declaration back (``number_bounds``, ``defaults``, ``validation_message``).
- ``jsonlines``: one JSON Lines record, parsed alike by task files and uploads.
"""

from layertracer.spec.sources import ModelSource, ModelSourceError, parse_model_source

__all__ = ["ModelSource", "ModelSourceError", "parse_model_source"]
