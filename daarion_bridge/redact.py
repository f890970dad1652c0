"""What may go into logs and error messages: URLs without their credentials."""

from __future__ import annotations

import re

from yarl import URL

# The user part of a URL that yarl cannot parse: everything between `://` and `@`.
_USERINFO = re.compile(r"(?<=://)[^/?#]*@")


def redact_url(url: str, *, user_is_secret: bool = False) -> str:
    """The URL with its password hidden, and its user too where that is a token (NATS:
    `nats://token@host`). A URL that cannot be parsed loses its whole user part."""
    try:
        parsed = URL(url)
        if parsed.password:
            return str(parsed.with_password("***"))
        if parsed.user and user_is_secret:
            return str(parsed.with_user("***"))
        return url
    except ValueError:
        return _USERINFO.sub("***@", url)
