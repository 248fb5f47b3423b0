"""A video's frame size, read from its container before any frame is decoded.

A frame decodes to width x height x 3 bytes, and a batch of clips holds dozens of them: a 754 KB
file of 16000 x 16000 frames made one worker process grow to 24 GB. Both decoders therefore open
a video only once :func:`check_frame_size` has read its streams' sizes and found them within
``max_pixels``. Opening a file with decord (or PyAV, plainly) already decodes a frame to learn
about the stream, so the size is read by PyAV with frame decoding switched off (``skip_frame``):
only the container and the codec's headers are parsed.
"""

from __future__ import annotations

import os
from typing import Any

from vfx_tasks.errors import ConfigurationError, VideoError, VideoTooLargeError


def _import_av() -> Any:
    try:
        import av
    except ImportError as e:
        raise ConfigurationError(
            "Reading a video's frame size before decoding it needs PyAV; install it with "
            "`pip install 'vfx_tasks[pyav]'` (or `pip install av`)."
        ) from e
    return av


def frame_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` of the largest video stream in ``path``, decoding nothing; ``(0, 0)`` when
    the headers do not say.

    Raises:
        VideoError: the container cannot be read.
    """
    av = _import_av()
    try:
        with av.open(str(path), options={"skip_frame": "all"}) as container:
            sizes = [(s.codec_context.width, s.codec_context.height) for s in container.streams.video]
    except (av.FFmpegError, ValueError, OSError) as e:
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise VideoError(
            f"Cannot decode video {path}: {first_line}. The file is corrupt, truncated or not a video; "
            "re-encode it (e.g. `ffmpeg -i in -c:v libx264 out.mp4`) or remove it."
        ) from e
    return max(sizes, key=lambda size: size[0] * size[1], default=(0, 0))


def check_frame_size(path: str | os.PathLike[str], *, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` of the video, once it is at most ``max_pixels`` (0: no limit).

    Raises:
        VideoTooLargeError: its frames hold more pixels than ``max_pixels``.
        VideoError: the container cannot be read.
    """
    width, height = frame_size(path)
    if max_pixels and width * height > max_pixels:
        raise VideoTooLargeError(
            f"Video {path} has frames of {width} x {height} = {width * height:,} pixels, more than the "
            f"{max_pixels:,} allowed (VFX_MAX_PIXELS; 8K is 7680 x 4320 = 33,177,600): decoding it could "
            "exhaust the worker's memory. Downscale it (e.g. `ffmpeg -i in -vf scale=-2:1080 out.mp4`) "
            "or raise VFX_MAX_PIXELS on workers with the memory for it."
        )
    return width, height
