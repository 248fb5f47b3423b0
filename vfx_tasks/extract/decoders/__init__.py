"""Video decoders behind one small interface: :func:`open_video` returns a :class:`Decoder`.

decord is the default (the reference features were made with it); PyAV is an optional
alternative (``pip install 'vfx_tasks[pyav]'``). Each backend is imported only when chosen.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, get_args

import numpy as np

from vfx_tasks.errors import ConfigurationError
from vfx_tasks.extract.decoders.probe import check_frame_size
from vfx_tasks.extract.video import VideoInfo, _check_file
from vfx_tasks.settings import DEFAULT_MAX_PIXELS

DecoderName = Literal["decord", "pyav"]
DECODERS: tuple[str, ...] = get_args(DecoderName)
#: The reference features were made with decord.
DEFAULT_DECODER: DecoderName = "decord"


class Decoder(Protocol):
    """An open video: what the container says, and the frames asked for, as uint8 RGB."""

    info: VideoInfo

    def read_frames(self, frame_indices: np.ndarray) -> np.ndarray:
        """``(len(frame_indices), H, W, 3)`` uint8 RGB for sorted, unique frame numbers.

        Raises:
            VideoError: the frames cannot be decoded.
        """
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Decoder: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def validate_decoder(decoder: str) -> DecoderName:
    """``decoder`` if it names a known backend, else a :class:`ConfigurationError`."""
    if decoder not in DECODERS:
        raise ConfigurationError(
            f"Invalid decoder ({decoder!r}). Supported values are {', '.join(DECODERS)}."
        )
    return decoder  # type: ignore[return-value]


def open_video(
    path: str | os.PathLike[str],
    *,
    decoder: DecoderName = "decord",
    num_threads: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Decoder:
    """Open ``path`` with the chosen backend; use the result as a context manager.

    Args:
        decoder: ``decord`` (default) or ``pyav``.
        num_threads: decoding threads; 0 lets the backend choose.
        max_pixels: most pixels a frame may have (0: any), checked before anything is decoded.

    Raises:
        VideoTooLargeError: its frames are larger than ``max_pixels``.
        VideoError: the file is missing, unreadable, empty or not a decodable video.
        ConfigurationError: an unknown decoder, or its package is not installed.
    """
    validate_decoder(decoder)
    _check_file(Path(path))  # missing, empty...: said plainly before the container is read
    check_frame_size(path, max_pixels=max_pixels)
    # Explicit dispatch with the import inside the branch: only the chosen backend is loaded.
    if decoder == "pyav":
        from vfx_tasks.extract.decoders.pyav import PyAVReader

        return PyAVReader(path, num_threads=num_threads)
    from vfx_tasks.extract.video import VideoReader

    return VideoReader(path, num_threads=num_threads)


__all__ = [
    "DECODERS", "DEFAULT_DECODER", "Decoder", "DecoderName", "VideoInfo", "open_video", "validate_decoder"
]
