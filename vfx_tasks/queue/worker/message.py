"""A task message is untrusted input: what a worker checks before it reads or writes anything.

:meth:`~vfx_tasks.queue.job.Job.from_message` has already refused wrong types and settings out of
bounds (the :class:`~vfx_tasks.extract.recipe.Recipe` checks its own fields); what is left is
where the job reads and writes, and how much it carries.

Anyone who can write to the Redis queue (its password holder, a Flower login through
``/api/task/async-apply``, any local user of a ``--local`` run) can send ``vfx.extract_video``
with any arguments. A worker therefore reads only under ``VFX_INPUT_ROOTS`` (or the Hub) and
writes only under ``VFX_OUTPUT_ROOTS``, both resolved with symlinks followed, and bounds every
number and the labels. A violation is an :class:`~vfx_tasks.errors.UntrustedMessageError`: a
permanent failure, recorded with a reason that names the setting to change. These checks give
the reasons; what keeps the writes inside the roots minutes later, whatever is swapped for a
link meanwhile, is the folder opened once from its root (:class:`~vfx_tasks.storage.LocalFolder`).
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vfx_tasks.errors import ConfigurationError, UnsafePathError, UntrustedMessageError
from vfx_tasks.queue.job import Job
from vfx_tasks.settings import Root, Settings
from vfx_tasks.sources.hub_paths import is_hub_location, parse_location
from vfx_tasks.storage import is_url, normalize_url, output_path, reserved_name_problem, url_is_under

#: Relative ids are ``<dirs>/<file stem>``: far below this on any real dataset, and small enough
#: that a crafted one cannot bloat the ledger or the logs.
MAX_RELATIVE_ID_CHARS = 1024
#: Linux's PATH_MAX: no longer path can be opened anyway.
MAX_PATH_CHARS = 4096
#: Run ids are 20 hex digits (see ``Run``); the bound only stops absurd Redis keys.
MAX_RUN_ID_CHARS = 256
#: XD-Violence's labels are a few kB per video; 1 MiB leaves room for rich annotations while
#: keeping one message from filling a worker's memory or an output folder.
MAX_LABELS_BYTES = 1 << 20
#: Deeper JSON than this is no annotation anyone writes, only a way to exhaust the recursion limit.
MAX_LABELS_DEPTH = 32
#: Linux's NAME_MAX: the longest folder or file name most file systems accept, in bytes.
MAX_NAME_BYTES = 255
#: The file names a worker makes from a relative id's last segment add up to 28 bytes to it
#: (``.vfx-tmp-<stem>.<random>.json.part``); 200 leaves room for those and for what may come.
MAX_STEM_BYTES = 200
_SEE = "see docs/deployment.md#trusted-folders"


def check_job(job: Job, *, settings: Settings) -> None:
    """Refuse a task whose arguments a worker must not act on; return quietly when it may run.

    Raises:
        UntrustedMessageError: a path or id too long or holding control characters, an unsafe
            ``relative_id``, labels out of bounds, or a path outside the configured roots.
    """
    for name, value, limit in (("video_path", job.video_path, MAX_PATH_CHARS),
                               ("output_dir", job.output_dir, MAX_PATH_CHARS),
                               ("run_id", job.run_id, MAX_RUN_ID_CHARS)):
        _check_text(name, value, limit)
    check_relative_id(job.relative_id)
    _check_labels(job.labels)
    check_output(job.output_dir, job.relative_id, roots=settings.output_roots)
    check_input(job.video_path, roots=settings.input_roots, hf_repos=settings.hf_repos)


def _refuse(problem: str) -> UntrustedMessageError:
    return UntrustedMessageError(f"Refusing task: {problem}")


def _check_text(name: str, value: str, limit: int) -> None:
    if not value or len(value) > limit:
        raise _refuse(f"{name} must hold 1 to {limit} characters, not {len(value)}.")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise _refuse(f"{name} {value[:200]!r} holds control characters.")
    # No file system takes a longer name: refused here, not failed later as an I/O error.
    long_names = [part for part in value.split("/") if len(part.encode()) > MAX_NAME_BYTES]
    if long_names:
        raise _refuse(
            f"{name} holds a name of {len(long_names[0].encode())} bytes ({long_names[0][:40]!r}...); "
            f"file systems take at most {MAX_NAME_BYTES}."
        )


def check_relative_id(relative_id: str) -> str:
    """``relative_id`` if it is a plain relative POSIX path (``<dirs>/<stem>``), else refuse it."""
    _check_text("relative_id", relative_id, MAX_RELATIVE_ID_CHARS)
    problems = []
    if relative_id.startswith("/"):
        problems.append("is absolute")
    if "\\" in relative_id:
        problems.append("holds a backslash")
    parts = relative_id.split("/")
    if any(part in ("", ".", "..") for part in parts):
        problems.append("has an empty, '.' or '..' segment")
    if len(parts[-1].encode()) > MAX_STEM_BYTES:
        problems.append(f"ends in a name longer than {MAX_STEM_BYTES} bytes")
    if problems:
        raise _refuse(
            f"relative_id {relative_id!r} {' and '.join(problems)}: it must name a file inside output_dir."
        )
    if (reserved := reserved_name_problem(relative_id)) is not None:
        raise _refuse(f"relative_id {relative_id!r}: {reserved}.")
    return relative_id


def _check_labels(labels: dict[str, Any] | None) -> None:
    if labels is None:
        return
    # Iterative, so that a deep object fails here and not on Python's recursion limit.
    stack: list[tuple[Any, int]] = [(labels, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_LABELS_DEPTH:
            raise _refuse(f"labels are nested deeper than {MAX_LABELS_DEPTH} levels.")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)
    size = len(json.dumps(labels, ensure_ascii=False).encode())
    if size > MAX_LABELS_BYTES:
        raise _refuse(f"labels take {size} bytes as JSON; at most {MAX_LABELS_BYTES} are accepted.")


def check_output(output_dir: str, relative_id: str, *, roots: Sequence[Root]) -> Path | str:
    """The resolved ``output_dir`` (a URL: canonical), once it and the feature file in it are under
    ``roots``."""
    if is_url(output_dir):
        return _check_url_under("output_dir", output_dir, roots, variable="VFX_OUTPUT_ROOTS")
    resolved_dir = _resolved("output_dir", output_dir)
    _check_under("output_dir", output_dir, resolved_dir, roots, variable="VFX_OUTPUT_ROOTS")
    # Existing folders below output_dir may be symlinks leading out of it.
    destination = _resolved("relative_id", output_path(output_dir, relative_id))
    if not destination.is_relative_to(resolved_dir) or destination == resolved_dir:
        raise _refuse(
            f"relative_id {relative_id!r} leads to {destination}, outside output_dir {resolved_dir} "
            "(a symlink in between?). Remove the link or send another relative_id."
        )
    return resolved_dir


def check_input(video_path: str, *, roots: Sequence[Root], hf_repos: Sequence[str] = ()) -> None:
    """Refuse a ``video_path`` (a local path or an object URL) outside ``roots``, and a malformed
    ``hf://`` location or one in a dataset ``hf_repos`` (when given) does not allow."""
    if is_hub_location(video_path):
        try:
            repo_id = parse_location(video_path).repo_id
        except UnsafePathError as e:
            raise _refuse(f"video_path: {e}") from e
        if hf_repos and not any(_repo_matches(repo_id, pattern) for pattern in hf_repos):
            raise _refuse(
                f"video_path {video_path[:300]!r} is in dataset {repo_id!r}, not in VFX_HF_REPOS "
                f"({', '.join(hf_repos)}); add it there or send videos of those datasets."
            )
        return
    if is_url(video_path):
        _check_url_under("video_path", video_path, roots, variable="VFX_INPUT_ROOTS")
        return
    resolved = _resolved("video_path", video_path)
    _check_under("video_path", video_path, resolved, roots, variable="VFX_INPUT_ROOTS")


