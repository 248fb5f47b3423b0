"""Flower against a real Redis and a real CPU worker: workers, tasks (state, runtime, failure
reason), basic auth and Prometheus metrics, read over HTTP as a user's browser or scraper would."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PROCESS_TIMEOUT_SECONDS, REPO_DIR, WorkerProcess, wait_until
from tests.helpers import RUN_SPEC_OPTIONS, enqueue_in_process
from vfx_tasks.queue.processes.redis_server import RedisServer, free_port

pytestmark = pytest.mark.slow

FLOWER_USER, FLOWER_PASSWORD = "watcher", "s3cret-for-tests"
WORKER_NAME = "flowertest@localhost"


@dataclass(frozen=True)
class FlowerRun:
    """A Flower that watched one run of a good and a corrupt video."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    enqueue_stderr: str


def http_get(url: str, *, auth: tuple[str, str] | None = (FLOWER_USER, FLOWER_PASSWORD)) -> tuple[int, bytes]:
    """Status and body of a GET, with HTTP basic auth unless ``auth`` is None."""
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get_json(url: str) -> Any:
    status, body = http_get(url)
    assert status == 200, f"GET {url}: HTTP {status}: {body[:300]!r}"
    return json.loads(body)


def flower_is_up(url: str, process: subprocess.Popen[bytes], log_path: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"Flower exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
    try:
        return http_get(f"{url}/healthcheck", auth=None)[0] == 200
    except OSError:
        return False


def compose_flower_options(*, port: int, db_path: Path) -> list[str]:
    """The ``celery flower`` options of docker-compose.yml, with ``port`` and ``db_path`` put in."""
    command = yaml.safe_load((REPO_DIR / "docker-compose.yml").read_text())["services"]["flower"]["command"]
    options = [o for o in command[command.index("flower") + 1 :] if not o.startswith(("--port=", "--db="))]
    return [*options, f"--port={port}", f"--db={db_path}"]


def tasks_by_video(url: str) -> dict[str, dict[str, Any]]:
    """Flower's tasks, keyed by the task's ``relative_id`` argument (Flower shows kwargs as a repr)."""
    found = {}
    for task in get_json(f"{url}/api/tasks").values():
        for name in ("good", "corrupt"):
            if f"'relative_id': '{name}'" in (task.get("kwargs") or ""):
                found[name] = task
    return found


@pytest.fixture(scope="module")
def flower_run(pretrained_dir: Path, sample_videos_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[FlowerRun]:
    """Redis, Flower and one CPU worker; one good and one corrupt video run through them."""
    folder = tmp_path_factory.mktemp("flower")
    videos = folder / "videos"
    videos.mkdir()
    shutil.copy(sample_videos_dir / "carphone_pristine.mp4", videos / "good.mp4")
    (videos / "corrupt.mp4").write_bytes(os.urandom(40_000))

    with RedisServer() as redis_server:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_DIR), env.get("PYTHONPATH", "")]))
        env.update(VFX_BROKER_URL=redis_server.url, VFX_RESULT_BACKEND="",
                   VFX_PRETRAINED_DIR=str(pretrained_dir), VFX_DEVICE="cpu")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = folder / "flower.log"
        # Flower as docker-compose.yml starts it (its options, basic auth from the environment),
        # with a local state file and a free port.
        command = [sys.executable, "-m", "celery", "-A", "vfx_tasks", "--broker", redis_server.url, "flower",
                   *compose_flower_options(port=port, db_path=folder / "flower.db"), "--address=127.0.0.1"]
        env["FLOWER_BASIC_AUTH"] = f"{FLOWER_USER}:{FLOWER_PASSWORD}"
        with open(log_path, "wb") as log:
            flower = subprocess.Popen(command, env=env, cwd=REPO_DIR, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        worker = None
        try:
            wait_until(lambda: flower_is_up(url, flower, log_path), "Flower to answer /healthcheck")
            worker = WorkerProcess(env, folder / "worker.log", WORKER_NAME)
            # Flower hears about tasks from events, so the worker and Flower run before anything is queued.
            wait_until(lambda: " ready." in worker.log(), "the worker to be ready")
            result = enqueue_in_process(
                redis_server.url, "--input_dir", str(videos), "--output_dir", str(folder / "features"),
                *RUN_SPEC_OPTIONS, "--wait",
            )  # fmt: skip
            assert result.exit_code == 1, result.stderr  # one video failed, as intended
            # Events travel independently of results: wait until Flower has both final states.
            wait_until(lambda: {t["state"] for t in tasks_by_video(url).values()} == {"SUCCESS", "FAILURE"},
                       "Flower to see both tasks end")
            yield FlowerRun(url=url, process=flower, log_path=log_path, enqueue_stderr=result.stderr)
        finally:
            if worker is not None:
                worker.stop()
            flower.terminate()
            try:
                flower.wait(30)
            except subprocess.TimeoutExpired:
                flower.kill()
                flower.wait(30)


def test_workers_are_listed(flower_run: FlowerRun) -> None:
    workers = get_json(f"{flower_run.url}/api/workers?refresh=1")

    assert WORKER_NAME in workers, list(workers)
    assert "vfx.extract_video" in workers[WORKER_NAME]["registered"]


def test_tasks_show_state_runtime_and_failure_reason(flower_run: FlowerRun) -> None:
    tasks = tasks_by_video(flower_run.url)
    good, corrupt = tasks["good"], tasks["corrupt"]

    assert good["name"] == "vfx.extract_video" and good["worker"] == WORKER_NAME
    assert good["state"] == "SUCCESS" and good["runtime"] > 0
    # Celery's task-failed event carries no runtime; the start and failure times are there.
    assert corrupt["state"] == "FAILURE" and corrupt["failed"] >= corrupt["started"] > 0
    # The reason is the VideoError the worker raised, with its message.
    assert "VideoError" in corrupt["exception"] and "corrupt.mp4" in corrupt["exception"]
    assert "FAILED corrupt: [bad_video]" in flower_run.enqueue_stderr


def test_one_task_by_id_and_filtered_by_state(flower_run: FlowerRun) -> None:
    corrupt = tasks_by_video(flower_run.url)["corrupt"]

    info = get_json(f"{flower_run.url}/api/task/info/{corrupt['uuid']}")
    failed = get_json(f"{flower_run.url}/api/tasks?state=FAILURE")

    assert info["state"] == "FAILURE" and info["traceback"]
    assert list(failed) == [corrupt["uuid"]]


@pytest.mark.parametrize("path", ["/api/workers", "/api/tasks", "/tasks", "/"])
def test_requests_without_credentials_are_refused(flower_run: FlowerRun, path: str) -> None:
    assert http_get(f"{flower_run.url}{path}", auth=None)[0] == 401
    assert http_get(f"{flower_run.url}{path}", auth=(FLOWER_USER, "wrong"))[0] == 401


def test_metrics_are_served_for_prometheus(flower_run: FlowerRun) -> None:
    status, body = http_get(f"{flower_run.url}/metrics", auth=None)  # scrapers get no credentials
    text = body.decode()

    assert status == 200
    assert "# TYPE flower_events_total counter" in text
    for event in ("task-received", "task-started", "task-succeeded", "task-failed"):
        labels = (f'type="{event}"', f'worker="{WORKER_NAME}"')
        assert any(
            line.startswith("flower_events_total{") and all(label in line for label in labels)
            and float(line.rsplit(" ", 1)[1]) >= 1
            for line in text.splitlines()
        ), f"no {event} count in /metrics"
    assert "flower_task_runtime_seconds" in text


class AuthProxy:
    """A loopback HTTP proxy that adds Flower's basic auth to every request, for a headless browser
    (which has no way to answer the login prompt)."""

    def __init__(self, target_url: str) -> None:
        token = base64.b64encode(f"{FLOWER_USER}:{FLOWER_PASSWORD}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
                headers = {"Authorization": f"Basic {token}"}
                if self.headers.get("Content-Type"):
                    headers["Content-Type"] = self.headers["Content-Type"]
                request = urllib.request.Request(target_url + self.path, data=body, headers=headers,
                                                 method=self.command)
                try:
                    response = urllib.request.urlopen(request, timeout=30)
                except urllib.error.HTTPError as e:
                    response = e  # a 401 or 404 goes back to the browser as it is
                with response:
                    content = response.read()
                self.send_response(response.status)
                self.send_header("Content-Type", response.headers["Content-Type"] or "text/plain")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = forward  # http.server's naming

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> AuthProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium for the screenshot")
def test_dashboard_screenshot(flower_run: FlowerRun, tmp_path: Path) -> None:
    """Screenshot Flower's task list in headless Chromium; VFXTEST_SCREENSHOT=docs/flower.png keeps it."""
    png = tmp_path / "flower.png"
    with AuthProxy(flower_run.url) as proxy:
        subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1600,500",
             "--virtual-time-budget=10000", f"--screenshot={png}", f"{proxy.url}/tasks"],
            check=True, capture_output=True, timeout=PROCESS_TIMEOUT_SECONDS,
        )
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG") and 10_000 < len(data) < 300_000
    if os.environ.get("VFXTEST_SCREENSHOT"):
        shutil.copy(png, Path(os.environ["VFXTEST_SCREENSHOT"]))
