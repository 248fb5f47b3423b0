"""Videos in object storage (``s3://bucket/prefix``, ``gs://...``): listed once, fetched by workers.

The same rules as a local folder (:class:`~vfx_tasks.sources.base.LocalFolderSource`): every
object below the prefix with a video extension, hidden names left out, the key below the prefix
without its extension as the relative id. Keys are anyone's text, so a key that would not make a
safe output path (``..``, a backslash, a control character) is left out as
:class:`~vfx_tasks.sources.base.Rejected`, as the Hub's names are.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any

from vfx_tasks.errors import ConfigurationError, UnsafePathError
from vfx_tasks.extract.video import VIDEO_EXTENSIONS
from vfx_tasks.sources.base import Rejected, VideoItem
from vfx_tasks.sources.hub_paths import safe_relative_id
from vfx_tasks.storage import join_url, list_objects, normalize_url

logger = logging.getLogger(__name__)


class ObjectStoreSource:
    """Every object with a video extension below ``url``, in sorted order, from one paged listing.

    Raises (from :meth:`iter_videos`):
        StorageAccessError: the bucket does not exist or these credentials cannot list it.
        StorageUnavailableError: the store cannot be reached (after the client's retries).
    """

    def __init__(self, url: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = normalize_url(url, what="--input_dir")
        self.storage_options = dict(storage_options or {})
        self.rejected: list[tuple[str, str]] = []
        self.listed_with: str | None = None

    def __repr__(self) -> str:
        return f"ObjectStoreSource({self.url!r})"

    def resolve_commit(self) -> None:
        """A prefix has no versions."""
        return None

    def iter_videos(self) -> Iterator[VideoItem]:
        seen: dict[str, str] = {}
        for name in list_objects(self.url, storage_options=self.storage_options):
            path = PurePosixPath(name)
            hidden = any(part.startswith(".") for part in path.parts)
            if hidden or path.suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            url = join_url(self.url, name)
            try:
                relative_id = safe_relative_id(name)
                normalize_url(url, what="object URL")  # what a worker will check it against
            except (UnsafePathError, ConfigurationError) as e:
                logger.warning("Leaving out %s: %s", url, e)
                self.rejected.append(Rejected(url, str(e)))
                continue
            if relative_id in seen:
                logger.warning("Skipping %s: %s already has the id %r", url, seen[relative_id], relative_id)
                continue
            seen[relative_id] = url
            yield VideoItem(relative_id=relative_id, path=url)
