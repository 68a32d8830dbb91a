"""Server message tracing (nats-server 2.11+): which connections a message reached.

A message published with the header ``Nats-Trace-Dest: <subject>`` makes every server it
passes through send a JSON report to that subject: the connection it came ``in`` from and
every egress (``eg``) — client connections by name, with subscription and queue group, and
routes, gateways, leaf nodes and JetStream. With ``Nats-Trace-Only: true`` the message is not
delivered, but the report still lists who would have received it. An account's
``msg_trace {dest, sampling}`` setting traces every message carrying a sampled
``traceparent`` (see ``EmbeddedServer(trace_sampling=...)``).

::

    await bus.publish("orders.placed", {...}, trace=True)     # or trace="only"
    await bus.record_message_traces()                         # account-level traces
    trace = bus.trace(); trace.hops                           # one row per hop

Each hop is a ``hop`` observation row: the traced message's headers are in the report, so
hops carry the same ``event_id`` / ``trace_id`` as evtkit's own rows and join with them.
That is how consumers that do not run evtkit still show in :meth:`Trace.flow_graph`
(marked ``seen_by="server"``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import orjson

from .envelope import quoted_block
from .router import Router
from .server import MSG_TRACE_SUBJECT

__all__ = ["MessageTraces", "hop_rows"]

# Event types in a trace report; "eg" egress is refined by the kind of connection.
_EGRESS_KIND = {0: "eg", 1: "rt", 2: "gw", 3: "sys", 4: "leaf"}


def _ns(text: Any) -> int | None:
    """A server timestamp (RFC 3339, ns precision, UTC) as ns since the epoch."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return int(np.datetime64(text.rstrip("Z"), "ns").astype(np.int64))
    except ValueError:
        return None


def _block(header: Any) -> bytes | None:
    """The traced message's headers (``{name: [values]}``) as a NATS header block."""
    if not isinstance(header, dict):
        return None
    return quoted_block((name, value) for name, values in header.items()
                        for value in (values if isinstance(values, list) else [values]))


def hop_rows(report: bytes, observer: str, received_ns: int) -> list[tuple[Any, ...]]:
    """Turn one trace report into ``hop`` observation rows (never raises).

    A report that is not JSON, or not shaped like one, becomes a single ``error`` row
    quoting it, so nothing the server sent is silently lost.
    """
    try:
        body = orjson.loads(report)
        server = body["server"].get("name")
        request = body.get("request") or {}
        events = body["events"]
        if not isinstance(events, list):
            raise TypeError("events is not a list")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        text = report[:300].decode("utf-8", "replace")
        return [("error", received_ns, observer, None, None, None, None, None, None,
                 f"unreadable message-trace report ({exc}): {text}")]
    block = _block(request.get("header"))
    subject = None
    rows = []
    for event in events:
        if not isinstance(event, dict):
            continue
        kind = event.get("type")
        if kind == "in":
            subject = event.get("subj")
            hop = "in"
        elif kind == "eg":
            hop = _EGRESS_KIND.get(event.get("kind"), "eg")  # type: ignore[arg-type]
        elif kind == "js":
            hop = "js"
        else:
            hop = str(kind)
        name = event.get("name") or (event.get("stream") if kind == "js" else None)
        rows.append((
            "hop", _ns(event.get("ts")) or received_ns, observer, name or None,
            event.get("queue") or None,
            (subject or event.get("subj") or "").encode() or None, None, None, block,
            (server, hop, event.get("error") or None),
        ))
    return rows


class MessageTraces:
    """Records the server's trace reports arriving on a subject as ``hop`` rows; see
    :meth:`Bus.record_message_traces`."""

    consumer = None

    def __init__(self, router: Router, subject: str) -> None:
        self.router = router
        self.subject = subject
        self.reports = 0
        extend = router.recorder.rows.extend
        observer = router.name

        def sink(subject: bytes, reply: bytes, data: bytes, block: bytes | None) -> None:
            self.reports += 1
            extend(hop_rows(data, observer, time.time_ns()))

        self.sink = sink

    async def unsubscribe(self, timeout: float | None = None) -> None:
        """Stop recording trace reports."""
        await self.router.detach(self)

    def __repr__(self) -> str:
        return f"<MessageTraces on {self.subject!r}: {self.reports} reports>"


    def request_header(self, *, only: bool) -> str:
        """The header lines that ask the server to trace a message and report to
        :attr:`subject` (``only``: without delivering it)."""
        return f"Nats-Trace-Dest: {self.subject}\r\n" + (
            "Nats-Trace-Only: true\r\n" if only else "")


async def record_message_traces(router: Router, subject: str | None = None) -> MessageTraces:
    """Record trace reports arriving on ``subject`` (default: a new subject of this
    connection's own, for ``publish(trace=...)``); see :meth:`Bus.record_message_traces`."""
    if subject is None:
        subject = f"{MSG_TRACE_SUBJECT}.{router.client.new_inbox().rsplit('.', 1)[-1]}"
    traces = MessageTraces(router, subject)
    await router.attach(traces, subject)
    return traces
