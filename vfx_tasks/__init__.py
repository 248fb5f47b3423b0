"""vfx_tasks: clip-level I3D and Video Swin features for many videos, on a Celery queue."""

from vfx_tasks.errors import PermanentError, TransientError, VfxError
from vfx_tasks.pipeline import FeatureExtractor, VideoFeatures, extract_features

__version__ = "0.1.0"

__all__ = [
    "FeatureExtractor",
    "PermanentError",
    "TransientError",
    "VfxError",
    "VideoFeatures",
    "__version__",
    "extract_features",
]
