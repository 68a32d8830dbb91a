"""The event envelope: CloudEvents attributes and causality, read from one NATS message.

Wire conventions (see ``shared/design.md``): CloudEvents NATS binding in binary mode (one
``ce-`` header per attribute) or structured mode (``Content-Type:
application/cloudevents+json``), the extension attributes ``correlationid`` (the flow) and
``causationid`` (the direct parent event), and a W3C ``traceparent``.

Reading never raises: a missing or malformed attribute leaves the field empty, and an event
without a usable causation id is a root. A message with no id at all gets a synthetic one
(``syn-…``), derived from its bytes so two observers of the same message agree.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from ._headers import ParsedBlock, parse_block

__all__ = ["Event", "decode_message", "media_type", "parse_traceparent"]

SPECVERSION = "1.0"
STRUCTURED = "application/cloudevents+json"
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
# RFC 3339 date-time, as CloudEvents requires for ``time``; also used on whole columns.
RFC3339 = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_RFC3339 = re.compile(RFC3339)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# CloudEvents attributes evtkit reads (``ce-<name>`` in binary mode, ``<name>`` in JSON).
_ATTRS = ("id", "type", "source", "time", "datacontenttype", "correlationid", "causationid")


def parse_traceparent(value: str | None) -> tuple[str, str, bool] | None:
    """Split a W3C ``traceparent`` into (trace id, parent id, sampled); None if malformed.

    Follows the W3C rules: version ``ff`` and all-zero ids are invalid, and a version
    other than ``00`` may carry more fields after the four we read.
    """
    if not value:
        return None
    value = value.strip(" \t")
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    rest = value[match.end() :]
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    if rest and (version == "00" or not rest.startswith("-")):
        return None
    return trace_id, parent_id, bool(int(flags, 16) & 1)


def synthetic_id(subject: bytes, block: bytes | None, payload: bytes, occurrence: int) -> str:
    """Id for a message that carries none: a digest of its bytes and how often it was seen."""
    return f"syn-{_digest(subject, block, payload)}-{occurrence}"


def _digest(subject: bytes, block: bytes | None, payload: bytes) -> str:
    digest = hashlib.blake2b(subject, digest_size=8)
    digest.update(b"\0")
    digest.update(block or b"")
    digest.update(b"\0")
    digest.update(payload)
    return digest.hexdigest()


def names_an_id(block: bytes | None) -> bool:
    """Whether a header block has a ``ce-id`` line (any case), so the message needs no
    synthetic id. A value that merely contains ``ce-id:`` does not count."""
    if block is None:
        return False
    if b"\nce-id:" in block:  # how evtkit and most publishers write it: one cheap test
        return True
    return b"\nce-id:" in block.lower()


class SyntheticIds:
    """Hands out :func:`synthetic_id` values, counting repeats of identical messages.

    One per observer: two observers that saw the same messages give them the same ids.
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def for_message(self, subject: bytes, block: bytes | None, payload: bytes) -> str | None:
        """A synthetic id for a message without a ``ce-id`` header; None when it has one."""
        return None if names_an_id(block) else self(subject, block, payload)

    def __call__(self, subject: bytes, block: bytes | None, payload: bytes) -> str:
        digest = _digest(subject, block, payload)
        n = self._seen.get(digest, 0)
        self._seen[digest] = n + 1
        return f"syn-{digest}-{n}"


# Times a trace can hold: nanoseconds since the epoch in an int64 (1677-09-21 to 2262-04-11).
EARLIEST = datetime(1677, 9, 22, tzinfo=UTC)
LATEST = datetime(2262, 4, 11, tzinfo=UTC)
"""The days a ``ce-time`` may fall on: those whose every nanosecond fits an int64."""


