"""All configuration, resolved once: explicit argument, then ``VFX_*`` variable, then default.

This is the only module that reads ``os.environ``. Everything else receives a
:class:`Settings` (or single values taken from one) as an argument.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from vfx_tasks.errors import ConfigurationError

_PACKAGE_DIR = Path(__file__).resolve().parent


def default_pretrained_dir() -> Path:
    """``pretrained/`` of the source checkout when running from one, else a per-user folder.

    Never relative to the current directory, so a worker finds its weights wherever it starts.
    """
    checkout = _PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "pretrained").is_dir():
        return checkout / "pretrained"
    return Path.home() / ".cache" / "vfx_tasks" / "pretrained"


@dataclass(frozen=True)
class Settings:
    """Process-wide settings. Field ``x`` is read from ``VFX_X`` when not given explicitly."""

    #: Folder holding the ``.pth`` checkpoints under their official file names.
    pretrained_dir: Path
    #: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    device: str = "auto"
    #: ``fp32``, ``fp16`` or ``bf16`` (autocast for the backbone; features are always float32).
    precision: str = "fp32"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``overrides`` (``None`` values ignored), ``VFX_*`` variables and defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {"pretrained_dir": default_pretrained_dir()}
        for f in fields(cls):
            env_value = environ.get(f"VFX_{f.name.upper()}")
            if env_value not in (None, ""):
                values[f.name] = env_value
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigurationError(f"Unknown settings: {', '.join(sorted(unknown))}.")
        values["pretrained_dir"] = Path(values["pretrained_dir"]).expanduser()
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        """Return a copy with the non-``None`` overrides applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
