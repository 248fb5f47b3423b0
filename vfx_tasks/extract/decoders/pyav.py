"""PyAV (FFmpeg) decoding of just the frames a batch needs: seek to the keyframe at or before
the first needed frame, decode forward, keep the needed frames.

Frame ``i`` is the ``i``-th frame in presentation order, as decord numbers them: the packets'
timestamps are read once at open (demuxing only, no decoding) and sorted.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from vfx_tasks.errors import ConfigurationError, VideoError
from vfx_tasks.extract.video import VideoInfo, _check_file, _first_line


def _import_av() -> Any:
    try:
        import av
    except ImportError as e:
        raise ConfigurationError(
            "The pyav decoder needs PyAV; install it with `pip install 'vfx_tasks[pyav]'` "
            "(or `pip install av`), or use decoder='decord'."
        ) from e
    return av


class PyAVReader:
    """A PyAV reader with the :class:`~vfx_tasks.extract.decoders.Decoder` interface."""

    def __init__(self, path: str | os.PathLike[str], *, num_threads: int = 0) -> None:
        self.path = Path(path)
        _check_file(self.path)
        av = self._av = _import_av()
        try:
            self._container = av.open(str(self.path))
            self._stream = self._container.streams.video[0]
            self._pts, self._keyframes = self._index_packets()
            self._stream.thread_type = "AUTO"
            self._stream.thread_count = num_threads
            height, width = self._stream.codec_context.height, self._stream.codec_context.width
            fps = float(self._stream.average_rate or self._stream.guessed_rate or 0)
        except (av.FFmpegError, IndexError) as e:
            self.close()
            raise VideoError(
                f"Cannot decode video {self.path}: {_first_line(e)}. The file is corrupt, truncated "
                "or not a video; re-encode it (e.g. `ffmpeg -i in -c:v libx264 out.mp4`) or remove it."
            ) from e
        if not self._pts:
            self.close()
            raise VideoError(f"Video {self.path} has no frames; re-encode or remove it.")
        self._index_of_pts = {pts: index for index, pts in enumerate(self._pts)}
        self._frames: Iterator[Any] | None = None  # the decoder's output, where the last read stopped
        self._position = -1  # the last frame taken from it
        self.info = VideoInfo(str(self.path), len(self._pts), fps, int(height), int(width))

    def _index_packets(self) -> tuple[list[int], list[int]]:
        """Presentation timestamps of all frames, sorted, and the frame numbers of keyframes."""
        entries = [
            (packet.pts, packet.is_keyframe)
            for packet in self._container.demux(self._stream)
            if packet.pts is not None and packet.size > 0
        ]
        entries.sort()
        self._container.seek(0)
        return [pts for pts, _ in entries], [i for i, (_, key) in enumerate(entries) if key] or [0]

    def read_frames(self, frame_indices: np.ndarray) -> np.ndarray:
        """Decode the given frames: ``(len(frame_indices), H, W, 3)`` uint8 RGB."""
        wanted = [int(index) for index in frame_indices]
        out = np.empty((len(wanted), self.info.height, self.info.width, 3), dtype=np.uint8)
        try:
            self._decode_into(wanted, out)
        except (self._av.FFmpegError, KeyError, ValueError) as e:
            self._frames = None
            raise VideoError(
                f"Decoding failed in video {self.path} (frames {wanted[0]}-{wanted[-1]} of "
                f"{self.info.num_frames}): {_first_line(e)}. The file is probably truncated or "
                "damaged; re-encode or remove it."
            ) from e
        return out

    def _decode_into(self, wanted: list[int], out: np.ndarray) -> None:
        for slot, target in enumerate(wanted):
            keyframe = self._keyframes[bisect.bisect_right(self._keyframes, target) - 1]
            # Decoding goes on from where the last call stopped (the next batch usually starts just
            # after it) unless the target is behind, or a keyframe lies between: then a seek.
            if self._frames is None or self._position >= target or keyframe > self._position + 1:
                self._container.seek(self._pts[keyframe], stream=self._stream, backward=True)
                self._frames, self._position = self._container.decode(self._stream), -1
            for frame in self._frames:
                self._position = self._index_of_pts[frame.pts]
                if (frame.width, frame.height) != (self.info.width, self.info.height):
                    # A stream may change size mid-way: never convert a frame larger than the one checked.
                    raise ValueError(f"frame {self._position} is {frame.width} x {frame.height}, not "
                                     f"{self.info.width} x {self.info.height} as the stream began")
                if self._position == target:
                    out[slot] = frame.to_ndarray(format="rgb24")
                    break
                if self._position > target:
                    raise ValueError(f"frame {target} never came (the decoder went on to {self._position})")
            else:
                self._frames = None
                raise ValueError(f"the stream ended before frame {target}")

    def close(self) -> None:
        container, self._container = getattr(self, "_container", None), None
        if container is not None:
            container.close()

    def __enter__(self) -> PyAVReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