def parse_time(value: str | None) -> datetime | None:
    """RFC 3339 ``ce-time`` to an aware UTC datetime; None if missing, malformed, or outside
    the years a trace can hold (1677-09-22 to 2262-04-11, nanoseconds in an int64).

    Fractions finer than a microsecond are cut (datetime's resolution); frames keep ns.
    """
    if not value or not _RFC3339.fullmatch(value.strip(" \t")):
        return None
    text = value.strip(" \t").upper().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:min(digits, 6)].ljust(6, '0')}{rest[digits:]}"
    try:  # year 9999 at -01:00 is a valid RFC 3339 time past datetime's own range
        when = datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return when if EARLIEST <= when < LATEST else None


@dataclass(frozen=True, slots=True)
class Event:
    """One event as a handler sees it.

    Attributes:
        id: the CloudEvents id (``syn-…`` when the message carried none).
        subject: the NATS subject it arrived on.
        type: CloudEvents ``type`` (None if absent).
        source: CloudEvents ``source``: the producing service.
        time: CloudEvents ``time`` as an aware UTC datetime (None if absent or malformed).
        correlation_id: the flow this event belongs to (its own id for a root event).
        causation_id: id of the event that caused this one; None for a root event.
        trace_id: W3C trace id from ``traceparent`` (None if absent or malformed).
        parent_id: W3C parent span id from ``traceparent``.
        sampled: W3C sampled flag from ``traceparent`` (None without a valid one).
        content_type: media type of :attr:`raw` (``datacontenttype``).
        raw: the payload bytes, as received (for structured mode: the ``data`` part).
        block: the raw NATS header block, as on the wire (see :attr:`headers`).
        reply: the reply subject, if any.
        mode: ``binary``, ``structured`` or ``bare`` (no CloudEvents attributes).
        synthetic_id: True when :attr:`id` was made up because the message had none.
        stream: the JetStream stream that stored it (JetStream publishes and deliveries).
        stream_seq: its sequence number in that stream.
        delivery_count: for a JetStream delivery, how many times it has been delivered
            (1 = the first time; more means redelivered after a nak or an ack timeout).
    """

    id: str
    subject: str
    type: str | None = None
    source: str | None = None
    time: datetime | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    trace_id: str | None = None
    parent_id: str | None = None
    sampled: bool | None = None
    content_type: str | None = None
    raw: bytes = b""
    block: bytes | None = None
    reply: str | None = None
    mode: str = "bare"
    synthetic_id: bool = False
    stream: str | None = None
    stream_seq: int | None = None
    delivery_count: int | None = None

    @property
    def data(self) -> Any:
        """The payload decoded by content type: JSON → objects, text → str, else bytes.

        Undecodable payloads are returned as bytes, never an exception.
        """
        return decode_data(self.raw, self.content_type)

    @property
    def headers(self) -> dict[str, str]:
        """Every NATS header of the message, in order (first value of a repeated name)."""
        return parse_block(self.block).headers

    @property
    def is_root(self) -> bool:
        """True when nothing (known) caused this event."""
        return not self.causation_id

    def __repr__(self) -> str:
        return (
            f"Event(id={self.id!r}, subject={self.subject!r}, type={self.type!r}, "
            f"source={self.source!r}, causation_id={self.causation_id!r}, "
            f"size={len(self.raw)})"
        )


def decode_data(raw: bytes, content_type: str | None) -> Any:
    """Decode a payload by its media type; bytes come back unchanged when that fails."""
    media = media_type(content_type)
    if media == JSON or media.endswith("+json"):
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested too deep to build
            return raw
    if media.startswith("text/"):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    return raw


def media_type(content_type: str | None) -> str:
    """The media type of a content type, lower case, without parameters
    (``application/json; charset=utf-8`` → ``application/json``)."""
    return (content_type or "").split(";")[0].strip(" \t").lower()


def structured_envelope(payload: bytes) -> dict[str, Any] | None:
    """The JSON object of a structured-mode CloudEvent, or None if it is not one."""
    try:
        envelope = json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to build
        return None
    return envelope if isinstance(envelope, dict) else None


