"""The job specs the API queues and the worker runs, typed once: what a job of each kind carries.

The API builds them from its requests (``backend/api``), the database stores their JSON
(``jobs.spec``), and the worker parses the stored JSON with these models once, when it claims the job
(``parse_job_spec``): a malformed spec ends the job with one line, before any model is loaded. The
experiment's fields (those a trial or experiment request takes besides its allocations) are declared
here once and shared with the API's request models.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

from layertracer.errors import LayerTracerError
from layertracer.spec.allocations import check_allocation
from layertracer.spec.benchmarks import BENCHMARK_FORMS, BENCHMARK_PATTERN, check_benchmark
from layertracer.spec.lens import LensKind
from layertracer.spec.loading import PlacementSpec
from layertracer.spec.perturbations import parse_perturbation
from layertracer.spec.trace_options import SEED_MAX
from layertracer.spec.training import TrainingOptionsSpec

DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"
DEVICE_RE = re.compile(DEVICE_PATTERN)
# The workers' queues: inspect and trace jobs, trials and experiments in one process, and those asking
# for several processes (only a worker with that many GPUs can run them: ``backend.jobs.queue_for``).
MULTI_PROCESS_QUEUE = "train-multi"
ALL_QUEUES = ("trace", "train", MULTI_PROCESS_QUEUE)
# The most processes one job may ask for: the GPUs of one host (8 on most, 16 on a few).
MAX_PROCESSES = 16
# One element of a list of names (task sets, perturbations): never empty.
Item = Annotated[str, Field(min_length=1, max_length=200)]
ModelId = Annotated[str, Field(min_length=1, max_length=64)]


class JobSpecError(LayerTracerError, ValueError):
    """A stored job spec does not have its kind's shape; the message is one line."""


