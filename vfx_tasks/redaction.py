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

#: What replaces a secret: the mask Celery and kombu print in their own banners and logs.
MASK = "**"

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


def redact(text: str) -> str:
    """``text`` with the password (or lone user name) of every URL in it replaced by ``**``.

    >>> redact("Cannot reach Redis at redis://:S3cret@10.0.0.5:6379/0 (refused)")
    'Cannot reach Redis at redis://:**@10.0.0.5:6379/0 (refused)'
    """
    return _QUERY_SECRET.sub(rf"\g<key>{MASK}", _USERINFO.sub(_mask_userinfo, text))
