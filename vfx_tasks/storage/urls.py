"""Object-storage locations (``s3://bucket/prefix``, ``gs://...``, any fsspec URL) as plain strings.

A URL is compared as text, never resolved: object stores have no links and no ``..``, so a
location is inside a root when its text starts with the root's followed by ``/``. That only holds
for canonical URLs, so :func:`normalize_url` refuses what would make two spellings of one place
(empty, ``.`` or ``..`` segments, backslashes, a query or fragment) and what must never travel in
a task message or a ledger entry (credentials before an ``@``).
"""

from __future__ import annotations

import re
import unicodedata

from vfx_tasks.errors import ConfigurationError

#: ``scheme://rest``, the scheme as RFC 3986 spells it.
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)
#: The one scheme that names a local file: taken as the path it spells.
_FILE_SCHEME = "file"


def is_url(location: str) -> bool:
    """Whether ``location`` is a ``scheme://...`` URL other than ``file://`` (a local path otherwise)."""
    match = _URL.fullmatch(str(location))
    return match is not None and match.group(1).lower() != _FILE_SCHEME


def protocol_of(url: str) -> str:
    """The scheme of ``url``, lower case (``s3``, ``gs``)."""
    match = _URL.fullmatch(url)
    if match is None:
        raise ConfigurationError(f"Invalid URL ({url!r}). Use scheme://bucket/prefix, e.g. s3://videos/raw.")
    return match.group(1).lower()


def normalize_url(url: str, *, what: str = "URL") -> str:
    """``url`` in canonical form: scheme lower case, no trailing ``/``.

    Raises:
        ConfigurationError: not a URL, no bucket, credentials in it, a query or fragment, an empty,
            ``.`` or ``..`` segment, a backslash or a control character.
    """
    match = _URL.fullmatch(url)
    if match is None:
        raise ConfigurationError(f"Invalid {what} ({url!r}). Use scheme://bucket/prefix, e.g. s3://videos/raw.")
    scheme, rest = match.group(1).lower(), match.group(2).rstrip("/")
    segments = rest.split("/")
    problems = []
    if not rest:
        problems.append("names no bucket")
    if "@" in segments[0]:
        problems.append("holds credentials (put them in the environment, never in a URL)")
    if any(ch in rest for ch in "?#"):
        problems.append("has a query or fragment")
    if "\\" in rest or any(unicodedata.category(ch) == "Cc" for ch in rest):
        problems.append("holds a backslash or a control character")
    if rest and any(segment in ("", ".", "..") for segment in segments):
        problems.append("has an empty, '.' or '..' segment")
    if problems:
        raise ConfigurationError(
            f"Invalid {what} ({url!r}): it {' and '.join(problems)}. Give scheme://bucket/prefix."
        )
    return f"{scheme}://{rest}"


def url_is_under(url: str, root: str) -> bool:
    """Whether the canonical ``url`` is ``root`` or below it (``s3://b/p`` is not under ``s3://b/pre``)."""
    return url == root or url.startswith(root + "/")


def join_url(url: str, name: str) -> str:
    """``url/name`` for a relative POSIX ``name``."""
    return f"{url}/{name}" if name else url


class UrlPath:
    """A folder's URL where messages show ``folder.path / name``: ``/`` joins, ``str`` shows it.

    ``pathlib`` would fold the ``//`` after the scheme, so a URL keeps its own small type.
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def __truediv__(self, name: str) -> UrlPath:
        return UrlPath(join_url(self.url, str(name)))

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def parent(self) -> UrlPath:
        head, _, _ = self.url.rpartition("/")
        return UrlPath(head) if "://" in head and not head.endswith(":/") else self

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"UrlPath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UrlPath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)
