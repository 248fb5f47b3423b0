"""Where videos come from. Each source yields :class:`VideoItem` s: local folders here, Hugging Face
dataset repositories in :mod:`vfx_tasks.sources.hub_dataset`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from vfx_tasks.errors import ConfigurationError
from vfx_tasks.extract.video import VIDEO_EXTENSIONS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoItem:
    """One video to process.

    ``relative_id`` is ``"<relative_dir>/<video_id>"`` (POSIX separators; just ``"<video_id>"`` at
    the top level): it names the output file and the line in a ``--check_progress`` file. ``path``
    is a local path or an ``hf://datasets/...`` location the worker fetches. ``labels`` (JSON values)
    travel with the task and are written beside the features.
    """

    relative_id: str
    path: str
    labels: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def video_id(self) -> str:
        return self.relative_id.rsplit("/", 1)[-1]


class Rejected(NamedTuple):
    """A remote file left out because its name is unsafe as an output path, and why.

    Listing helpers return these instead of raising, so that one bad name skips one file; the
    source keeps them in its ``rejected`` list (a ``Rejected`` is a ``(path, reason)`` tuple).
    """

    path: str
    reason: str


class VideoSource(Protocol):
    """Anything that lists videos.

    ``rejected`` and ``listed_with`` are filled in while :meth:`iter_videos` runs.
    """

    #: ``(path, reason)`` of the files left out because their names are unsafe as output paths.
    rejected: list[tuple[str, str]]
    #: How the videos were listed, where a source has several ways (the Hub); ``None`` otherwise.
    listed_with: str | None

    def iter_videos(self) -> Iterator[VideoItem]:
        """Yield the videos in a stable order."""
        ...

    def resolve_commit(self) -> str | None:
        """The version of the source the listing is pinned to (a Hub commit); ``None`` if it has none."""
        ...


class LocalFolderSource:
    """Every file with a video extension under ``root``, recursively, in sorted order."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise ConfigurationError(f"Input folder {str(root)!r} does not exist or is not a folder.")
        # Every file name under a folder is a safe output path, and there is one way to list them.
        self.rejected: list[tuple[str, str]] = []
        self.listed_with: str | None = None

    def __repr__(self) -> str:
        return f"LocalFolderSource({str(self.root)!r})"

    def resolve_commit(self) -> None:
        """A folder has no versions."""
        return None

    def iter_videos(self) -> Iterator[VideoItem]:
        seen: dict[str, Path] = {}
        # Symbolic links to folders are followed (datasets are often assembled from links), each
        # folder once: a link back up the tree would otherwise list the same videos again and
        # again under ever longer ids, until the path is too long.
        visited: set[tuple[int, int]] = set()
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            folder = os.stat(dirpath)
            if (folder.st_dev, folder.st_ino) in visited:
                logger.warning("Skipping %s: a link to a folder already listed", dirpath)
                dirnames[:] = []
                continue
            visited.add((folder.st_dev, folder.st_ino))
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath, name)
                if name.startswith(".") or path.suffix.lower() not in VIDEO_EXTENSIONS:
                    continue
                relative_id = path.relative_to(self.root).with_suffix("").as_posix()
                if relative_id in seen:
                    # Same stem, two containers: both would write the same output file.
                    logger.warning(
                        "Skipping %s: %s already has the id %r", path, seen[relative_id], relative_id
                    )
                    continue
                seen[relative_id] = path
                yield VideoItem(relative_id=relative_id, path=str(path))


def normalize_relative_id(line: str) -> str:
    """Canonical form of a ``--check_progress`` line: POSIX separators, no leading ``./`` or slashes."""
    text = line.strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text.strip("/")
