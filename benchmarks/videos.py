"""Generated test videos for the benchmarks: real H.264 (PyAV's bundled libx264) of moving gradients.

The content does not matter to the benchmarks, the frame size and codec do. ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


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
            channels = [(xs + 7 * index) % 256, (ys + 3 * index) % 256, np.full_like(xs, index % 256)]
            rgb = np.stack(channels, axis=-1).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    partial.rename(path)
    return path
