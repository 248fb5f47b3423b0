"""Opening videos with decord and decoding just the frames a batch of clips needs."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from vfx_tasks.errors import VideoError

logger = logging.getLogger(__name__)

#: File extensions treated as videos when scanning folders (lower case, with the dot).
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp"}
)


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video."""

    path: str
    num_frames: int
    fps: float
    height: int
    width: int

    @property
    def duration_seconds(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


class VideoReader:
    """A decord reader that raises :class:`VideoError` with a useful message on bad input.

    Use as a context manager so the decoder's buffers are released promptly::

        with VideoReader(path) as video:
            frames_thwc = video.read_frames(np.array([0, 2, 4]))
    """

    def __init__(self, path: str | os.PathLike[str], *, num_threads: int = 0) -> None:
        self.path = Path(path)
        _check_file(self.path)
        # Imported here, not at the top: the CLI imports this module for VIDEO_EXTENSIONS only.
        import decord

        try:
            self._reader = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=num_threads)
            num_frames = len(self._reader)
            height, width = self._reader[0].shape[:2] if num_frames else (0, 0)
            fps = float(self._reader.get_avg_fps())
        except (decord.DECORDError, RuntimeError) as e:
            raise VideoError(
                f"Cannot decode video {self.path}: {_first_line(e)}. The file is corrupt, truncated "
                "or not a video; re-encode it (e.g. `ffmpeg -i in -c:v libx264 out.mp4`) or remove it."
            ) from e
        if num_frames <= 0:
            raise VideoError(f"Video {self.path} has no frames; re-encode or remove it.")
        self.info = VideoInfo(str(self.path), num_frames, fps, int(height), int(width))

    def read_frames(self, frame_indices: np.ndarray) -> np.ndarray:
        """Decode the given frames.

        Args:
            frame_indices: 1-D, sorted, unique frame numbers in ``[0, num_frames)``.

        Returns:
            ``(len(frame_indices), H, W, 3)`` uint8 RGB frames.
        """
        import decord

        try:
            return self._reader.get_batch(list(map(int, frame_indices))).asnumpy()
        except (decord.DECORDError, RuntimeError, IndexError) as e:
            raise VideoError(
                f"Decoding failed in video {self.path} (frames {int(frame_indices[0])}-"
                f"{int(frame_indices[-1])} of {self.info.num_frames}): {_first_line(e)}. The file is "
                "probably truncated or damaged; re-encode or remove it."
            ) from e

    def close(self) -> None:
        self._reader = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"Video {path} does not exist; check the path.")
    if not path.is_file():
        raise VideoError(f"Video path {path} is not a regular file.")
    if not os.access(path, os.R_OK):
        raise VideoError(f"Video {path} is not readable; check its permissions.")
    if path.stat().st_size == 0:
        raise VideoError(f"Video {path} is empty (0 bytes); the copy or download probably failed.")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
