"""One inference loop per model: full batches of clip-crops from every video in flight.

:meth:`FeatureExtractor.extract` batches one video's own clips, so the last batch of every video
is short and one slow decoder leaves the device waiting. A :class:`BatchingLoop` turns this
around: any number of threads call :meth:`BatchingLoop.extract`, one video each. Each thread is
a *decoder*: it decodes its video a few clips at a time (:data:`CLIPS_PER_PIECE`), transforms
them on the model's device and hands the clip-crops to the loop. The loop's thread (one per
concurrent forward: one on a GPU) runs the backbone on batches of ``batch_clip_crops``
clip-crops cut from whatever is waiting, whichever videos they come from, and writes each result
row back to its video. The caller's ``extract``
returns once its video's last clip-crop is done.

When does a batch leave short? Only when waiting cannot fill it: every video in flight has
handed over all its clips, or nothing has arrived for ``stall_seconds`` (a decoder stuck on a
damaged file must not hold the others' results back).

Memory is bounded: a decoder waits while ``max_pending_clip_crops`` clip-crops are queued
(two batches by default), and holds at most one piece of its own.

Features equal :meth:`FeatureExtractor.extract`'s up to the last bits a different batch
composition can move (``tests/extract/test_batching.py`` holds them within rel 1e-5).
"""

# long: the decoders' side and the forwards' side share one lock, one condition and one queue;
# their invariants (what is pending, who is still decoding, when a batch may leave) read together.

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from vfx_tasks.errors import ConfigurationError, DeviceOutOfMemoryError, TaskTimeoutError
from vfx_tasks.extract.clips import DecodedClips, decode_clips, transform_clips
from vfx_tasks.extract.crops import CropType, num_crops
from vfx_tasks.extract.decoders import DecoderName, VideoInfo, open_video
from vfx_tasks.extract.pipeline import FeatureExtractor, VideoFeatures, check_options
from vfx_tasks.extract.sampling import ClipSampling, batch_slices

logger = logging.getLogger(__name__)

#: Clips a decoder decodes and hands over at a time: small enough that batches fill smoothly
#: from many videos and a decoder holds little memory (4 clips of 5-crop float32 are 380 MB),
#: large enough that each hand-over is cheap.
CLIPS_PER_PIECE = 4

#: A short batch leaves after this long without new clip-crops, though decoders are still busy.
STALL_SECONDS = 10.0

#: Clips per forward on a CPU, whatever ``batch_size`` asks: there the backbone is the limit and
#: small forwards run faster per clip (I3D on 2 cores: 1.94 clips/s in forwards of 2, 1.77 in
#: forwards of 16), two of them side by side faster still (see docs/throughput.md).
CPU_CLIPS_PER_FORWARD = 2


def loop_shape(
    device: torch.device, *, batch_size: int, crop_type: CropType, decoders: int
) -> tuple[int, int]:
    """``(clip-crops per forward, inference threads)`` of a loop serving ``batch_size``-clip jobs.

    On a GPU, ``batch_size`` clips of every crop per forward, one forward at a time: full batches
    are what keeps it busy. On a CPU, :data:`CPU_CLIPS_PER_FORWARD` clips per forward and, with
    several decoders, two forwards side by side.
    """
    clips = batch_size if device.type == "cuda" else min(batch_size, CPU_CLIPS_PER_FORWARD)
    threads = 1 if device.type == "cuda" else min(2, max(1, decoders))
    return clips * num_crops(crop_type), threads


@dataclass
class BatchStats:
    """What the loop has run so far: forwards, clip-crops, and how full its batches were."""

    forwards: int = 0
    clip_crops: int = 0
    capacity: int = 0
    #: Forwards whose batch held clip-crops of more than one video.
    shared_forwards: int = 0

    @property
    def batch_fill(self) -> float:
        """Clip-crops run over the clip-crops the forwards could have held (0 before any)."""
        return self.clip_crops / (self.forwards * self.capacity) if self.forwards else 0.0


