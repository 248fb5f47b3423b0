"""Choosing the torch device and the autocast precision."""

from __future__ import annotations

import contextlib
import re
from typing import Literal, get_args

import torch

from vfx_tasks.errors import ConfigurationError

Precision = Literal["fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """Turn ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` into a usable :class:`torch.device`.

    Raises:
        ConfigurationError: the name is malformed or names a GPU this process cannot see.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ConfigurationError(
            f"Invalid device ({device!r}). Supported values are auto, cpu, cuda, cuda:N."
        )
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigurationError(
                f"Device {device!r} requested but CUDA is not available here; use --device cpu "
                "or install a CUDA build of torch."
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ConfigurationError(
                f"Device {device!r} requested but only {count} GPU(s) are visible "
                "(CUDA_VISIBLE_DEVICES may hide the others)."
            )
    return resolved


def validate_precision(precision: str) -> Precision:
    if precision not in PRECISIONS:
        raise ConfigurationError(
            f"Invalid precision ({precision!r}). Supported values are {', '.join(PRECISIONS)}."
        )
    return precision  # type: ignore[return-value]


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager[object]:
    """Autocast context for ``precision`` on ``device``; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])
