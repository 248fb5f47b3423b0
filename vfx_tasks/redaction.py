"""Credentials masked out of any text before it is printed, logged or stored.

A Redis URL carries its password (``redis://:S3cret@host:6379/0``), and error messages quote
URLs. Every message that leaves the process (the commands' errors, failure reasons in the ledger
and the result backend, which Flower shows) goes through :func:`redact` first.

kombu's ``maybe_sanitize_url`` masks one URL known to be a URL; this masks every URL inside a
longer text, also a lone user name (``redis://S3cret@host``, which may be a token) and a
``?password=`` query parameter, both of which kombu's leaves in place.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

#: What replaces a secret: the mask Celery and kombu print in their own banners and logs.
MASK = "**"
#: Shorter secrets are masked only where they sit in a URL.
_MIN_BARE_SECRET_LENGTH = 4

# scheme://user:password@ or scheme://token@ (up to the last "@" before the path, as urlparse
# splits). The password may hold "@" and ":"; it ends at "/", "?", "#", whitespace or a quote.
_USERINFO = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)"
    r"(?:(?P<user>[^:/?#@\s'\"]*):)?(?P<secret>[^/?#\s'\"]*)@"
)
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&](?:password|passwd|pass|token|access_token)=)[^&#\s'\"]*", re.IGNORECASE
)


def _mask_userinfo(match: re.Match[str]) -> str:
    user = match.group("user")
    if user is None:  # a lone name before "@": may be a token, so it goes too
        return f"{match.group('scheme')}{MASK}@"
    return f"{match.group('scheme')}{user}:{MASK}@"


def redact(text: str, *, secrets: Iterable[str] = ()) -> str:
    """``text`` with the password (or lone user name) of every URL in it replaced by ``**``.

    ``secrets`` (say the passwords of this process's own URLs, from :func:`url_passwords`) are
    masked wherever they appear, also where no URL is left around them (a path that quoted a URL
    and lost its ``//`` on the way).

    >>> redact("Cannot reach Redis at redis://:S3cret@10.0.0.5:6379/0 (refused)")
    'Cannot reach Redis at redis://:**@10.0.0.5:6379/0 (refused)'
    """
    for secret in secrets:
        # A password of a few characters would garble every message; it guards nothing anyway.
        if len(secret) >= _MIN_BARE_SECRET_LENGTH:
            text = text.replace(secret, MASK)
    return _QUERY_SECRET.sub(rf"\g<key>{MASK}", _USERINFO.sub(_mask_userinfo, text))


def url_passwords(*urls: str) -> tuple[str, ...]:
    """The passwords in ``urls`` (as written and decoded), for :func:`redact`'s ``secrets``."""
    found: set[str] = set()
    for url in urls:
        try:
            password = urlsplit(url).password
        except ValueError:  # not a URL at all: nothing to take from it
            continue
        if password:
            found |= {password, unquote(password)}
    return tuple(sorted(found, key=len, reverse=True))  # longest first: no half-masked secret
