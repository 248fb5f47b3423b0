"""A Hugging Face Hub on 127.0.0.1: the endpoints huggingface_hub calls, served from local folders.

Endpoints (as huggingface_hub 2.x calls them; see ``HfApi.dataset_info``, ``HfApi.list_repo_tree``
and ``file_download.get_hf_file_metadata``/``http_get``):

* ``GET /api/datasets/<owner>/<name>[/revision/<rev>]``: repository info with the commit ``sha``;
* ``GET /api/datasets/<owner>/<name>/tree/<rev>[/<path>]?recursive=&cursor=``: a listing, paged with
  a ``Link: <...>; rel="next"`` header like the Hub's cursor pagination;
* ``HEAD``/``GET /datasets/<owner>/<name>/resolve/<rev>/<path>``: the file, with ``ETag``,
  ``X-Repo-Commit``, ``Content-Length``, ``Accept-Ranges`` and ``Range`` (206) support.

Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) as the Hub's
do, which is how huggingface_hub tells them apart. Faults can be injected per file: listed but
missing (404), truncated (shorter than announced), or a connection dropped once mid-body. A file
can be held (:meth:`HubReplica.hold`): its download waits until the test lets it go, which pauses
the worker fetching it at a known point.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

#: Tree entries per page; small so that tests cross page boundaries.
DEFAULT_PAGE_SIZE = 4
#: A held download goes on after this long even if the test never releases it (a failed test).
HOLD_TIMEOUT_SECONDS = 120


@dataclass
class Revision:
    """One revision of a replica repository: a commit id and the folder holding its files."""

    commit: str
    root: Path
    #: Paths listed in the tree but absent from the folder (served as 404 by resolve).
    phantom_files: list[str] = field(default_factory=list)

    def files(self) -> list[str]:
        real = [p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()]
        return sorted(set(real) | set(self.phantom_files))


@dataclass
class Hold:
    """A download the replica holds back: ``arrived`` is set when it is asked for, ``released`` lets it go."""

    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)


@dataclass
class Request:
    """What the replica was asked (for assertions)."""

    method: str
    path: str
    headers: dict[str, str]


class HubReplica:
    """A threaded HTTP server answering like the Hub for the repositories added to it."""

    def __init__(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        self.page_size = page_size
        self.repos: dict[str, dict[str, Revision]] = {}
        #: Paths served shorter than their announced size.
        self.truncated: set[str] = set()
        #: Paths whose first GET is cut mid-body by a closed connection (then resumed with a Range).
        self.drop_once: set[str] = set()
        #: Paths answered with 403 (no access to this file).
        self.forbidden: set[str] = set()
        #: Paths whose GET waits for its ``Hold`` to be released.
        self.held: dict[str, Hold] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server = _ReplicaServer(self)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-replica", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubReplica:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def add_revision(self, repo_id: str, revision: str, root: Path, *, phantom_files: list[str] = ()) -> str:
        """Serve ``root`` as ``revision`` of dataset ``repo_id``; returns the commit id it got."""
        digest = hashlib.sha1(f"{repo_id}@{revision}".encode())
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(path.relative_to(root).as_posix().encode())
        commit = digest.hexdigest()
        self.repos.setdefault(repo_id, {})[revision] = Revision(commit, root, list(phantom_files))
        return commit

    def hold(self, path: str) -> Hold:
        """Make the next downloads of ``path`` wait until the returned hold is released."""
        self.held[path] = Hold()
        return self.held[path]

    def find_revision(self, repo_id: str, revision: str) -> Revision | None:
        revisions = self.repos.get(repo_id, {})
        if revision in revisions:
            return revisions[revision]
        return next((r for r in revisions.values() if r.commit == revision), None)

    def log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def requested(self, method: str, fragment: str) -> list[Request]:
        """Requests with this method whose (unquoted) path contains ``fragment``."""
        return [r for r in self.requests if r.method == method and fragment in unquote(r.path)]


def _etag(data_path: Path) -> str:
    return hashlib.sha256(data_path.read_bytes()).hexdigest()


class _ReplicaServer(ThreadingHTTPServer):
    """The HTTP server of one :class:`HubReplica`, which its handlers reach as ``self.server.replica``."""

    def __init__(self, replica: HubReplica) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replica = replica


class _Handler(BaseHTTPRequestHandler):
    server: _ReplicaServer
    protocol_version = "HTTP/1.1"

    @property
    def replica(self) -> HubReplica:
        return self.server.replica

    # `format` and the do_* names are http.server's: the base class calls them by these names.
    def log_message(self, format: str, *args: Any) -> None:
        return  # keep test output quiet; requests are kept in self.replica.requests

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    # -- routing ---------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        self.replica.log(Request(method, self.path, {k.lower(): v for k, v in self.headers.items()}))
        parts = urlsplit(self.path)
        segments = [unquote(s) for s in parts.path.split("/")[1:]]
        query = parse_qs(parts.query)
        if segments[:2] == ["api", "datasets"] and len(segments) >= 4:
            repo_id = "/".join(segments[2:4])
            rest = segments[4:]
            if not rest:
                return self._repo_info(repo_id, "main")
            if rest[0] == "revision" and len(rest) == 2:
                return self._repo_info(repo_id, rest[1])
            if rest[0] == "tree" and len(rest) >= 2:
                return self._tree(repo_id, rest[1], "/".join(rest[2:]), query)
        if segments[:1] == ["datasets"] and len(segments) >= 6 and segments[3] == "resolve":
            return self._resolve(method, "/".join(segments[1:3]), segments[4], "/".join(segments[5:]))
        self._error(404, "Not Found", "no such endpoint in the replica")

    # -- responses -------------------------------------------------------------------------

    def _error(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _revision_or_error(self, repo_id: str, revision: str) -> Revision | None:
        if repo_id not in self.replica.repos:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        found = self.replica.find_revision(repo_id, revision)
        if found is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return found

    def _repo_info(self, repo_id: str, revision: str) -> None:
        found = self._revision_or_error(repo_id, revision)
        if found is None:
            return
        self._json(
            {
                "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "author": repo_id.split("/")[0],
                "sha": found.commit,
                "private": False,
                "gated": False,
                "disabled": False,
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "siblings": [{"rfilename": path} for path in found.files()],
            }
        )

    def _tree(self, repo_id: str, revision: str, folder: str, query: dict[str, list[str]]) -> None:
        found = self._revision_or_error(repo_id, revision)
        if found is None:
            return
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        files = [p for p in found.files() if p.startswith(prefix)]
        if prefix and not files:
            return self._error(
                404, "EntryNotFound", f"{folder} does not exist on {revision}", found.commit
            )
        entries: dict[str, dict[str, Any]] = {}
        for path in files:
            relative = path[len(prefix) :].split("/")
            depth = len(relative) if recursive else 1
            for level in range(1, min(depth, len(relative) - 1) + 1):
                folder_path = prefix + "/".join(relative[:level])
                entries.setdefault(
                    folder_path,
                    {"type": "directory", "oid": _oid(folder_path), "size": 0, "path": folder_path},
                )
            if recursive or len(relative) == 1:
                local = found.root / path
                size = local.stat().st_size if local.is_file() else 1234
                entries[path] = {"type": "file", "oid": _oid(path), "size": size, "path": path}
        listing = [entries[key] for key in sorted(entries)]
        start = int(query.get("cursor", ["0"])[0])
        page = listing[start : start + self.replica.page_size]
        headers = {}
        if start + self.replica.page_size < len(listing):
            base = f"{self.replica.url}/api/datasets/{repo_id}/tree/{quote(revision, safe='')}"
            if folder:
                base += "/" + quote(folder, safe="")
            next_url = f"{base}?recursive={str(recursive).lower()}&cursor={start + self.replica.page_size}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        self._json(page, headers)

    def _resolve(self, method: str, repo_id: str, revision: str, path: str) -> None:
        found = self._revision_or_error(repo_id, revision)
        if found is None:
            return
        local = found.root / path
        if path in self.replica.forbidden:
            return self._error(403, None, f"Access to {path} is restricted", found.commit)
        if not local.is_file() or ".." in path.split("/"):
            return self._error(404, "EntryNotFound", f"{path} does not exist on {revision}", found.commit)
        data = local.read_bytes()
        size = len(data)
        start = 0
        range_header = self.headers.get("Range")
        if range_header and range_header.startswith("bytes=") and method == "GET":
            start = int(range_header[len("bytes=") :].split("-")[0])
        body = data[start:]
        if method == "GET" and (hold := self.replica.held.get(path)) is not None:
            hold.arrived.set()
            hold.released.wait(HOLD_TIMEOUT_SECONDS)
        cut_once = method == "GET" and path in self.replica.drop_once and start == 0
        if method == "GET" and path in self.replica.truncated:
            body = body[: len(body) // 2]
        self.send_response(206 if start else 200)
        self.send_header("ETag", f'"{_etag(local)}"')
        self.send_header("X-Repo-Commit", found.commit)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        announced = size - start if method == "HEAD" or cut_once else len(body)
        self.send_header("Content-Length", str(announced))
        self.end_headers()
        if method == "HEAD":
            return
        if cut_once:
            self.replica.drop_once.discard(path)
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


def _oid(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


# -- an XD-Violence-shaped repository ------------------------------------------------------------

XD_REPO = "jherng/xd-violence"
#: ``(path in the repository, sample video it is a copy of)``; names follow XD-Violence's.
XD_VIDEOS = [
    ("data/video/1-1004/A.Beautiful.Mind.2001__#00-01-45_00-02-50_label_A.mp4", "carphone_pristine.mp4"),
    ("data/video/1005-2004/Bad.Boys.1995__#01-11-55_01-12-40_label_B2-G-0.mp4", "carphone_pristine.mp4"),
    (
        "data/video/test_videos/Le Fabuleux Destin d'Amélie #1__#00-10-00_00-10-20_label_B1-0-0.mp4",
        "carphone_pristine.mp4",
    ),
]
#: Listed by the Hub but gone when fetched.
XD_MISSING = "data/video/1005-2004/Missing.Movie.2003__#00-00-01_00-00-09_label_B6-0-0.mp4"
#: Listed names that must never become output paths.
XD_UNSAFE = [
    "data/video/1-1004/%2e%2e%2f%2e%2e%2fescape_label_A.mp4",
    "data/video/..%2F..%2Fetc/evil_label_A.mp4",
    "data/video/1-1004/back\\slash_label_A.mp4",
]


def xd_relative_id(path_in_repo: str) -> str:
    """``<range>/<id>`` of a replica video."""
    return path_in_repo[len("data/video/") :].rsplit(".", 1)[0]


def build_xd_violence(root: Path, sample_videos_dir: Path) -> Path:
    """Files of an XD-Violence-shaped ``main`` under ``root``: videos, list and annotation files."""
    for path, sample in XD_VIDEOS:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample_videos_dir / sample, root / path)
    train = [p for p, _ in XD_VIDEOS if "/test_videos/" not in p] + [XD_MISSING]
    test = [p for p, _ in XD_VIDEOS if "/test_videos/" in p]
    (root / "data" / "train_list.txt").write_text(
        "".join(f"{p[len('data/video/') :]} 0\n" for p in train), encoding="utf-8"
    )
    (root / "data" / "test_list.txt").write_text(
        "".join(f"{p[len('data/video/') :]} 0\n" for p in test), encoding="utf-8"
    )
    amelie = Path(test[0]).name
    (root / "data" / "test_annotations.txt").write_text(f"{amelie} 10 52 80 101\n", encoding="utf-8")
    (root / "README.md").write_text("---\nconfigs: []\n---\n# XD-Violence replica\n", encoding="utf-8")
    return root


def build_xd_parquet_export(root: Path, *, original_endpoint: str = "https://huggingface.co") -> Path:
    """The ``refs/convert/parquet`` branch the Hub would serve for the ``video`` config."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def row(path: str) -> dict[str, Any]:
        video_id = Path(path).stem
        codes = video_id.rsplit("_", 1)[-1].split("-")
        index = {"A": 0, "B1": 1, "B2": 2, "B4": 3, "B5": 4, "B6": 5, "G": 6}
        return {
            "id": video_id,
            "path": f"{original_endpoint}/datasets/{XD_REPO}/resolve/main/{quote(path)}",
            "binary_target": int(len(codes) > 1),
            "multilabel_targets": [index[c] for c in codes if c in index],
            "frame_annotations": [{"start": 10, "end": 52}] if "test_videos" in path else [],
        }

    paths = [p for p, _ in XD_VIDEOS] + [XD_MISSING]
    for split, selected in (
        ("train", [p for p in paths if "test_videos" not in p]),
        ("test", [p for p in paths if "test_videos" in p]),
    ):
        folder = root / "video" / split
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist([row(p) for p in selected]), folder / "0000.parquet")
    return root


def cached_videos(cache: Path) -> list[Path]:
    """Video bytes held in a Hub cache (blobs; snapshot entries are links to them)."""
    return [p for p in cache.rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_size > 100_000]


def hub_env(hub: HubReplica, tmp_path: Path, base: dict[str, str]) -> dict[str, str]:
    """Environment pointing huggingface_hub at the replica (read when a process imports it)."""
    return {
        **base,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_CACHE": str(tmp_path / "hf-home" / "hub"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
