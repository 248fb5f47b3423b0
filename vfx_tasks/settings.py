"""All configuration, resolved once: explicit argument, then ``VFX_*`` variable, then default.

This is the one parser of the variables that name a :class:`Settings` field: booleans, numbers,
paths and folder lists are read by the rules here and nowhere else (the commands' options for
these fields pass their values in as overrides and leave the variables to :meth:`Settings.from_env`).
Everything else receives a :class:`Settings` (or single values taken from one) as an argument.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

from vfx_tasks.errors import ConfigurationError

_PACKAGE_DIR = Path(__file__).resolve().parent

#: Twelve hours: well above the time one long video takes on a slow GPU. See ``visibility_timeout_seconds``.
DEFAULT_VISIBILITY_TIMEOUT_SECONDS = 12 * 60 * 60
#: Ten hours: an hour-long video cut in ten crops on a slow CPU worker, with room to spare.
DEFAULT_TASK_SOFT_TIME_LIMIT_SECONDS = 10 * 60 * 60
#: Eleven hours: the soft limit plus an hour, and below the visibility timeout.
DEFAULT_TASK_TIME_LIMIT_SECONDS = 11 * 60 * 60
#: 8K UHD (7680 x 4320): the largest frames a common camera or dataset holds.
DEFAULT_MAX_PIXELS = 7680 * 4320


def default_pretrained_dir() -> Path:
    """``pretrained/`` of the source checkout when running from one, else a per-user folder.

    Never relative to the current directory, so a worker finds its weights wherever it starts.
    """
    checkout = _PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "pretrained").is_dir():
        return checkout / "pretrained"
    return Path.home() / ".cache" / "vfx_tasks" / "pretrained"


@dataclass(frozen=True)
class Settings:
    """Process-wide settings. Field ``x`` is read from ``VFX_X`` when not given explicitly."""

    #: Folder holding the ``.pth`` checkpoints under their official file names.
    pretrained_dir: Path
    #: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    device: str = "auto"
    #: Redis URL of the Celery broker (and of the done-ledger).
    broker_url: str = "redis://localhost:6379/0"
    #: Where task results go; empty means the broker's Redis.
    result_backend: str = ""
    #: Name of the Celery queue the tasks travel on.
    queue_name: str = "vfx"
    #: Seconds after which Redis hands an unacknowledged task to another worker. Too short and a
    #: long video is computed twice at once (harmless for the output, wasteful); too long and the
    #: task of a worker that vanished entirely (machine lost) waits that long before it is redone.
    #: A worker *child* that dies is not affected: its task is requeued at once.
    visibility_timeout_seconds: int = DEFAULT_VISIBILITY_TIMEOUT_SECONDS
    #: How many times a task may be redelivered after its worker died before it is recorded as failed.
    max_redeliveries: int = 3
    #: How many times a transient error (I/O, Redis hiccup, out of memory) is retried.
    max_retries: int = 3
    #: Upper bound of the exponential retry backoff, in seconds.
    retry_backoff_max_seconds: int = 600
    #: How long task results are kept in the result backend, in seconds (default one week).
    result_expires_seconds: int = 7 * 24 * 60 * 60
    #: Keep videos fetched from the Hugging Face Hub in its cache after their features are written.
    #: Off by default, so that a worker's disk never holds more than the videos in flight.
    keep_downloads: bool = False
    #: Soft time limit of one video's task, in seconds (0: none). Past it the task is interrupted
    #: where Python code runs, cleans up, and is recorded as failed with reason ``timeout``: a hung
    #: download or a video too long for this worker no longer holds a slot forever. The default
    #: leaves room for an hour-long video in ten crops on a slow CPU worker. Enforced by the
    #: ``prefork`` pool only (Celery's ``threads`` pool has no time limits).
    task_soft_time_limit_seconds: int = DEFAULT_TASK_SOFT_TIME_LIMIT_SECONDS
    #: Hard time limit of one video's task, in seconds (0: none): past it the worker process is
    #: killed (stuck in native code such as a decoder, deaf to the soft limit) and the video is
    #: recorded as failed with reason ``timeout``. Keep it above the soft limit and below
    #: ``visibility_timeout_seconds``, or Redis hands a still-running video to a second worker.
    task_time_limit_seconds: int = DEFAULT_TASK_TIME_LIMIT_SECONDS
    #: CPU threads torch may use in each worker process (0: torch's default, one per core).
    #: ``vfx-worker -c N`` with the prefork pool sets it to cores / N, so that its N processes do
    #: not fight over the same cores.
    torch_threads: int = 0
    #: Videos a worker process decodes at once (0: one per core it may use, at most its videos in
    #: flight). Its videos in flight wait for a decoder, and one inference loop batches the clips
    #: of all of them (see docs/throughput.md); ``vfx-worker`` prints the value it chose.
    decoders: int = 0
    #: FFmpeg threads of each decoder (0: the cores a worker process may use over its decoders,
    #: at least one), so that the decoders together do not oversubscribe the cores.
    decoder_threads: int = 0
    #: Most pixels (width x height) a video's frames may have (0: no limit). Read from the
    #: container before any frame is decoded; a larger video fails as ``video_too_large``. Each
    #: frame decodes to width x height x 3 bytes and a batch holds dozens: a small file of
    #: 16000 x 16000 frames needed 24 GB. The default fits 8K (7680 x 4320).
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: Most memory each worker process may allocate, in MiB (its RLIMIT_DATA; 0: no limit). Past
    #: it, an allocation fails in the task that asked (``memory_limit``, retried; a decoder that
    #: cannot allocate fails its video as ``bad_video``) instead of the kernel's OOM killer ending
    #: the worker or the machine. With the threads pool it bounds the whole worker; with prefork,
    #: each pool process (see docs/deployment.md#memory).
    memory_limit_mb: int = 0
    # -- what a task message may name (see docs/deployment.md#trusted-folders) --
    #: Folders a task's local ``video_path`` must lie in (symlinks followed), separated by ``:`` or
    #: ``,``, or object-storage prefixes (``s3://bucket/prefix``) its URL must start with. Empty: no
    #: local video is accepted (``hf://`` locations still are). A task message is untrusted input:
    #: anyone who can write to Redis or log into Flower can send one.
    input_roots: tuple[Root, ...] = ()
    #: Folders a task's ``output_dir`` must lie in (symlinks followed), or object-storage prefixes,
    #: separated by ``:`` or ``,``. Empty: every task is refused, so a worker writes nowhere it was
    #: not told to.
    output_roots: tuple[Root, ...] = ()
    #: Options of the object-storage client as a JSON object (fsspec's: for S3 ``endpoint_url``,
    #: ``client_kwargs``, ``anon``...). Credentials belong in each machine's environment
    #: (``AWS_ACCESS_KEY_ID``..., a profile) or in this variable, never on a command line.
    storage_options: str = field(default="", repr=False)
    #: Largest video a worker fetches from object storage, in bytes (0: no limit); a larger object
    #: fails as ``unsafe_file`` before a byte is fetched, so a planted object cannot fill the disk.
    max_video_bytes: int = 64 << 30
    #: Folders a task's own model config (``--model-config``, with its ``_base_`` files) and
    #: checkpoint file must lie in (symlinks followed), separated by ``:`` or ``,``. A config is
    #: Python that mmengine runs: keep these folders writable only by people you trust. Empty: no
    #: task with its own config is accepted (model-zoo names still are; mmaction2's own configs
    #: are always allowed as ``_base_`` files). Local folders only.
    model_roots: tuple[Root, ...] = ()
    #: Hugging Face datasets a task's ``hf://`` video may come from, as ``owner/name`` or
    #: ``owner/*``, separated by ``,`` or spaces. Empty: any dataset this worker's token can read.
    hf_repos: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigurationError(
                f"Invalid device ({self.device!r}). Use auto, cpu, cuda or cuda:N (VFX_DEVICE)."
            )
        for f in fields(self):
            if _field_types()[f.name] is int and int(getattr(self, f.name)) < 0:
                raise ConfigurationError(
                    f"Invalid {f.name} ({getattr(self, f.name)}). Use a number >= 0 (VFX_{f.name.upper()})."
                )
        for name in ROOT_FIELDS:
            object.__setattr__(self, name, _to_roots(name, getattr(self, name)))
        if any(isinstance(root, str) for root in self.model_roots):
            raise ConfigurationError(
                "Invalid model_roots: give local folders (a config is read from this machine's disk), "
                "not object-storage URLs (VFX_MODEL_ROOTS)."
            )
        object.__setattr__(self, "storage_options", _to_storage_options(self.storage_options))
        object.__setattr__(self, "hf_repos", _to_repos(self.hf_repos))
        soft, hard = self.task_soft_time_limit_seconds, self.task_time_limit_seconds
        if soft and hard and soft >= hard:
            raise ConfigurationError(
                f"Invalid time limits: soft {soft} s >= hard {hard} s. The soft limit must be the "
                "shorter (VFX_TASK_SOFT_TIME_LIMIT_SECONDS < VFX_TASK_TIME_LIMIT_SECONDS), or 0 for none."
            )
        if not self.result_backend:
            object.__setattr__(self, "result_backend", self.broker_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``overrides`` (``None`` values ignored), ``VFX_*`` variables and defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {"pretrained_dir": default_pretrained_dir()}
        for f in fields(cls):
            env_value = environ.get(f"VFX_{f.name.upper()}")
            if env_value not in (None, ""):
                values[f.name] = env_value
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigurationError(f"Unknown settings: {', '.join(sorted(unknown))}.")
        values["pretrained_dir"] = Path(values["pretrained_dir"]).expanduser()
        types = _field_types()
        for f in fields(cls):
            if types[f.name] is int and f.name in values:
                values[f.name] = _to_int(f.name, values[f.name])
            elif types[f.name] is bool and f.name in values:
                values[f.name] = _to_bool(f.name, values[f.name])
        return cls(**values)

    def storage_kwargs(self) -> dict[str, Any]:
        """:attr:`storage_options` as keyword arguments of the storage client."""
        return dict(json.loads(self.storage_options)) if self.storage_options else {}

    def with_overrides(self, **overrides: Any) -> Settings:
        """Return a copy with the non-``None`` overrides applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_environ(self) -> dict[str, str]:
        """The ``VFX_*`` variables that rebuild these settings in a child process."""
        environ = {f"VFX_{f.name.upper()}": str(getattr(self, f.name)) for f in fields(self)}
        for name in ROOT_FIELDS:
            # ',' separates URLs and folders alike (a ':' inside a URL would need reading twice).
            environ[f"VFX_{name.upper()}"] = ",".join(map(str, getattr(self, name)))
        environ["VFX_HF_REPOS"] = ",".join(self.hf_repos)
        return environ


