"""Names of files on the Hugging Face Hub, and how they become safe relative ids.

A video on the Hub travels in a task message as a location string
``hf://datasets/<owner>/<name>@<commit>/<path_in_repo>`` (the form ``HfFileSystem`` uses), pinned to
a commit so that every worker fetches the same bytes. ``path_in_repo`` is kept verbatim (``#``,
spaces and unicode included); a revision holding ``/`` is percent-encoded.

Remote names come from people we do not know. :func:`safe_relative_id` is the only way a remote
name becomes part of an output path: it rejects anything that could leave the output folder.

A leaf of sources: plain string rules, importing neither huggingface_hub nor
:mod:`vfx_tasks.sources.hub` (which talks to it and uses these names), so the two form no circle.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from vfx_tasks.errors import ConfigurationError, UnsafePathError

HF_SCHEME = "hf://"
_DATASETS_PREFIX = HF_SCHEME + "datasets/"
#: ``/datasets/<owner>/<name>/resolve/<revision>/<path>`` in a Hub (or mirror) file URL.
_RESOLVE_URL = re.compile(
    r"^/datasets/(?P<owner>[^/]+)/(?P<name>[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)$"
)
#: Longest file name most file systems accept, in bytes; ``.npy`` and temp prefixes need room too.
_MAX_SEGMENT_BYTES = 200
#: A commit id, as huggingface_hub recognises one (``file_download.REGEX_COMMIT_HASH``).
_COMMIT = re.compile(r"[0-9a-f]{40}")
#: The Hub's refs that hold a ``/`` (huggingface_hub's ``SPECIAL_REFS_REVISION_REGEX``, anchored).
_SPECIAL_REF = re.compile(r"refs/(?:convert/\w+|pr/\d+)")
#: What git (``git check-ref-format``) refuses in a branch or tag name: a ``..``, ``@{``, a
#: character of ``~^:?*[\``, a space, a component starting with ``.`` or ending with ``.lock``.
_BAD_REF_PARTS = re.compile(r"\.\.|@\{|[~^:?*\[\\ ]|(^|/)\.|\.lock(/|$)|//|^/|/$|\.$|^-")
#: Branch and tag names on the Hub are far shorter; the bound keeps paths and messages small.
_MAX_REVISION_CHARS = 255


@dataclass(frozen=True)
class HubFile:
    """One file of a dataset repository at one revision."""

    repo_id: str
    revision: str
    path_in_repo: str

    def to_location(self) -> str:
        """``hf://datasets/<repo_id>@<revision>/<path_in_repo>``."""
        return f"{_DATASETS_PREFIX}{self.repo_id}@{quote(self.revision, safe='')}/{self.path_in_repo}"


def check_owner_and_name(repo_id: str) -> str:
    """``repo_id`` if it has the form ``owner/name``, else a :class:`ConfigurationError`.

    Stricter than huggingface_hub, which also takes a bare ``name``: locations are split on their
    slashes (``hf://datasets/<owner>/<name>@<revision>/<path>``), so the owner must be there. The
    characters are huggingface_hub's to judge (:func:`vfx_tasks.sources.hub.check_repo_id`, first).
    """
    if repo_id.count("/") != 1:
        raise ConfigurationError(
            f"Invalid Hugging Face dataset ({repo_id!r}). Give it as owner/name, e.g. jherng/xd-violence."
        )
    return repo_id


def is_hub_location(location: str) -> bool:
    """Whether a task's ``video_path`` names a file on the Hub rather than on this machine."""
    return location.startswith(HF_SCHEME)


def parse_location(location: str) -> HubFile:
    """The inverse of :meth:`HubFile.to_location`.

    Raises:
        UnsafePathError: not an ``hf://datasets/`` location, or its path is unsafe.
    """
    if not location.startswith(_DATASETS_PREFIX):
        raise UnsafePathError(
            f"Unsupported video location ({location!r}). Expected hf://datasets/<owner>/<name>@<revision>/<path>."
        )
    try:
        owner, rest = location[len(_DATASETS_PREFIX) :].split("/", 1)
        name_and_revision, path_in_repo = rest.split("/", 1)
        name, revision = name_and_revision.split("@", 1)
    except ValueError:
        raise UnsafePathError(
            f"Malformed video location ({location!r}). Expected hf://datasets/<owner>/<name>@<revision>/<path>."
        ) from None
    check_path_in_repo(path_in_repo)
    revision = check_revision(unquote(revision))
    return HubFile(repo_id=f"{owner}/{name}", revision=revision, path_in_repo=path_in_repo)