def _text(value: Any) -> str | None:
    """A CloudEvents attribute as a non-empty string, else None (malformed → absent)."""
    if isinstance(value, str):
        value = value.strip(" \t")
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def decode_message(
    subject: str,
    payload: bytes,
    block: bytes | None,
    *,
    reply: str | None = None,
    synthetic: str | None = None,
) -> Event:
    """Build an :class:`Event` from one NATS message; never raises.

    Args:
        subject: the subject it arrived on.
        payload: the message data.
        block: the raw header block (``NATS/1.0\\r\\n…``), or None.
        reply: the reply subject.
        synthetic: the id to use when the message carries none (see :func:`synthetic_id`).
    """
    parsed: ParsedBlock = parse_block(block)
    attrs: dict[str, Any] = {name: parsed.get("ce-" + name) for name in _ATTRS}
    raw = payload
    mode = "binary" if parsed.get("ce-id") or parsed.get("ce-specversion") else "bare"
    content_type = parsed.get("content-type")
    if media_type(content_type) == STRUCTURED:
        envelope = structured_envelope(payload)
        if envelope is not None:
            mode = "structured"
            for key in _ATTRS:
                attrs[key] = attrs[key] or _text(envelope.get(key))
            attrs["traceparent"] = _text(envelope.get("traceparent"))
            raw = _structured_data(envelope, raw)
    trace = parse_traceparent(parsed.get("traceparent") or attrs.get("traceparent"))
    given_id = _text(attrs["id"])
    event_id = given_id or synthetic or synthetic_id(subject.encode(), block, payload, 0)
    if mode != "structured":
        attrs["datacontenttype"] = attrs["datacontenttype"] or content_type
    position = js_position(reply.encode()) if reply else None
    return Event(
        id=event_id,
        subject=subject,
        type=_text(attrs["type"]),
        source=_text(attrs["source"]),
        time=parse_time(attrs["time"]),
        correlation_id=_text(attrs["correlationid"]) or (trace[0] if trace else event_id),
        causation_id=_text(attrs["causationid"]),
        trace_id=trace[0] if trace else None,
        parent_id=trace[1] if trace else None,
        sampled=trace[2] if trace else None,
        content_type=_text(attrs["datacontenttype"]),
        raw=raw,
        block=block,
        reply=reply or None,
        mode=mode,
        synthetic_id=given_id is None,
        stream=position.stream if position else None,
        stream_seq=position.stream_seq if position else None,
        delivery_count=position.delivery_count if position else None,
    )


class JsPosition(NamedTuple):
    """Where a JetStream delivery sits, as its ack subject states it."""

    stream: str
    consumer: str
    delivery_count: int
    stream_seq: int
    consumer_seq: int
    pending: int


def js_position(reply: bytes) -> JsPosition | None:
    """Read a JetStream ack subject; None for anything else (never raises).

    Two forms exist: ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``
    and, from newer servers, the same with ``<domain>.<account hash>`` before the stream and
    a random token after.
    """
    if not reply.startswith(b"$JS.ACK."):
        return None
    tokens = reply.split(b".")
    if len(tokens) == 9:
        names, numbers = tokens[2:4], tokens[4:9]
    elif len(tokens) >= 11:
        names, numbers = tokens[4:6], tokens[6:11]
    else:
        return None
    try:
        delivered, sseq, cseq, _ts, pending = (int(t) for t in numbers)
    except ValueError:
        return None
    stream, consumer = (t.decode("utf-8", "replace") for t in names)
    return JsPosition(stream, consumer, delivered, sseq, cseq, pending)


def _structured_data(envelope: dict[str, Any], raw: bytes) -> bytes:
    """The ``data`` (or ``data_base64``) member of a structured event, as bytes."""
    if "data_base64" in envelope:
        try:
            return base64.b64decode(envelope["data_base64"], validate=True)
        except (ValueError, TypeError):
            return raw
    if "data" not in envelope:
        return b""
    data = envelope["data"]
    if isinstance(data, str):
        return data.encode("utf-8")
    return json.dumps(data, separators=(",", ":")).encode("utf-8")
