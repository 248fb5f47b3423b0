"""Plain functions that test modules in several folders share (fixtures live in the conftest.py files).

``vfx-enqueue`` run three ways: in this process through click's runner (no interpreter start-up),
as a background process, and as a background ``--wait`` on the run :func:`tests.conftest.run_spec`
describes; empty files with video names for runs no worker takes; the files a folder holds.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from click.testing import CliRunner, Result

from tests.conftest import PROCESS_TIMEOUT_SECONDS, REPO_DIR
from vfx_tasks.cli.enqueue import main

ENQUEUE = "vfx_tasks.cli.enqueue"
#: ``vfx-enqueue``'s options for the run :func:`tests.conftest.run_spec` describes (I3D, one
#: center-cropped clip per video), polling the ledger often so that waits end soon after the run.
RUN_SPEC_OPTIONS = (
    "--model", "i3d", "--crop_type", "center", "--num_clips_per_video", "1", "--poll_seconds", "0.2",
)  # fmt: skip


def enqueue_in_process(redis_url: str, *args: str) -> Result:
    """``vfx-enqueue args`` on the Redis at ``redis_url``, through click's runner."""
    return CliRunner().invoke(main, list(args), env={"VFX_BROKER_URL": redis_url}, catch_exceptions=False)


def start_enqueue(env: dict[str, str], *args: str, **popen_options: Any) -> subprocess.Popen[str]:
    """``python -m vfx_tasks.cli.enqueue args`` in the background, as a user starts it; its output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", ENQUEUE, *args],
        env=env,
        cwd=REPO_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen_options,
    )


def start_enqueue_wait(
    env: dict[str, str], *args: str, wait_timeout: float = PROCESS_TIMEOUT_SECONDS
) -> subprocess.Popen[str]:
    """``vfx-enqueue`` of :data:`RUN_SPEC_OPTIONS` and ``args`` (which override them), ``--wait``ing at
    most ``wait_timeout`` seconds, in the background."""
    return start_enqueue(env, *RUN_SPEC_OPTIONS, *args, "--wait", "--wait-timeout", str(wait_timeout))


def write_fake_videos(root: Path, names: Iterable[str]) -> list[str]:
    """Empty files under ``root`` named like videos (enough to plan and queue; no worker can read
    them); their relative ids."""
    ids = []
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
        ids.append(PurePosixPath(name).with_suffix("").as_posix())
    return ids


def files_under(folder: Path) -> list[str]:
    """Every file and symlink below ``folder``, as sorted POSIX paths relative to it."""
    found = (p for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    return sorted(p.relative_to(folder).as_posix() for p in found)


def write_huge_video(path: Path, *, side: int = 16000, num_frames: int = 1) -> Path:
    """H.264 of ``side`` x ``side`` flat grey frames: a few hundred KB on disk (a 16000 x 16000 frame
    takes 750 KB and 1.6 s to encode), 768 MB per frame once decoded to RGB. Generated, never committed."""
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = side, side, "yuv420p"
        frame = av.VideoFrame(side, side, "yuv420p")
        for plane, level in zip(frame.planes, (90, 128, 128), strict=True):
            plane.update(np.full(plane.buffer_size, level, dtype=np.uint8))
        for index in range(num_frames):
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