def parse_resolve_url(url: str) -> HubFile | None:
    """A Hub file URL (``https://<host>/datasets/<repo>/resolve/<rev>/<quoted path>``) as a :class:`HubFile`.

    Any host is accepted, so that URLs recorded on huggingface.co also work through an ``HF_ENDPOINT``
    mirror. Returns ``None`` for URLs of another shape.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return None
    match = _RESOLVE_URL.match(parts.path)
    if match is None:
        return None
    path_in_repo = unquote(match["path"])
    check_path_in_repo(path_in_repo)
    return HubFile(
        repo_id=f"{unquote(match['owner'])}/{unquote(match['name'])}",
        revision=check_revision(unquote(match["revision"])),
        path_in_repo=path_in_repo,
    )


def check_revision(revision: str) -> str:
    """``revision`` if the Hub could name a commit with it, else :class:`UnsafePathError`.

    huggingface_hub keeps a branch or tag name as a file ``refs/<revision>`` in its cache, so a
    revision such as ``../../x`` (``..%2F..%2Fx`` in a location) would write outside it. Accepted:
    a commit id and the Hub's special refs (``refs/convert/<name>``, ``refs/pr/<n>``), as
    huggingface_hub recognises them, and branch and tag names as git allows them.
    """
    if _COMMIT.fullmatch(revision) or _SPECIAL_REF.fullmatch(revision):
        return revision
    problems = []
    if not revision or len(revision) > _MAX_REVISION_CHARS:
        problems.append(f"is not 1 to {_MAX_REVISION_CHARS} characters long")
    if any(unicodedata.category(ch) == "Cc" for ch in revision) or "\x7f" in revision:
        problems.append("holds control characters")
    if revision == "@" or _BAD_REF_PARTS.search(revision):
        problems.append("is not a name git allows for a branch or tag (check-ref-format)")
    if problems:
        raise UnsafePathError(
            f"Refusing revision {revision[:300]!r}: it {' and '.join(problems)}. Give a commit id, a "
            "branch or a tag of the repository."
        )
    return revision


def _fully_unquoted(text: str) -> str:
    # Undo nested encodings too (%252e%252e -> %2e%2e -> ..): whatever a later layer might decode.
    for _ in range(5):
        decoded = unquote(text)
        if decoded == text:
            return text
        text = decoded
    return text


def check_path_in_repo(path: str) -> str:
    """``path`` if it is a plain relative POSIX path, else :class:`UnsafePathError`.

    Rejected: empty names, absolute paths, drive letters, backslashes, control characters, and
    ``.``/``..`` segments, also when percent-encoded (``%2e%2e``, ``%2F``, double encodings).
    """
    decoded = _fully_unquoted(path)
    problems = []
    if not path or path != path.strip():
        problems.append("empty or padded with spaces")
    if "\\" in decoded:
        problems.append("holds a backslash")
    if decoded.startswith("/") or re.match(r"^[A-Za-z]:", decoded):
        problems.append("is absolute")
    if any(unicodedata.category(ch) == "Cc" for ch in decoded):
        problems.append("holds control characters")
    segments = decoded.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        problems.append("has an empty, '.' or '..' segment")
    if any(len(segment.encode()) > _MAX_SEGMENT_BYTES for segment in path.split("/")):
        problems.append(f"has a name longer than {_MAX_SEGMENT_BYTES} bytes")
    if problems:
        raise UnsafePathError(
            f"Refusing remote path {path!r}: it {', '.join(problems)}. Such a name could write outside the "
            "output folder; rename the file in the repository or leave it out with --hf-pattern."
        )
    return path


def safe_relative_id(path_in_repo: str, *, strip_prefix: str = "") -> str:
    """The relative id (``<dirs>/<stem>``) of a remote video, checked to stay inside the output folder.

    ``strip_prefix`` (e.g. ``"data/video/"``) is removed first, so XD-Violence's
    ``data/video/1-1004/A.mp4`` becomes ``1-1004/A`` as in the original tool.

    Raises:
        UnsafePathError: see :func:`check_path_in_repo`.
    """
    check_path_in_repo(path_in_repo)
    relative = (
        path_in_repo[len(strip_prefix) :]
        if strip_prefix and path_in_repo.startswith(strip_prefix)
        else path_in_repo
    )
    check_path_in_repo(relative)
    pure = PurePosixPath(relative)
    relative_id = pure.with_suffix("").as_posix() if pure.suffix else pure.as_posix()
    if relative_id.rsplit("/", 1)[-1] in ("", ".", ".."):
        raise UnsafePathError(f"Refusing remote path {path_in_repo!r}: its file name is only an extension.")
    return relative_id