@functools.cache
def _field_types() -> dict[str, Any]:
    """Each :class:`Settings` field's type, resolved (``f.type`` is a string under postponed annotations)."""
    return get_type_hints(Settings)


def _to_int(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as e:
        raise ConfigurationError(
            f"Invalid {name} ({value!r}). Use a whole number (VFX_{name.upper()})."
        ) from e


#: The fields holding lists of folders (``VFX_INPUT_ROOTS``, ``VFX_OUTPUT_ROOTS``, ``VFX_MODEL_ROOTS``).
ROOT_FIELDS = ("input_roots", "output_roots", "model_roots")
#: A root: a local folder, or an object-storage prefix kept as its canonical URL text.
Root = Path | str
#: ``scheme://`` where a root starts: the ``:`` in it separates nothing.
_URL_START = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _split_roots(value: str) -> list[str]:
    """``a:b,s3://x/y:c`` -> ``["a", "b", "s3://x/y", "c"]``: a ``:`` that starts ``//`` is a URL's."""
    return re.split(rf",|{re.escape(os.pathsep)}(?!//)", value)


def _to_roots(name: str, value: Any) -> tuple[Root, ...]:
    """Absolute folders and canonical URLs from a ``:``- or ``,``-separated string, or any iterable."""
    parts = _split_roots(value) if isinstance(value, str) else list(value)
    texts = [text for text in (str(p).strip() for p in parts) if text]
    urls = {text for text in texts if _URL_START.match(text) and not text.lower().startswith("file://")}
    for text in urls:
        _check_url_root(name, text)
    roots: tuple[Root, ...] = tuple(
        text.rstrip("/") if text in urls else Path(text).expanduser() for text in texts
    )
    relative = [str(root) for root in roots if isinstance(root, Path) and not root.is_absolute()]
    if relative:
        # A relative root would mean something different in every worker's current directory.
        raise ConfigurationError(
            f"Invalid {name} ({', '.join(relative)}): give absolute folders, separated by "
            f"{os.pathsep!r} or ',' (VFX_{name.upper()})."
        )
    return roots


def _check_url_root(name: str, url: str) -> None:
    """The same rules as every stored URL (see ``storage/urls.py``), without importing storage."""
    scheme, _, rest = url.partition("://")
    segments = rest.rstrip("/").split("/")
    if (not rest.strip("/") or "@" in segments[0] or any(ch in rest for ch in "?#\\")
            or any(segment in ("", ".", "..") for segment in segments) or scheme.lower() != scheme):
        raise ConfigurationError(
            f"Invalid {name} ({url}): give a prefix as scheme://bucket/prefix in lower-case scheme, "
            f"without credentials, '..' or empty segments (VFX_{name.upper()})."
        )


def _to_storage_options(value: Any) -> str:
    """Canonical JSON text of a JSON object (given as text or a mapping)."""
    if isinstance(value, Mapping):
        value = json.dumps(dict(value))
    text = str(value or "").strip()
    if not text:
        return ""
    try:
        parsed = json.loads(text)
    except ValueError as e:
        raise ConfigurationError(
            f"Invalid storage_options: not JSON ({e}). Give an object, e.g. "
            '\'{"endpoint_url": "http://minio:9000"}\' (VFX_STORAGE_OPTIONS).'
        ) from None  # the text may hold a secret: not chained into tracebacks
    if not isinstance(parsed, dict):
        raise ConfigurationError(
            f"Invalid storage_options: a JSON {type(parsed).__name__}, not an object (VFX_STORAGE_OPTIONS)."
        )
    return json.dumps(parsed, sort_keys=True)


def _to_repos(value: Any) -> tuple[str, ...]:
    """``owner/name`` and ``owner/*`` patterns from a ``,``- or space-separated string, or an iterable."""
    parts = re.split(r"[,\s]+", value) if isinstance(value, str) else [str(part) for part in value]
    repos = tuple(part.strip() for part in parts if part.strip())
    bad = [repo for repo in repos if not re.fullmatch(r"\w[\w.-]*/(\*|\w[\w.-]*)", repo) or ".." in repo]
    if bad:
        raise ConfigurationError(
            f"Invalid hf_repos ({', '.join(bad)[:300]}): give datasets as owner/name or owner/*, "
            "separated by ',' (VFX_HF_REPOS)."
        )
    return repos


#: The spellings of a yes or no, the same as click's boolean type (so that a variable means the
#: same whether a command or these settings read it); compared without case or surrounding spaces.
_TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "off", ""})


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in _TRUE_WORDS | _FALSE_WORDS:
        return word in _TRUE_WORDS
    raise ConfigurationError(
        f"Invalid {name} ({value!r}). Use 1/true/t/yes/y/on or 0/false/f/no/n/off (VFX_{name.upper()})."
    )
