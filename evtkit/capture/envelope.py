"""The envelope of an outgoing message: its header block and payload bytes.

The one place evtkit builds NATS header blocks (:func:`header_block`): for its own
publishes (:func:`envelope`, CloudEvents binary mode plus causality), for messages nats-py
hands over as a dict (:func:`block_from_dict`), for trace reports that quote a message's
headers, and for replays (:func:`with_header`). Everything a caller passes in is checked
here (subject, header names and values, payload type), so a bad value is a
:class:`~evtkit.errors.PublishError` before anything reaches the wire.

A header block on the wire::

    NATS/1.0\\r\\n
    key: value\\r\\n
    ...
    \\r\\n
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from random import getrandbits
from typing import Any

import orjson

from .._headers import CRLF, STATUS_LINE
from ..errors import PublishError
from ..event import BINARY, JSON, SPECVERSION, TEXT, Event

__all__ = ["MANAGED", "Clock", "block_from_dict", "check_subject", "check_value",
           "encode_extra", "encode_payload", "envelope", "header_block", "with_header"]

MANAGED = frozenset(
    {"ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-datacontenttype",
     "ce-correlationid", "ce-causationid", "traceparent"}
)
"""Headers evtkit sets itself on publish; callers set them through keyword arguments."""

# The same rule nats-py applies to header keys (printable ASCII except ':'), so a block we
# build ourselves is one nats-py would have built.
_KEY_RE = re.compile(r"[!-9;-~]+")
_BAD_VALUE = re.compile(r"[\r\n]")
_BAD_SUBJECT = re.compile(r"[\s]")
_STATUS = STATUS_LINE.decode() + "\r\n"


def check_subject(subject: str) -> str:
    """Return ``subject`` if it can be published to; raise :class:`PublishError` if not."""
    if not subject or _BAD_SUBJECT.search(subject):
        raise PublishError(f"subject {subject!r} is empty or contains whitespace")
    return subject


def check_value(name: str, value: str) -> str:
    """Return ``value`` if it can go into a header; raise :class:`PublishError` if not."""
    if _BAD_VALUE.search(value):
        raise PublishError(f"header {name!r} value {value!r} contains a line break")
    return value


def header_block(lines: str, errors: str = "strict") -> bytes:
    """The wire block for header ``lines`` (``"key: value\\r\\n"`` each, already checked)."""
    return f"{_STATUS}{lines}\r\n".encode("utf-8", errors)


def encode_extra(headers: Mapping[str, str] | None) -> str:
    """Encode user headers as ``key: value\\r\\n`` lines, checking keys and values.

    Raises:
        PublishError: a key is empty or has characters NATS does not allow, or a value
            contains a line break (which would let it inject other headers).
    """
    if not headers:
        return ""
    parts = []
    for key, value in headers.items():
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
            raise PublishError(
                f"header name {key!r} is not allowed: use printable ASCII without ':' or spaces"
            )
        if not isinstance(value, str):
            raise PublishError(f"header {key!r} value must be str, not {type(value).__name__}")
        parts.append(f"{key}: {check_value(key, value.strip())}\r\n")
    return "".join(parts)


def block_from_dict(headers: Mapping[str, str] | None) -> bytes | None:
    """Build a wire header block from a dict (as nats-py hands it to callbacks)."""
    if not headers:
        return None
    return header_block("".join(f"{k}: {v}\r\n" for k, v in headers.items() if k),
                        "surrogateescape")


_UNSAFE = str.maketrans({"\r": " ", "\n": " "})


def quoted_block(headers: Iterable[tuple[Any, Any]]) -> bytes | None:
    """A header block quoting untrusted ``(name, value)`` pairs (e.g. from a server report):
    line breaks become spaces, so no pair can add lines of its own."""
    lines = "".join(f"{str(k).translate(_UNSAFE)}: {str(v).translate(_UNSAFE)}\r\n"
                    for k, v in headers)
    return header_block(lines, "replace") if lines else None


def with_header(block: bytes | None, name: str, value: str) -> bytes:
    """``block`` with one more header line (a new block if there is none)."""
    line = f"{name}: {check_value(name, value)}\r\n".encode()
    if not block:
        return STATUS_LINE + CRLF + line + CRLF
    if block.endswith(CRLF + CRLF):
        return block[:-2] + line + CRLF
    return block + CRLF + line + CRLF  # a block without the closing blank line


def encode_payload(data: Any) -> tuple[bytes, str]:
    """Payload bytes and their media type: dict/list → JSON, str → UTF-8, bytes as is."""
    if isinstance(data, bytes):
        return data, BINARY
    if isinstance(data, str):
        return data.encode("utf-8"), TEXT
    if isinstance(data, bytearray | memoryview):
        return bytes(data), BINARY
    if data is None:
        return b"", BINARY
    try:
        return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), JSON
    except TypeError as exc:
        raise PublishError(
            f"cannot encode {type(data).__name__} as a payload ({exc}); pass bytes, str, "
            "or something JSON can represent"
        ) from exc


class Clock:
    """Formats ``ce-time`` cheaply: the seconds part is reused within a second."""

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def rfc3339(self, ns: int) -> str:
        """``ns`` since the epoch as RFC 3339 UTC text with microseconds."""
        second, rest = divmod(ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{rest // 1000:06d}Z"


def envelope(subject: str, data: Any, *, time_text: str, source: str, type: str | None,
             cause: Event | str | None, content_type: str | None,
             headers: Mapping[str, str] | None, extra: str = "", reply: str | None = None
             ) -> Event:
    """The event evtkit publishes: new ids, CloudEvents attributes, causality taken from
    ``cause`` (an event, or only its id), and its header block and payload bytes.

    Args:
        time_text: ``ce-time`` (from :meth:`Clock.rfc3339`).
        source: ``ce-source`` (checked by the caller).
        type: ``ce-type``; default the subject.
        cause: the event that caused this one, or its id; None for a root event.
        content_type: overrides the media type implied by ``data``.
        headers: the caller's own headers (not the managed ones).
        extra: further header lines evtkit adds (message tracing).

    Raises:
        PublishError: a bad subject, header or data type.
    """
    check_subject(subject)
    payload, implied = encode_payload(data)
    # The subject is already free of line breaks; only caller-given text is checked.
    content_type = implied if content_type is None else check_value("content_type",
                                                                     content_type)
    event_type = subject if type is None else check_value("type", type)
    event_id = f"{getrandbits(64):016x}"
    causation_id: str | None
    if cause is None:
        trace_id = correlation_id = f"{getrandbits(128):032x}"
        causation_id = None
    elif isinstance(cause, Event):
        correlation_id = cause.correlation_id or cause.id
        trace_id = cause.trace_id or f"{getrandbits(128):032x}"
        causation_id = cause.id
    else:
        correlation_id = causation_id = check_value("cause", str(cause))
        trace_id = f"{getrandbits(128):032x}"
    if headers:
        managed = sorted(MANAGED.intersection(k.lower() for k in headers))
        if managed:
            raise PublishError(f"headers {managed} are set by evtkit; use type=, source=, "
                               "cause= or content_type= instead")
        extra = encode_extra(headers) + extra
    causation = f"ce-causationid: {causation_id}\r\n" if causation_id else ""
    block = header_block(
        f"ce-specversion: {SPECVERSION}\r\nce-id: {event_id}\r\n"
        f"ce-source: {source}\r\nce-type: {event_type}\r\n"
        f"ce-time: {time_text}\r\nce-datacontenttype: {content_type}\r\n"
        f"ce-correlationid: {correlation_id}\r\n{causation}"
        f"traceparent: 00-{trace_id}-{event_id}-01\r\n{extra}"
    )
    return Event(id=event_id, subject=subject, type=event_type, source=source, time=None,
                 correlation_id=correlation_id, causation_id=causation_id, trace_id=trace_id,
                 parent_id=event_id, sampled=True, content_type=content_type, raw=payload,
                 block=block, reply=reply, mode="binary")
