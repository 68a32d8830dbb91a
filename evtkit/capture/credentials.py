"""Credentials stay out of everything evtkit shows: traces, errors, logs and pages.

::

    redact("nats://alice:s3cret@host:4222 refused")   # 'nats://host:4222 refused'
    public_url("tls://token@host:4222")                # 'tls://host:4222'
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["public_url", "redact"]

_URL_IN_TEXT = re.compile(r"([a-z][a-z0-9+.-]*://)[^/@\s]*@", re.IGNORECASE)


def redact(text: str) -> str:
    """Remove credentials (``user:password@``, ``token@``) from every URL in ``text``."""
    return _URL_IN_TEXT.sub(r"\1", text)


def public_url(url: str) -> str:
    """A server URL without user, password or token, for display and traces."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
