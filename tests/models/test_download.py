"""vfx-download-models against a real HTTP server on loopback that serves generated checkpoints."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from vfx_tasks.cli import download as download_cli
from vfx_tasks.errors import CheckpointDownloadError, ChecksumMismatchError
from vfx_tasks.models import get_model_spec
from vfx_tasks.models.download import PART_SUFFIX, download_checkpoint
from vfx_tasks.models.spec import ModelSpec
from vfx_tasks.queue.processes.redis_server import free_port

PAYLOAD_BYTES = 3 * (1 << 20) + 12345  # several read chunks, not a multiple of the chunk size


class CheckpointServer:
    """A threaded ``http.server`` on 127.0.0.1 serving byte strings, with ``Range: bytes=N-`` support.

    ``drop_after_bytes[path] = n`` makes the next response for ``path`` announce the full length,
    send ``n`` bytes and close the connection, as a broken transfer does.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_after_bytes: dict[str, int] = {}
        self.ignore_range = False  # answer 200 with the whole file, as servers without Range support do
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                range_header = self.headers.get("Range")
                server.requests.append((self.path, range_header))
                if server.ignore_range:
                    range_header = None
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(range_header.removeprefix("bytes=").rstrip("-")) if range_header else 0
                if start >= len(body) and range_header:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if range_header else 200)
                if range_header:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                drop_after = server.drop_after_bytes.pop(self.path, None)
                if drop_after is None:
                    self.wfile.write(body[start:])
                    return
                self.wfile.write(body[start : start + drop_after])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep the test output quiet

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/ckpt"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> CheckpointServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def serve(self, filename: str, body: bytes) -> None:
        self.files[f"/ckpt/{filename}"] = body

    def range_requests(self, filename: str) -> list[str | None]:
        return [r for path, r in self.requests if path == f"/ckpt/{filename}"]


def generated_spec(body: bytes, *, base_url: str, wrong_name: bool = False) -> ModelSpec:
    """The I3D spec pointing at a generated file whose name carries that file's sha256 prefix
    (or, with ``wrong_name``, another prefix)."""
    prefix = hashlib.sha256(body).hexdigest()[:8]
    if wrong_name:
        prefix = "0" * 8 if prefix != "0" * 8 else "1" * 8
    filename = f"standin_20250101-{prefix}.pth"
    return dataclasses.replace(
        get_model_spec("i3d"), checkpoint_filename=filename, checkpoint_url=f"{base_url}/{filename}"
    )


@pytest.fixture
def server() -> Iterator[CheckpointServer]:
    with CheckpointServer() as running:
        yield running


@pytest.fixture(scope="module")
def payload() -> bytes:
    return os.urandom(PAYLOAD_BYTES)


def test_right_hash_is_saved_under_its_final_name(
    server: CheckpointServer, payload: bytes, tmp_path: Path
) -> None:
    spec = generated_spec(payload, base_url=server.base_url)
    server.serve(spec.checkpoint_filename, payload)
    seen: list[tuple[int, int | None]] = []

    result = download_checkpoint(spec, tmp_path, progress=lambda done, total: seen.append((done, total)))

    assert result.status == "downloaded" and result.bytes_fetched == len(payload)
    assert (tmp_path / spec.checkpoint_filename).read_bytes() == payload
    assert not (tmp_path / (spec.checkpoint_filename + PART_SUFFIX)).exists()
    assert seen[0] == (0, len(payload)) and seen[-1] == (len(payload), len(payload))


def test_wrong_hash_deletes_the_file_and_says_why(
    server: CheckpointServer, payload: bytes, tmp_path: Path
) -> None:
    spec = generated_spec(payload, base_url=server.base_url, wrong_name=True)
    server.serve(spec.checkpoint_filename, payload)

    with pytest.raises(ChecksumMismatchError) as raised:
        download_checkpoint(spec, tmp_path)

    message = str(raised.value)
    assert spec.checkpoint_sha256_prefix in message and hashlib.sha256(payload).hexdigest()[:16] in message
    assert "deleted" in message
    assert list(tmp_path.iterdir()) == []  # neither the final name nor a .part is left


