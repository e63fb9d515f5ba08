"""The one rule for the precision of a training forward (``TrainConfig.autocast``), shared by the
single-process / DDP path (``loop.master_weights``) and FSDP (``sharded``)."""

from __future__ import annotations

from typing import Optional

import torch

LOW_PRECISION = (torch.bfloat16, torch.float16)


def forward_dtype(autocast: str, low_precision_weights: bool, device: torch.device) -> Optional[str]:
    """The dtype the forward computes in, or None for the weights' own (float32 master weights):
    "fp16" and "bf16" as asked; "auto" gives bf16 on CUDA or when the model holds bf16/fp16 weights;
    "off" gives None."""
    if autocast == "fp16":
        return "float16"
    if autocast == "bf16" or (autocast == "auto" and (low_precision_weights or device.type == "cuda")):
        return "bfloat16"
    return None
