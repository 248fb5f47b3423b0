"""A real S3-compatible server on 127.0.0.1 (moto's server mode), and a proxy in front of it that fails
requests on purpose.

:class:`S3Server` is moto's ``ThreadedMotoServer`` (the S3 REST API over HTTP, in a thread of the
test process); every client (s3fs in the tests, in the producer, in worker processes) reaches it
through ``endpoint_url``, as it would reach MinIO. :class:`FaultyProxy` forwards every request to
it unchanged, except those it fails with ``503 SlowDown`` (the first ``fail_first`` requests, then
every ``fail_every``-th), which is what S3 answers when it throttles; it counts what it saw.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

#: Fake credentials: moto accepts any, and they keep clients off a real account's.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class S3Server:
    """moto's S3 server on a free port of 127.0.0.1; a context manager."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.port = 0

    def start(self) -> S3Server:
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        """A boto3 S3 client of this server (for setting up and checking, never for the code under test)."""
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def upload(self, bucket: str, key: str, source: Path) -> str:
        """Put the file ``source`` at ``s3://bucket/key``; the URL."""
        self.client().upload_file(str(source), bucket, key)
        return f"s3://{bucket}/{key}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]


def storage_options(endpoint_url: str, **extra: Any) -> str:
    """``VFX_STORAGE_OPTIONS`` for an S3 endpoint (s3fs's ``endpoint_url``), as JSON."""
    return json.dumps({"endpoint_url": endpoint_url, **extra})


class FaultyProxy:
    """An HTTP proxy to ``target_port`` answering some requests itself with ``503 SlowDown``."""

    def __init__(self, target_port: int, *, fail_first: int = 0, fail_every: int = 0) -> None:
        self.target_port = target_port
        self.fail_first = fail_first
        self.fail_every = fail_every
        self.requests = 0
        self.failed = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy._should_fail():
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(_SLOW_DOWN)
                    return
                connection = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                finally:
                    connection.close()
                self.send_response(response.status)
                # A HEAD's Content-Length is the object's size: passed on as it came.
                dropped = ("transfer-encoding", "connection") + (("content-length",) if data else ())
                for key, value in response.getheaders():
                    if key.lower() not in dropped:
                        self.send_header(key, value)
                if data or self.command != "HEAD" and response.getheader("Content-Length") is None:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _should_fail(self) -> bool:
        with self._lock:
            self.requests += 1
            fail = self.requests <= self.fail_first or (
                self.fail_every > 0 and self.requests % self.fail_every == 0
            )
            self.failed += fail
            return fail

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
