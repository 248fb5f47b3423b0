"""Where videos come from: local folders, object storage and Hugging Face repositories (listing,
paths, fetching).

It may import :mod:`vfx_tasks.errors`, :mod:`vfx_tasks.extract.video` (for the video file
extensions) and :mod:`vfx_tasks.storage` (object listings and fetches);
:mod:`vfx_tasks.sources.hub` is the one module that talks to huggingface_hub.
"""

from vfx_tasks.sources.base import LocalFolderSource, VideoItem, VideoSource, normalize_relative_id

__all__ = ["LocalFolderSource", "VideoItem", "VideoSource", "normalize_relative_id"]