def test_interrupted_transfer_resumes_on_the_next_run(
    server: CheckpointServer, payload: bytes, tmp_path: Path
) -> None:
    # Given a server that drops the connection after 1 MiB the first time
    spec = generated_spec(payload, base_url=server.base_url)
    server.serve(spec.checkpoint_filename, payload)
    server.drop_after_bytes[f"/ckpt/{spec.checkpoint_filename}"] = 1 << 20
    final_path = tmp_path / spec.checkpoint_filename
    part_path = tmp_path / (spec.checkpoint_filename + PART_SUFFIX)

    # When the first run gives up after that one attempt
    with pytest.raises(CheckpointDownloadError, match="resume"):
        download_checkpoint(spec, tmp_path, max_attempts=1)

    # Then only the .part file holds the bytes received, never the final name
    assert not final_path.exists() and part_path.stat().st_size == 1 << 20

    # When the command runs again, it asks for the rest only and completes the file
    result = download_checkpoint(spec, tmp_path)
    assert server.range_requests(spec.checkpoint_filename) == [None, f"bytes={1 << 20}-"]
    assert result.resumed_from_bytes == 1 << 20 and result.bytes_fetched == len(payload) - (1 << 20)
    assert final_path.read_bytes() == payload and not part_path.exists()


def test_broken_connection_is_resumed_within_one_run(
    server: CheckpointServer, payload: bytes, tmp_path: Path
) -> None:
    spec = generated_spec(payload, base_url=server.base_url)
    server.serve(spec.checkpoint_filename, payload)
    server.drop_after_bytes[f"/ckpt/{spec.checkpoint_filename}"] = 100_000

    result = download_checkpoint(spec, tmp_path)

    assert server.range_requests(spec.checkpoint_filename) == [None, "bytes=100000-"]
    assert result.status == "downloaded" and (tmp_path / spec.checkpoint_filename).read_bytes() == payload


def test_complete_part_file_is_verified_and_renamed(
    server: CheckpointServer, payload: bytes, tmp_path: Path
) -> None:
    # A run killed between the last byte and the rename leaves a whole .part: the server answers 416.
    spec = generated_spec(payload, base_url=server.base_url)
    server.serve(spec.checkpoint_filename, payload)
    (tmp_path / (spec.checkpoint_filename + PART_SUFFIX)).write_bytes(payload)

    result = download_checkpoint(spec, tmp_path)

    assert result.status == "downloaded" and result.bytes_fetched == 0
    assert (tmp_path / spec.checkpoint_filename).read_bytes() == payload


def test_server_without_range_support_gets_the_whole_file_again(
    server: CheckpointServer, payload: bytes, tmp_path: Path
) -> None:
    spec = generated_spec(payload, base_url=server.base_url)
    server.serve(spec.checkpoint_filename, payload)
    server.ignore_range = True
    (tmp_path / (spec.checkpoint_filename + PART_SUFFIX)).write_bytes(payload[:5000])

    result = download_checkpoint(spec, tmp_path)

    assert server.range_requests(spec.checkpoint_filename) == ["bytes=5000-"]
    assert result.bytes_fetched == len(payload)
    assert (tmp_path / spec.checkpoint_filename).read_bytes() == payload


def test_present_valid_file_is_skipped(server: CheckpointServer, payload: bytes, tmp_path: Path) -> None:
    spec = generated_spec(payload, base_url=server.base_url)
    (tmp_path / spec.checkpoint_filename).write_bytes(payload)

    result = download_checkpoint(spec, tmp_path)

    assert result.status == "present" and server.requests == []


