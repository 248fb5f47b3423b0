"""Generated test videos for the benchmarks: moving gradients, real codecs.

The content does not matter to the benchmarks, the frame size and codec do. H.264 comes from
PyAV's bundled libx264 (``pip install -e '.[bench]'``); where PyAV is missing (the GPU machine's
kit does not carry it unless asked), :func:`write_video` falls back to OpenCV's MPEG-4 Part 2
encoder and says so, since that codec decodes faster than H.264 and flatters decode-bound figures.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
from multiprocessing.pool import AsyncResult, Pool
from pathlib import Path

import numpy as np

#: What :func:`write_video` writes, with PyAV and without it.
H264, MPEG4 = "h264 (libx264 preset fast, PyAV)", "mpeg4 part 2 (OpenCV mp4v; PyAV not installed)"


def _gradient_rgb(xs: np.ndarray, ys: np.ndarray, index: int) -> np.ndarray:
    channels = [(xs + 7 * index) % 256, (ys + 3 * index) % 256, np.full_like(xs, index % 256)]
    return np.stack(channels, axis=-1).astype(np.uint8)


def write_h264(
    path: Path, *, width: int, height: int, num_frames: int, fps: int = 25, preset: str = "fast"
) -> Path:
    """Write ``path`` (kept if already there; written under a temporary name, then renamed)."""
    import av

    if path.is_file():
        return path
    partial = path.with_suffix(".partial.mp4")
    ys, xs = np.mgrid[0:height, 0:width]
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": preset}
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(_gradient_rgb(xs, ys, index), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    partial.rename(path)
    return path


def write_mpeg4(path: Path, *, width: int, height: int, num_frames: int, fps: int = 25) -> Path:
    """Like :func:`write_h264`, with OpenCV's MPEG-4 Part 2 encoder (no PyAV needed)."""
    import cv2

    if path.is_file():
        return path
    partial = path.with_suffix(".partial.mp4")
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MPEG-4 video to {partial}; install PyAV (pip install av).")
    ys, xs = np.mgrid[0:height, 0:width]
    for index in range(num_frames):
        writer.write(_gradient_rgb(xs, ys, index)[..., ::-1].copy())  # OpenCV takes BGR
    writer.release()
    partial.rename(path)
    return path


def video_codec() -> str:
    """The codec :func:`write_video` uses here (:data:`H264` or :data:`MPEG4`)."""
    return H264 if importlib.util.find_spec("av") is not None else MPEG4


def write_video(path: Path, *, width: int, height: int, num_frames: int, fps: int = 25) -> Path:
    """H.264 where PyAV is installed, else MPEG-4 Part 2 (see :func:`video_codec`)."""
    writer = write_h264 if video_codec() == H264 else write_mpeg4
    return writer(path, width=width, height=height, num_frames=num_frames, fps=fps)


def _write_one(job: tuple[Path, int, int, int, int]) -> Path:
    path, width, height, num_frames, fps = job
    return write_video(path, width=width, height=height, num_frames=num_frames, fps=fps)


def write_videos_async(
    paths: list[Path], *, width: int, height: int, num_frames: int, fps: int = 25, processes: int = 1
) -> tuple[Pool, AsyncResult[list[Path]]]:
    """Start writing ``paths`` in ``processes`` fresh processes; ``(pool, result)``.

    Returns at once, so that other work (a test run) overlaps the encoding: call
    ``result.get(timeout)`` for the paths, then ``pool.close()`` and ``pool.join()``. The processes
    are spawned, not forked, so that no CUDA state of the caller is inherited.
    """
    pool = multiprocessing.get_context("spawn").Pool(max(1, processes))
    jobs = [(path, width, height, num_frames, fps) for path in paths]
    return pool, pool.map_async(_write_one, jobs, chunksize=1)
