"""Choosing the torch device and the autocast precision.

torch is imported inside the functions: the precision vocabulary is also used by the CLIs,
which should start without loading torch.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Literal, get_args

from vfx_tasks.errors import ConfigurationError

Precision = Literal["fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

if TYPE_CHECKING:
    import torch


def resolve_device(device: str) -> torch.device:
    """Turn ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` into a usable :class:`torch.device`.

    Raises:
        ConfigurationError: the name is malformed or names a GPU this process cannot see.
    """
    import torch

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
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)