def check_perturbation(text: str) -> str:
    """Validate a perturbation by the engine's grammar (``layertracer.spec.perturbations``); returns it
    stripped. Raises ValueError (PerturbationError is one) with a one-line reason."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a perturbation is empty")
    parse_perturbation(text)
    return text.strip()


class ExperimentFields(TrainingOptionsSpec):
    """What a trial or an experiment runs, besides its allocations: the model, the data, the seeds, the
    benchmarks, the traces before and after, the device (the engine's ExperimentSpec, by a model id)."""

    model_id: str = Field(min_length=1, max_length=64)
    name: Optional[str] = Field(default=None, max_length=200)
    corpus: str = Field(min_length=1, max_length=1000, description="text/JSONL/parquet file or folder under the roots, or a hub dataset "
                        "hf:org/name[@revision][:split]")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, max_length=50)
    # The patterns are documented in the schema and enforced by the validators below (their messages
    # say how to write the value; pydantic's would only quote the pattern).
    benchmarks: list[Annotated[str, Field(max_length=1100, json_schema_extra={"pattern": BENCHMARK_PATTERN})]] = Field(
        default_factory=list, max_length=10, description=BENCHMARK_FORMS)
    embeddings: Optional[StrictBool] = None
    head: Optional[StrictBool] = None
    final_norm: Optional[StrictBool] = None
    trace_tasks: str = Field(default="", max_length=2000, description="built-in task names, comma-separated, or all")
    trace_perturbations: list[Item] = Field(default_factory=lambda: ["skip"], min_length=1, max_length=10)
    device: str = Field(default="auto", max_length=20, json_schema_extra={"pattern": DEVICE_RE.pattern})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    labels: dict[str, str] = Field(default_factory=dict, max_length=10,
                                   description="display names of allocations in the results table")

    processes: int = Field(default=1, ge=1, le=MAX_PROCESSES, description=(
        "processes on one worker host, each with its own GPU on CUDA: more than 1 and the worker starts "
        "them with torchrun (data-parallel, or sharded with strategy fsdp)"))

    @model_validator(mode="after")
    def _process_group(self) -> "ExperimentFields":
        if self.strategy == "fsdp" and self.processes < 2:
            raise ValueError("strategy fsdp shards the model over several processes: set processes to 2 or "
                             "more (one per GPU)")
        placed = self.placement.device_map or self.placement.max_memory or self.placement.load_in
        if self.processes > 1 and placed:
            raise ValueError("a placement (device_map, max_memory, load_in) spreads one process's model; with "
                             "processes > 1 every process holds its own copy (ddp) or shard (fsdp): leave it out")
        return self

    @field_validator("labels")
    @classmethod
    def _labels(cls, values: dict[str, str]) -> dict[str, str]:
        if any(len(k) > 1000 or not v or len(v) > 200 for k, v in values.items()):
            raise ValueError("labels: allocation -> a name of 1-200 characters")
        return values

    def _check_labels(self, allocations: list[str]) -> None:
        unknown = sorted(set(self.labels) - set(allocations))
        if unknown:
            raise ValueError(f"labels name allocation(s) not run: {', '.join(unknown)}")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, values: list[int]) -> list[int]:
        if any(not 0 <= v <= SEED_MAX for v in values):
            raise ValueError(f"seeds must be in [0, {SEED_MAX}]")
        if len(set(values)) != len(values):
            raise ValueError("a seed is listed twice")
        return values

    @field_validator("trace_perturbations")
    @classmethod
    def _trace_perturbations(cls, values: list[str]) -> list[str]:
        return [check_perturbation(v) for v in values]

    @field_validator("benchmarks")
    @classmethod
    def _benchmarks(cls, values: list[str]) -> list[str]:
        for v in values:
            check_benchmark(v)
        return values

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not DEVICE_RE.match(value):
            raise ValueError(f"bad device {value!r}: use auto, cpu, mps, cuda or cuda:N")
        return value

    @field_validator("trace_tasks")
    @classmethod
    def _trace_tasks(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        if any(not re.match(r"^[A-Za-z0-9_.-]+$", n) for n in names):
            raise ValueError("trace_tasks: comma-separated task names")
        return ",".join(names)


class InspectJobSpec(BaseModel):
    """``inspect``: read a registered model's config and weights' headers."""

    model_config = ConfigDict(extra="forbid")
    model_id: ModelId


class TraceJobSpec(BaseModel):
    """``trace``: the task-set names resolved by the API, the perturbations (the first is the primary),
    the engine's TraceOptions fields (``options``: the API sends those of ``TraceOptionsSpec``; the
    worker checks them against the engine's TraceOptions, which has a few more), and ``limit`` /
    ``shots`` of the built-in prompts."""

    model_config = ConfigDict(extra="forbid")
    model_id: ModelId
    tasks: list[Item] = Field(min_length=1)
    perturbations: list[Item] = Field(default_factory=lambda: ["skip"], min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)
    limit: Optional[int] = Field(default=None, ge=1)
    shots: int = Field(default=3, ge=0)
    placement: PlacementSpec = Field(default_factory=PlacementSpec)

    @field_validator("perturbations")
    @classmethod
    def _perturbations(cls, values: list[str]) -> list[str]:
        return [check_perturbation(v) for v in values]


class ExperimentJobSpec(ExperimentFields):
    """``experiment``: a trial (one allocation) or an experiment (several), each trained with every seed."""

    kind: Literal["trial", "experiment"] = "experiment"
    allocations: list[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(min_length=1)

    @field_validator("allocations")
    @classmethod
    def _allocations(cls, values: list[str]) -> list[str]:
        return [check_allocation(v) for v in values]


# The live lens (``lens`` jobs): one typed prompt's layer x position logit lens. Its prompt is bounded
# here once: in characters (the API and the worker check it with the spec) and in tokens (the engine
# checks it once tokenized, ``layertracer.live_lens``): an L x T figure stays readable and fast.
LENS_MAX_PROMPT_CHARS = 2000
LENS_MAX_TOKENS = 256
LENS_MAX_TARGET_CHARS = 200


class LensRequest(BaseModel):
    """What a person types for a live lens: the prompt and, optionally, the answer whose probability
    colours the grid (scored by its first token in context, as a trace scores a task's target)."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=LENS_MAX_PROMPT_CHARS,
                        description=f"the prompt, at most {LENS_MAX_PROMPT_CHARS} characters and {LENS_MAX_TOKENS} tokens")
    target: Optional[str] = Field(default=None, max_length=LENS_MAX_TARGET_CHARS,
                                  description="the expected answer (optional): its first token's probability is shown")
    lens: LensKind = Field(default="logit", description=(
        "the logit lens, or the tuned lens (the translators of the model in the service's cache, as a trace "
        "with lens tuned reads them)"))

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt is empty")
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, value: Optional[str]) -> Optional[str]:
        return value if value is not None and value.strip() else None


class LensJobSpec(LensRequest):
    """``lens``: the live logit lens of one prompt on a registered model (the trace's own, by the API)."""

    model_id: ModelId


JobSpec = Union[InspectJobSpec, TraceJobSpec, ExperimentJobSpec, LensJobSpec]
JOB_SPECS: dict[str, type[BaseModel]] = {"inspect": InspectJobSpec, "trace": TraceJobSpec,
                                         "experiment": ExperimentJobSpec, "lens": LensJobSpec}


def parse_job_spec(kind: str, data: Any) -> JobSpec:
    """A stored job spec (JSON) of a job of ``kind`` -> its typed spec; JobSpecError with one line."""
    model = JOB_SPECS.get(kind)
    if model is None:
        raise JobSpecError(f"unknown job kind {kind!r}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", exc)).removeprefix("Value error, ")
        raise JobSpecError(f"the {kind} job's spec is not valid: {where + ': ' if where else ''}{message}") from None
