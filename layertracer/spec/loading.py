"""How a model is loaded, declared once: device, dtype, big-model placement (accelerate's
``device_map`` / ``max_memory`` / disk offload), the attention kernel and 8-/4-bit quantization.

The grammar of the texts users type:
- ``device_map``: ``auto``, ``balanced``, ``balanced_low_0``, ``sequential`` (accelerate's strategies)
  or the path of a JSON file mapping module names to devices (``{"model.layers.0": 0, ...}``);
- ``max_memory``: ``0=70GiB,1=70GiB,cpu=200GiB`` (a device index, ``cpu`` or ``disk``, and a size);
- ``load_in``: ``8bit`` or ``4bit`` (bitsandbytes, CUDA only).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from layertracer.errors import LayerTracerError

DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flex_attention")
LOAD_IN = ("8bit", "4bit")
DTYPES = ("auto", "float32", "bfloat16", "float16")
_SIZE_RE = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)
_DEVICE_RE = re.compile(r"^(\d+|cpu|disk|mps|cuda:\d+)$")


class LoadOptionError(LayerTracerError, ValueError):
    """A device map, memory budget or quantization that cannot be used; the message is one line."""


def parse_device_map(text: Optional[str]) -> Union[None, str, dict[str, Union[int, str]]]:
    """None, a strategy name, or the module -> device dict of a JSON file."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    if text in DEVICE_MAP_STRATEGIES:
        return text
    path = Path(text).expanduser()
    if not path.is_file():
        raise LoadOptionError(f"device map {text!r} is neither one of {', '.join(DEVICE_MAP_STRATEGIES)} nor a JSON file")
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise LoadOptionError(f"device map file {text!r} is not valid JSON ({exc})") from None
    if not isinstance(mapping, dict) or not mapping:
        raise LoadOptionError(f"device map file {text!r} must hold an object of module name -> device")
    for module, device in mapping.items():
        if not isinstance(device, (int, str)) or isinstance(device, bool) or not _DEVICE_RE.match(str(device)):
            raise LoadOptionError(f"device map file {text!r}: {module!r} -> {device!r} is not a device (0, 1, cpu, disk)")
    return {str(k): v for k, v in mapping.items()}


def parse_max_memory(text: Optional[str]) -> Optional[dict[Union[int, str], str]]:
    """``0=70GiB,cpu=200GiB`` -> {0: "70GiB", "cpu": "200GiB"}; None when empty."""
    if text is None or not str(text).strip():
        return None
    budget: dict[Union[int, str], str] = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        device, sep, size = (s.strip() for s in part.partition("="))
        if not sep or not _DEVICE_RE.match(device) or device.startswith("cuda:"):
            raise LoadOptionError(f"max memory {part!r}: write DEVICE=SIZE with a GPU index, cpu or disk (e.g. 0=70GiB,cpu=200GiB)")
        if not _SIZE_RE.match(size):
            raise LoadOptionError(f"max memory {part!r}: {size!r} is not a size such as 70GiB or 500MB")
        key: Union[int, str] = int(device) if device.isdigit() else device
        if key in budget:
            raise LoadOptionError(f"max memory names {device!r} twice")
        budget[key] = size.replace(" ", "")
    return budget or None


def check_load_in(value: Optional[str]) -> Optional[Literal["8bit", "4bit"]]:
    if value is None or value == "":
        return None
    if value not in LOAD_IN:
        raise LoadOptionError(f"--load-in takes {' or '.join(LOAD_IN)}, not {value!r}")
    return value  # type: ignore[return-value]


def check_attn_implementation(value: Optional[str]) -> Optional[str]:
    if value is None or value == "":
        return None
    if value not in ATTN_IMPLEMENTATIONS:
        raise LoadOptionError(f"unknown attention implementation {value!r}; use one of {', '.join(ATTN_IMPLEMENTATIONS)}")
    return value


class PlacementSpec(BaseModel):
    """How a service job places a model larger than one device (the API's ``placement`` field of a trace,
    trial or experiment; the worker passes it to the engine's ``load_model``). A device map is one of
    accelerate's strategies here: a module -> device file is a path on the worker, which the CLI takes
    (``--device-map FILE.json``) and the service does not. Weights that fit nowhere else go to the job's
    own folder on the worker (disk offload)."""

    model_config = ConfigDict(extra="forbid")

    device_map: Optional[Literal[DEVICE_MAP_STRATEGIES]] = Field(
        default=None, description="accelerate's placement: " + ", ".join(DEVICE_MAP_STRATEGIES))
    max_memory: Optional[str] = Field(default=None, max_length=200,
                                      description="memory per device for the placement, e.g. 0=70GiB,cpu=200GiB")
    attn_implementation: Optional[Literal[ATTN_IMPLEMENTATIONS]] = Field(default=None, description="the attention kernel")
    load_in: Optional[Literal[LOAD_IN]] = Field(default=None, description="8bit or 4bit quantization (CUDA only)")

    @field_validator("max_memory")
    @classmethod
    def _max_memory(cls, value: Optional[str]) -> Optional[str]:
        if value is None or not value.strip():
            return None
        parse_max_memory(value)
        return value.strip()

    def load_kwargs(self, offload_folder: Optional[str] = None) -> dict:
        """``load_model``'s keyword arguments (``offload_folder`` only where a placement can use it)."""
        return {"device_map": self.device_map, "max_memory": self.max_memory,
                "offload_folder": offload_folder if (self.device_map or self.max_memory) else None,
                "attn_implementation": self.attn_implementation, "load_in": self.load_in}