def _check_url_under(name: str, given: str, roots: Sequence[Root], *, variable: str) -> str:
    """The canonical URL ``given``, once it is one of the URL ``roots`` or below one.

    A URL is text, never resolved: it is canonical (no ``..``, no empty segment, no credentials)
    or refused, and then inside a root exactly when it starts with the root and ``/``.
    """
    try:
        url = normalize_url(given, what=name)
    except ConfigurationError as e:
        raise _refuse(str(e)) from None
    url_roots = [root for root in roots if isinstance(root, str)]
    if any(url_is_under(url, root) for root in url_roots):
        return url
    if not url_roots:
        raise _refuse(
            f"{name} {url} is in object storage, and {variable} names no URL prefix on this worker. Add "
            f"the prefix (e.g. s3://bucket/prefix) to {variable} ({_SEE})."
        )
    raise _refuse(
        f"{name} {url} is not under {variable} ({', '.join(url_roots)}); add its prefix there or send "
        f"URLs under them ({_SEE})."
    )


def _repo_matches(repo_id: str, pattern: str) -> bool:
    """Whether ``repo_id`` is the dataset ``pattern`` names (``owner/name``, or ``owner/*``)."""
    owner, _, name = pattern.partition("/")
    return repo_id == pattern or (name == "*" and repo_id.partition("/")[0] == owner)


def _resolved(name: str, path: str | os.PathLike[str]) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop, an unreadable folder
        raise _refuse(f"{name} {str(path)[:200]!r} cannot be resolved ({e}).") from e


def _check_under(name: str, given: str, resolved: Path, roots: Sequence[Root], *, variable: str) -> None:
    local_roots = [root for root in roots if isinstance(root, Path)]
    resolved_roots = [_resolved(variable, root) for root in local_roots]
    if any(resolved.is_relative_to(root) for root in resolved_roots):
        return
    shown = given if str(resolved) == given else f"{given} ({resolved})"
    if not local_roots:
        raise _refuse(
            f"{name} {shown} is not under {variable}, which "
            f"{'is not set' if not roots else 'names no local folder'} on this worker. Set {variable} "
            f"to the folders this worker may use ({_SEE})."
        )
    allowed = os.pathsep.join(map(str, local_roots))
    raise _refuse(
        f"{name} {shown} is not under {variable} ({allowed}); add it there or send paths under it ({_SEE})."
    )
