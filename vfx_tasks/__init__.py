"""vfx_tasks: clip-level I3D and Video Swin features for many videos, on a Celery queue.

The extraction API is imported lazily, so that the command-line tools (which mostly talk to
Redis) start without loading torch and mmaction2.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vfx_tasks.errors import PermanentError, TransientError, VfxError

if TYPE_CHECKING:
    from vfx_tasks.extract.pipeline import FeatureExtractor, VideoFeatures, extract_features

__version__ = "0.1.0"

_LAZY = {"FeatureExtractor": "vfx_tasks.extract.pipeline", "VideoFeatures": "vfx_tasks.extract.pipeline",
         "extract_features": "vfx_tasks.extract.pipeline"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vfx_tasks' has no attribute {name!r}")


__all__ = [
    "FeatureExtractor",
    "PermanentError",
    "TransientError",
    "VfxError",
    "VideoFeatures",
    "__version__",
    "extract_features",
]
