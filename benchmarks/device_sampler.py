"""GPU utilisation and memory in use, sampled in a thread while a benchmark runs (needs ``pynvml``).

NVML sees every process on a GPU, so the figures include worker processes other than the
benchmark's own. Without ``pynvml`` or without a GPU, every figure is ``None``.
"""

from __future__ import annotations

import os
import threading

import numpy as np


class DeviceSampler:
    """Mean utilisation and peak memory in use of the visible GPUs, sampled every 100 ms.

    Args:
        visible_index: only this CUDA device (an index among ``CUDA_VISIBLE_DEVICES``);
            ``None``: all visible GPUs (utilisation averaged, memory summed).
        enabled: ``False`` samples nothing (a run on the CPU of a GPU machine).
    """

    def __init__(self, visible_index: int | None = None, *, enabled: bool = True) -> None:
        self.utilisation: list[float] = []
        self.peak_memory_mib = 0.0
        self._stop = threading.Event()
        self._handles: list[object] = []
        self._thread: threading.Thread | None = None
        if not enabled:
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            physical = (
                [int(i) for i in visible.split(",") if i.strip()]
                if visible
                else list(range(pynvml.nvmlDeviceGetCount()))
            )
            if visible_index is not None:
                physical = [physical[visible_index]]
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in physical]
        except Exception:  # no pynvml, no GPU, or GPU UUIDs: no figures
            self._handles = []

    def _run(self) -> None:
        import pynvml

        while not self._stop.wait(0.1):
            self.utilisation.append(
                float(np.mean([pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self._handles]))
            )
            used = sum(pynvml.nvmlDeviceGetMemoryInfo(h).used for h in self._handles) / 2**20
            self.peak_memory_mib = max(self.peak_memory_mib, used)

    def __enter__(self) -> DeviceSampler:
        self._thread = threading.Thread(target=self._run, daemon=True) if self._handles else None
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    @property
    def busy_percent(self) -> float | None:
        return float(np.mean(self.utilisation)) if self.utilisation else None

    @property
    def peak_used_mib(self) -> float | None:
        return self.peak_memory_mib if self.utilisation else None