@dataclass(eq=False)
class _Video:
    """One video in flight: its result array and how much of it is still to come."""

    features: np.ndarray | None = None  # (num_clips, n_crops, D) float32, once the video is open
    submitting: bool = True
    outstanding: int = 0  # clip-crops handed over, not yet computed
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def rows(self) -> np.ndarray:
        assert self.features is not None
        return self.features.reshape(-1, self.features.shape[-1])


@dataclass
class _Piece:
    """Consecutive clip-crops of one video, ready for the backbone: ``(k, 3, T, h, w)``."""

    video: _Video
    first_row: int
    inputs: torch.Tensor

    def __len__(self) -> int:
        return self.inputs.shape[0]


class BatchingLoop:
    """Backbone thread(s) batching clip-crops across the videos of every calling thread.

    Args:
        extractor: the loaded model and its preprocessing.
        batch_clip_crops: clip-crops per forward (a ``batch_size`` of 16 clips in 5-crop is 80).
        max_pending_clip_crops: decoders wait while this many are queued (default two batches).
        decoders: at most this many calling threads decode at once (the others wait their turn,
            registered, so that the loop knows more is coming); 0: no limit. Run more videos in
            flight than decoders, or a decoder waiting for its own results leaves a core idle.
        inference_threads: threads running forwards, each on its own batch. One keeps a GPU
            busy; on a CPU two forwards side by side use its cores better than one.
        stall_seconds: a short batch leaves after this long without new work.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        *,
        batch_clip_crops: int,
        max_pending_clip_crops: int | None = None,
        decoders: int = 0,
        inference_threads: int = 1,
        stall_seconds: float = STALL_SECONDS,
    ) -> None:
        if type(batch_clip_crops) is not int or batch_clip_crops < 1:
            raise ConfigurationError(f"batch_clip_crops must be an integer >= 1, not {batch_clip_crops!r}.")
        self.extractor = extractor
        self.batch_clip_crops = batch_clip_crops
        self.max_pending_clip_crops = max(batch_clip_crops, max_pending_clip_crops or 2 * batch_clip_crops)
        self.stall_seconds = stall_seconds
        self.decoders = decoders
        self.inference_threads = max(1, inference_threads)
        self._decoder_slots: threading.Semaphore | contextlib.nullcontext[None] = (
            threading.Semaphore(decoders) if decoders else contextlib.nullcontext()
        )
        self.stats = BatchStats(capacity=batch_clip_crops)
        self._pending: deque[_Piece] = deque()
        self._pending_clip_crops = 0
        self._videos: set[_Video] = set()
        self._last_arrival = time.monotonic()
        self._changed = threading.Condition()
        self._closed = False
        self._threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        return (
            f"BatchingLoop({self.extractor.spec.name}, batch_clip_crops={self.batch_clip_crops}, "
            f"in flight={len(self._videos)})"
        )

    def extract(
        self,
        video_path: str | os.PathLike[str],
        *,
        crop_type: CropType = "5-crop",
        num_clips_per_video: int = -1,
        clip_sampling: ClipSampling = "sequential",
        decoder: DecoderName = "decord",
        decoder_threads: int = 0,
        deadline: float | None = None,
    ) -> VideoFeatures:
        """Decode one video in the calling thread and return its features once the loop ran them.

        ``decoder_threads`` is the decoder's own thread count (0: the backend's default);
        ``deadline`` a :func:`time.monotonic` time after which the video is given up with a
        :class:`TaskTimeoutError` (checked between pieces and while waiting).

        Raises:
            VideoError, ConfigurationError, DeviceOutOfMemoryError: as :meth:`FeatureExtractor.extract`.
            TaskTimeoutError: past ``deadline``.
        """
        check_options(crop_type, num_clips_per_video, clip_sampling, decoder)
        started = time.perf_counter()
        # Registered before it waits for a decoder slot: a video still to be decoded keeps the
        # loop from sending short batches.
        state = self._register()
        try:
            with self._decoder_slots:
                info = self._decode_and_hand_over(
                    state, video_path, crop_type=crop_type, num_clips_per_video=num_clips_per_video,
                    clip_sampling=clip_sampling, decoder=decoder, decoder_threads=decoder_threads,
                    deadline=deadline,
                )
            self._wait(state, deadline, video_path)
        finally:
            self._unregister(state)
        seconds = time.perf_counter() - started
        assert state.features is not None
        clips_per_forward = self.batch_clip_crops // state.features.shape[1]
        return VideoFeatures(state.features, info.num_frames, info.fps, seconds, clips_per_forward)

    def _decode_and_hand_over(
        self,
        state: _Video,
        video_path: str | os.PathLike[str],
        *,
        crop_type: CropType,
        num_clips_per_video: int,
        clip_sampling: ClipSampling,
        decoder: DecoderName,
        decoder_threads: int,
        deadline: float | None,
    ) -> VideoInfo:
        """Decode, transform and hand over every clip of the video, a piece at a time."""
        spec = self.extractor.spec
        with open_video(
            video_path, decoder=decoder, num_threads=decoder_threads, max_pixels=self.extractor.max_pixels
        ) as video:
            clips = self.extractor.clips_of(
                video.info.num_frames, num_clips_per_video, clip_sampling, fps=video.info.fps
            )
            views = num_crops(crop_type)
            state.features = np.empty((len(clips), views, spec.feature_dim), dtype=np.float32)
            for piece in batch_slices(len(clips), CLIPS_PER_PIECE):
                _check_deadline(deadline, video_path)
                decoded = decode_clips(
                    video, clips[piece], short_side=spec.resize_short_side, device=self.extractor.device,
                    preprocessing=spec.preprocessing,
                )
                for first_clip, inputs in self._transformed(decoded, piece.start, crop_type):
                    self._hand_over(state, first_clip * views, inputs.flatten(0, 1), deadline, video_path)
                del decoded
            return video.info

    def close(self) -> None:
        """Stop the loop's thread once the work queued now is done; later ``extract`` calls fail."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        for thread in self._threads:
            thread.join()

    # -- the decoders' side ------------------------------------------------------------------

    def _transformed(
        self, decoded: DecodedClips, first_clip: int, crop_type: CropType
    ) -> list[tuple[int, torch.Tensor]]:
        """``(first clip, (B, V, 3, T, h, w) inputs)`` parts; halves the clips on out of memory."""
        extractor = self.extractor
        try:
            return [(first_clip, transform_clips(decoded, spec=extractor.spec, crop_type=crop_type,
                                                 device=extractor.device))]
        except (torch.OutOfMemoryError, MemoryError) as e:
            count = len(decoded.positions_bt)
            if count == 1:
                raise DeviceOutOfMemoryError(
                    f"The frames of one clip do not fit in {extractor.device} memory; free the GPU "
                    "(or RAM), or use a smaller crop type."
                ) from e
            head, tail = decoded.split(count // 2)
            return [*self._transformed(head, first_clip, crop_type),
                    *self._transformed(tail, first_clip + count // 2, crop_type)]

    def _register(self) -> _Video:
        state = _Video()
        with self._changed:
            if self._closed:
                raise RuntimeError("This BatchingLoop is closed.")
            self._videos.add(state)
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._run, name=f"vfx-inference-{index}", daemon=True)
                    for index in range(self.inference_threads)
                ]
                for thread in self._threads:
                    thread.start()
        return state

    def _hand_over(
        self, state: _Video, first_row: int, inputs: torch.Tensor, deadline: float | None, video_path: object
    ) -> None:
        with self._changed:
            while self._pending_clip_crops >= self.max_pending_clip_crops and state.error is None:
                self._changed.wait(_wait_seconds(deadline))
                _check_deadline(deadline, video_path)
            if state.error is not None:
                raise state.error
            self._pending.append(_Piece(state, first_row, inputs))
            self._pending_clip_crops += inputs.shape[0]
            state.outstanding += inputs.shape[0]
            self._last_arrival = time.monotonic()
            self._changed.notify_all()

    def _wait(self, state: _Video, deadline: float | None, video_path: object) -> None:
        with self._changed:
            state.submitting = False
            if state.outstanding == 0:
                state.done.set()
            self._changed.notify_all()
        while not state.done.wait(_wait_seconds(deadline)):
            _check_deadline(deadline, video_path)
        if state.error is not None:
            raise state.error

    def _unregister(self, state: _Video) -> None:
        """The video leaves, finished or not: drop whatever of it is still queued."""
        with self._changed:
            self._videos.discard(state)
            if state.outstanding:
                kept = deque(piece for piece in self._pending if piece.video is not state)
                self._pending_clip_crops = sum(len(piece) for piece in kept)
                self._pending = kept
                state.error = state.error or RuntimeError("abandoned")
            self._changed.notify_all()

    # -- the loop's side ---------------------------------------------------------------------

    def _ready(self) -> bool:
        if self._pending_clip_crops >= self.batch_clip_crops:
            return True
        if not self._pending_clip_crops:
            return False
        nobody_decoding = not any(video.submitting for video in self._videos)
        return nobody_decoding or self._closed or time.monotonic() - self._last_arrival >= self.stall_seconds

    def _take_batch(self) -> list[_Piece]:
        """Up to ``batch_clip_crops`` clip-crops from the front of the queue, splitting a piece."""
        batch: list[_Piece] = []
        room = self.batch_clip_crops
        while self._pending and room:
            piece = self._pending[0]
            if len(piece) <= room:
                batch.append(self._pending.popleft())
            else:
                batch.append(_Piece(piece.video, piece.first_row, piece.inputs[:room]))
                self._pending[0] = _Piece(piece.video, piece.first_row + room, piece.inputs[room:])
            room -= len(batch[-1])
        self._pending_clip_crops -= self.batch_clip_crops - room
        return batch

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._ready():
                    if self._closed and not self._pending:
                        return
                    self._changed.wait(timeout=min(1.0, self.stall_seconds))
                batch = self._take_batch()
                self._changed.notify_all()  # room for the waiting decoders
            try:
                rows = self._embed(torch.cat([piece.inputs for piece in batch]) if len(batch) > 1
                                   else batch[0].inputs)
                error = None
            except Exception as e:  # reaches every video of the batch, not this thread's end
                rows, error = None, e
            self._deliver(batch, rows, error)

    def _embed(self, clip_crops: torch.Tensor) -> np.ndarray:
        """``(N, 3, T, h, w)`` -> ``(N, D)`` float32; halves the batch on out of memory."""
        try:
            return self.extractor.embed(clip_crops.unsqueeze(1)).squeeze(1).cpu().numpy()
        except (torch.OutOfMemoryError, MemoryError) as e:
            if self.extractor.device.type == "cuda":
                torch.cuda.empty_cache()
            count = clip_crops.shape[0]
            if count == 1:
                raise DeviceOutOfMemoryError(
                    f"One clip-crop of {self.extractor.spec.name} does not fit in "
                    f"{self.extractor.device} memory; free the GPU (or RAM), or use --precision fp16."
                ) from e
            logger.warning("Out of memory on %d clip-crops; retrying as two halves", count)
            half = count // 2
            return np.concatenate([self._embed(clip_crops[:half]), self._embed(clip_crops[half:])])

    def _deliver(self, batch: list[_Piece], rows: np.ndarray | None, error: BaseException | None) -> None:
        with self._changed:
            size = sum(len(piece) for piece in batch)
            self.stats.forwards += 1
            self.stats.clip_crops += size
            self.stats.shared_forwards += len({id(piece.video) for piece in batch}) > 1
            offset = 0
            for piece in batch:
                video = piece.video
                if error is not None:
                    video.error = video.error or error
                elif video.error is None:
                    rows_of_piece = slice(piece.first_row, piece.first_row + len(piece))
                    video.rows[rows_of_piece] = rows[offset : offset + len(piece)]
                offset += len(piece)
                video.outstanding -= len(piece)
                if video.error is not None or (not video.submitting and video.outstanding == 0):
                    video.done.set()
            self._changed.notify_all()


def _wait_seconds(deadline: float | None) -> float:
    if deadline is None:
        return 1.0
    return max(0.0, min(1.0, deadline - time.monotonic()))


def _check_deadline(deadline: float | None, video_path: object) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise TaskTimeoutError(f"{video_path} was not done by its deadline; given up.")