def test_present_damaged_file_is_fetched_again(
    server: CheckpointServer, payload: bytes, tmp_path: Path
) -> None:
    spec = generated_spec(payload, base_url=server.base_url)
    server.serve(spec.checkpoint_filename, payload)
    (tmp_path / spec.checkpoint_filename).write_bytes(payload[:1000])

    result = download_checkpoint(spec, tmp_path)

    assert result.status == "downloaded" and (tmp_path / spec.checkpoint_filename).read_bytes() == payload


def test_unreachable_server_raises_download_error(payload: bytes, tmp_path: Path) -> None:
    spec = generated_spec(payload, base_url=f"http://127.0.0.1:{free_port()}/ckpt")

    with pytest.raises(CheckpointDownloadError, match="Cannot reach"):
        download_checkpoint(spec, tmp_path, timeout_seconds=5)
    assert list(tmp_path.iterdir()) == []


# -- the command ---------------------------------------------------------------------------------


def test_cli_offline_names_the_urls_and_the_folder(tmp_path: Path) -> None:
    base_url = f"http://127.0.0.1:{free_port()}/ckpt"

    result = CliRunner().invoke(
        download_cli.main, ["i3d", "swin-t", "--pretrained-dir", str(tmp_path), "--base-url", base_url]
    )

    assert result.exit_code == 1, result.output
    for name in ("i3d", "swin-t"):
        spec = get_model_spec(name)
        assert f"{base_url}/{spec.checkpoint_filename}" in result.stderr
        assert str(tmp_path / spec.checkpoint_filename) in result.stderr
    assert "VFX_PRETRAINED_DIR" in result.stderr


def test_cli_default_urls_are_the_official_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without --base-url the message lists the official OpenMMLab URLs (download made to fail fast).
    def offline(spec: ModelSpec, *args: object, **kwargs: object) -> None:
        raise CheckpointDownloadError(f"Cannot reach {spec.checkpoint_url} (offline).")

    monkeypatch.setattr(download_cli, "download_checkpoint", offline)
    monkeypatch.delenv("VFX_BASE_URL", raising=False)

    result = CliRunner().invoke(download_cli.main, ["--pretrained-dir", str(tmp_path)])

    assert result.exit_code == 1
    for spec in (get_model_spec("i3d"), get_model_spec("swin-t")):
        assert spec.checkpoint_url.startswith("https://download.openmmlab.com/")
        assert spec.checkpoint_url in result.stderr


def test_cli_wrong_hash_exits_1_without_a_file(
    server: CheckpointServer, payload: bytes, tmp_path: Path
) -> None:
    spec = get_model_spec("i3d")
    server.serve(spec.checkpoint_filename, payload)  # not the official bytes

    result = CliRunner().invoke(
        download_cli.main, ["i3d", "--pretrained-dir", str(tmp_path), "--base-url", server.base_url]
    )

    assert result.exit_code == 1
    assert "sha256" in result.stderr and spec.checkpoint_sha256_prefix in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_downloads_then_skips(
    server: CheckpointServer, payload: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = generated_spec(payload, base_url=server.base_url)
    server.serve(spec.checkpoint_filename, payload)
    monkeypatch.setattr(download_cli, "get_model_spec", lambda name: spec)
    args = ["i3d", "--pretrained-dir", str(tmp_path), "--base-url", server.base_url]

    first = CliRunner().invoke(download_cli.main, args)
    second = CliRunner().invoke(download_cli.main, args)

    assert first.exit_code == 0, first.output
    assert "downloaded" in first.stdout and spec.checkpoint_filename in first.stderr  # the progress bar
    assert second.exit_code == 0 and "already present" in second.stdout
    assert len(server.range_requests(spec.checkpoint_filename)) == 1


def test_cli_unknown_model_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(download_cli.main, ["resnet9000", "--pretrained-dir", str(tmp_path)])

    assert result.exit_code == 2
    assert "resnet9000" in result.output and "i3d" in result.output
