"""The bus: publish and subscribe over NATS while recording every event and delivery.

::

    import evtkit as ek

    bus = await ek.connect()                 # NATS_URL, else an embedded nats-server
    async def reserve(event):
        await bus.publish("inventory.reserved", {"order": event.data["order"]})
    await bus.subscribe("orders.placed", reserve, consumer="inventory")
    await bus.publish("orders.placed", {"order": 1}, source="shop")
    trace = bus.trace()                      # pandas frames inside

Published events carry CloudEvents binary-mode headers, ``ce-correlationid`` /
``ce-causationid`` and a W3C ``traceparent``. Inside a handler, whatever the handler
publishes is caused by the event it is handling (a context variable carries it), so
instrumenting a service is one ``subscribe`` call.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from importlib.metadata import version
from random import getrandbits
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats
import orjson
from nats.aio.client import Client
from nats.errors import SlowConsumerError

from . import _fastpath, env
from ._headers import block_from_dict, check_value, encode_extra, parse_block
from .errors import ConnectError, PayloadTooLargeError, PublishError
from .event import BINARY, JSON, SPECVERSION, TEXT, Event, SyntheticIds, decode_message
from .recorder import Recorder
from .server import EmbeddedServer

__all__ = ["Bus", "Subscription", "Tap", "connect", "current_event", "redact"]

log = logging.getLogger("evtkit")

Handler = Callable[[Event], Awaitable[Any] | Any]

DEFAULT_PENDING_MSGS = 524_288
"""Messages a subscription may hold before its handler takes them (nats-py's default)."""
DEFAULT_PENDING_BYTES = 128 * 1024 * 1024
"""Payload bytes a subscription may hold before its handler takes them (nats-py's)."""

# While a handler runs: (the event, consumer name, seq of its receive row), so what the
# handler publishes is caused by the event and attributed to exactly that delivery.
_CURRENT: contextvars.ContextVar[tuple[Event, str, int] | None] = contextvars.ContextVar(
    "evtkit_current_delivery", default=None
)
# evtkit manages these headers itself; callers set them through keyword arguments.
_MANAGED = frozenset(
    {"ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-datacontenttype",
     "ce-correlationid", "ce-causationid", "traceparent"}
)
_BAD_SUBJECT = re.compile(r"[\s]")
_URL_IN_TEXT = re.compile(r"([a-z][a-z0-9+.-]*://)[^/@\s]*@", re.IGNORECASE)


def current_event() -> Event | None:
    """The event whose handler is running in this task, or None outside handlers."""
    handling = _CURRENT.get()
    return handling[0] if handling is not None else None


def redact(text: str) -> str:
    """Remove credentials (``user:password@``, ``token@``) from every URL in ``text``."""
    return _URL_IN_TEXT.sub(r"\1", text)


def _public_url(url: str) -> str:
    """A server URL without user, password or token, for display and traces."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _server_version(nc: Client) -> str | None:
    """The server's version string, e.g. ``2.15.1`` (nats-py only exposes it as text)."""
    match = re.search(r"v(\d[^\s>]*)", str(nc.connected_server_version))
    return match.group(1) if match else None


class _Clock:
    """Formats ``ce-time`` cheaply: the seconds part is reused within a second."""

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def rfc3339(self, ns: int) -> str:
        second, rest = divmod(ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{rest // 1000:06d}Z"


def _encode(data: Any) -> tuple[bytes, str]:
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


class Bus:
    """A named NATS connection that records everything it publishes, receives and taps.

    Create it with :func:`connect`. Use ``async with`` (or ``await`` and later
    :meth:`close`). See the module docstring for an example.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        name: str = "evtkit",
        source: str | None = None,
        recorder: Recorder | None = None,
        fast: bool = True,
        connect_timeout: float = 5.0,
        telemetry: float | None = None,
        **nats_options: Any,
    ) -> None:
        self.name = name
        self.source = check_value("source", source or name)
        self.recorder = recorder or Recorder()
        self.server: EmbeddedServer | None = None
        self.nc: Client | None = None
        self._url = url
        self.url: str | None = None
        self._fast = fast and _fastpath.available()
        self._dispatcher: _fastpath.Dispatcher | None = None
        self._connect_timeout = connect_timeout
        self._options = nats_options
        self._subs: dict[int, Any] = {}
        self._owners: list[Any] = []  # what else close() must stop (pull consumers, watches)
        self._clock = _Clock()
        self._opened = False
        self._trace_dest: str | None = None
        self._telemetry = telemetry

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> Bus:
        """Connect (starting the embedded server when there is no URL); return ``self``."""
        if self._opened:
            return self
        interval = self._telemetry_interval()  # a bad setting fails before connecting
        url = self._url or os.environ.get(env.NATS_URL)
        if not url:
            self.server = await EmbeddedServer().start()
            url = self.server.url
        assert url is not None
        servers = [u.strip() for u in url.split(",") if u.strip()]
        self.url = ",".join(_public_url(u) for u in servers)
        self.nc = Client()
        options = dict(self._options)
        user_cbs = {k: options.pop(k, None) for k in
                    ("error_cb", "disconnected_cb", "reconnected_cb")}
        try:
            await asyncio.wait_for(
                self.nc.connect(
                    servers,
                    name=self.name,
                    error_cb=self._chain(self._on_error, user_cbs["error_cb"]),
                    disconnected_cb=self._chain(self._on_disconnect, user_cbs["disconnected_cb"]),
                    reconnected_cb=self._chain(self._on_reconnect, user_cbs["reconnected_cb"]),
                    **options,
                ),
                self._connect_timeout,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            await self._abandon()
            reason = self._last_error() or redact(str(exc)) or type(exc).__name__
            raise ConnectError(
                f"could not connect to NATS at {self.url} within {self._connect_timeout:g} s: "
                f"{reason}",
                url=self.url or "",
            ) from None
        except BaseException:
            await self._abandon()
            raise
        if self._fast:
            self._dispatcher = _fastpath.Dispatcher(self.nc)
        self.recorder.metadata.update(self._metadata())
        self._opened = True
        if interval is not None:
            await self.send_telemetry(interval)
        return self

    def _telemetry_interval(self) -> float | None:
        if self._telemetry is not None:
            if self._telemetry < 0:
                raise ValueError(f"telemetry must be seconds > 0 (or 0: off), not "
                                 f"{self._telemetry}")
            return self._telemetry or None  # 0: off, whatever the environment says
        text = os.environ.get(env.EVTKIT_TELEMETRY)
        if not text:
            return None
        try:
            interval = float(text)
        except ValueError:
            interval = -1.0
        if not interval > 0:
            raise ValueError(f"{env.EVTKIT_TELEMETRY}={text!r} must be a number of seconds > 0")
        return interval

    def __await__(self) -> Generator[Any, None, Bus]:
        return self.open().__await__()

    async def __aenter__(self) -> Bus:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, timeout: float = 10.0) -> None:
        """Let handlers finish what they hold (for at most ``timeout`` seconds each), drain
        the connection, stop an embedded server."""
        for owner in dict.fromkeys([*self._subs.values(), *self._owners]):
            await owner.unsubscribe(timeout=timeout)
        self._owners.clear()
        self._opened = False
        if self.nc is not None and not self.nc.is_closed:
            try:  # nats-py's own drain timeout is 30 s; close() promises `timeout`
                await asyncio.wait_for(self.nc.drain(), timeout)
            except (TimeoutError, nats.errors.Error, OSError):
                await self.nc.close()
        await self._abandon()

    async def _abandon(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until the server has everything published so far."""
        await self._client().flush(timeout)

    def _client(self) -> Client:
        if self.nc is None or not self._opened:
            raise ConnectError("the bus is not connected: `await bus` or use `async with`")
        return self.nc

    def _metadata(self) -> dict[str, Any]:
        nc = self._client() if self._opened else self.nc
        assert nc is not None
        return {
            "server_url": self.url,
            "server_version": _server_version(nc),
            "client": self.name,
            "nats_py_version": version("nats-py"),
            "fast_path": self._fast,
            "embedded_server": self.server is not None,
        }

    # -- publish ---------------------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        data: Any = b"",
        *,
        type: str | None = None,
        source: str | None = None,
        headers: dict[str, str] | None = None,
        cause: Event | str | None = None,
        content_type: str | None = None,
        reply: str | None = None,
        jetstream: bool = False,
        timeout: float = 5.0,
        trace: bool | str = False,
    ) -> Event:
        """Publish one event and record it.

        Args:
            subject: NATS subject.
            data: dict/list → JSON, ``str`` → UTF-8 text, ``bytes`` → as is.
            type: CloudEvents type; defaults to the subject.
            source: CloudEvents source; defaults to the bus's ``source`` (its name).
            headers: extra NATS headers (the ``ce-*`` and ``traceparent`` ones are evtkit's).
            cause: the event that caused this one (an :class:`Event`, or an id). Inside a
                handler it defaults to the event being handled. With only an id, the
                correlation id starts at that id.
            content_type: media type, overriding the one implied by ``data``.
            reply: reply subject.
            jetstream: publish through JetStream and wait (up to ``timeout`` s) for the
                stream to store it; the event and the publish row get stream and sequence.
            trace: ask the server to trace this message (nats-server 2.11+): its report
                becomes ``hop`` rows (``trace.hops``). ``"only"`` traces without
                delivering: the hops say who *would* receive it. The first traced publish
                subscribes the bus to its report subject; in a cluster, other servers can
                report once that interest has crossed the routes (milliseconds).

        Returns:
            The published :class:`Event` (pass it as ``cause=`` to chain events).

        Raises:
            PublishError: bad subject, header or data type; with ``jetstream``, no stream
                stores the subject or it did not answer in time.
            PayloadTooLargeError: larger than the server's ``max_payload``.
        """
        nc = self._client()
        if not subject or _BAD_SUBJECT.search(subject):
            raise PublishError(f"subject {subject!r} is empty or contains whitespace")
        payload, implied = _encode(data)
        # The subject is already free of line breaks; only caller-given text is checked.
        content_type = implied if content_type is None else check_value("content_type",
                                                                         content_type)
        event_type = subject if type is None else check_value("type", type)
        source = self.source if source is None else check_value("source", source)
        handling = _CURRENT.get()
        if cause is None and handling is not None:
            cause = handling[0]
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
        causation = f"ce-causationid: {causation_id}\r\n" if causation_id else ""
        extra = ""
        if headers:
            if _MANAGED.intersection(k.lower() for k in headers):
                raise PublishError(
                    f"headers {sorted(_MANAGED.intersection(k.lower() for k in headers))} are "
                    "set by evtkit; use type=, source=, cause= or content_type= instead"
                )
            extra = encode_extra(headers)
        if trace:
            if trace not in (True, "only"):
                raise PublishError(f"trace= must be True or 'only', not {trace!r}")
            extra += await self._trace_header(only=trace == "only")
        ts = time.time_ns()
        block = (
            f"NATS/1.0\r\nce-specversion: {SPECVERSION}\r\nce-id: {event_id}\r\n"
            f"ce-source: {source}\r\nce-type: {event_type}\r\n"
            f"ce-time: {self._clock.rfc3339(ts)}\r\nce-datacontenttype: {content_type}\r\n"
            f"ce-correlationid: {correlation_id}\r\n{causation}"
            f"traceparent: 00-{trace_id}-{event_id}-01\r\n{extra}\r\n"
        ).encode()
        if len(block) + len(payload) > nc.max_payload:
            raise PayloadTooLargeError(subject, len(block) + len(payload), nc.max_payload)
        subject_b = subject.encode()
        reply_b = reply.encode() if reply else b""
        stored: tuple[str, int] | tuple[None, None] = (None, None)
        if jetstream:
            from .jetstream import publish_acked

            stored = await publish_acked(self, subject, payload, block, timeout)
        elif not (self._fast and await _fastpath.publish(nc, subject_b, reply_b, block,
                                                         payload)):
            await nc.publish(subject, payload, reply=reply or "",
                             headers=parse_block(block).headers)
        handler, ref = (handling[1], handling[2]) if handling is not None else (None, None)
        self.recorder.rows.append(
            ("publish", ts, self.name, handler, None, subject_b, reply_b or None, payload, block,
             (ref, *stored) if jetstream else ref)
        )
        return Event(
            id=event_id,
            subject=subject,
            type=event_type,
            source=source,
            time=None,
            correlation_id=correlation_id,
            causation_id=causation_id,
            trace_id=trace_id,
            parent_id=event_id,
            sampled=True,
            content_type=content_type,
            raw=payload,
            block=block,
            reply=reply,
            mode="binary",
            stream=stored[0],
            stream_seq=stored[1],
        )

    async def send_raw(self, subject: str, payload: bytes, block: bytes | None, *,
                       reply: str | None = None) -> None:
        """Send a message with a ready-made header block, byte for byte, unrecorded.

        For tools that re-send captured messages (replay); everything else should use
        :meth:`publish`. The block must be a valid NATS header block (or None).

        Raises:
            PublishError: a bad subject.
            PayloadTooLargeError: larger than the server's ``max_payload``.
        """
        nc = self._client()
        if not subject or _BAD_SUBJECT.search(subject):
            raise PublishError(f"subject {subject!r} is empty or contains whitespace")
        size = len(block or b"") + len(payload)
        if size > nc.max_payload:
            raise PayloadTooLargeError(subject, size, nc.max_payload)
        if block is None:
            await nc.publish(subject, payload, reply=reply or "")
        elif not (self._fast and await _fastpath.publish(
                nc, subject.encode(), (reply or "").encode(), block, payload)):
            await nc.publish(subject, payload, reply=reply or "",
                             headers=parse_block(block).headers)

    # -- subscribe and tap -----------------------------------------------------------------

    async def subscribe(
        self,
        subject: str,
        handler: Handler,
        *,
        consumer: str,
        queue: str | None = None,
        pending_msgs: int = DEFAULT_PENDING_MSGS,
        pending_bytes: int = DEFAULT_PENDING_BYTES,
    ) -> Subscription:
        """Run ``handler(event)`` for each message on ``subject``, recording each delivery.

        The recorder notes when the message was read from the socket, when the handler
        started and finished, and whether it raised. A failing handler is recorded and the
        subscription carries on. Messages beyond the pending limits are dropped, counted,
        and recorded as deliveries with outcome ``dropped``.

        Args:
            subject: subject or wildcard.
            handler: ``async def handler(event)`` (a plain function works too).
            consumer: the consumer's name (the service), used in every delivery row.
            queue: queue group; members share the messages.
            pending_msgs: most messages held for the handler before dropping.
            pending_bytes: most payload bytes held for the handler before dropping.
        """
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        if not consumer:
            raise ValueError("consumer= must name the consuming service")
        sub = Subscription(self, subject, handler, consumer, queue, pending_msgs, pending_bytes)
        await self._attach(sub, subject, queue)
        return sub

    async def tap(self, *subjects: str, name: str | None = None) -> Tap:
        """Passively record every message on ``subjects`` (default ``>``: everything).

        Works for publishers that do not use evtkit: CloudEvents binary and structured mode
        and ``traceparent`` are understood, and bare messages get synthetic ids. NATS's
        and evtkit's own machinery subjects (``$JS.``, ``$SYS.``, ``_EVTKIT.``...) are left
        out (and counted in ``tap.skipped``) unless you tap them by name.

        Args:
            subjects: subjects or wildcards to capture.
            name: observer name in the trace (default: the bus name).
        """
        tap = Tap(self, subjects or (">",), name or self.name)
        for subject in tap.subjects:
            await self._attach(tap, subject, None)
        return tap

    async def _attach(self, owner: Subscription | Tap, subject: str, queue: str | None) -> None:
        nc = self._client()
        if self._dispatcher is not None:
            nsub = await nc.subscribe(subject, queue=queue or "", cb=_never)
            self._dispatcher.route(nsub._id, owner.sink)
        else:
            async def callback(msg: Any) -> None:
                owner.sink(msg.subject.encode(), msg.reply.encode(), msg.data,
                           block_from_dict(msg.headers))
            nsub = await nc.subscribe(
                subject, queue=queue or "", cb=callback,
                pending_msgs_limit=DEFAULT_PENDING_MSGS, pending_bytes_limit=-1,
            )
        owner._nats_subs.append(nsub)
        self._subs[nsub._id] = owner
        await nc.flush()

    async def _detach(self, owner: Any) -> None:
        """Stop ``owner``'s subscriptions without losing what is in flight: drain each
        (UNSUB, then a round trip, so the server has sent everything it routed before)
        while its messages still reach the owner, and only then stop routing them."""
        for nsub in owner._nats_subs:
            if self.nc is not None and not self.nc.is_closed and not self.nc.is_draining:
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    await asyncio.wait_for(nsub.drain(), 5.0)
            self._subs.pop(nsub._id, None)
            if self._dispatcher is not None:
                self._dispatcher.unroute(nsub._id)
        owner._nats_subs.clear()

    # -- what the server knows ------------------------------------------------------------------

    async def record_message_traces(self, subject: str | None = None) -> Any:
        """Record the server's message-trace reports arriving on ``subject`` as ``hop``
        rows (default :data:`evtkit.MSG_TRACE_SUBJECT`, where an embedded server started
        with ``trace_sampling`` sends them). Publishing with ``trace=True`` does this by
        itself, on a subject of its own.

        Returns:
            an :class:`evtkit.msgtrace.MessageTraces` (stopped when the bus closes).
        """
        from .msgtrace import record_message_traces
        from .server import MSG_TRACE_SUBJECT

        return await record_message_traces(self, subject or MSG_TRACE_SUBJECT)

    async def _trace_header(self, *, only: bool) -> str:
        if self._trace_dest is None:
            from .server import MSG_TRACE_SUBJECT

            dest = f"{MSG_TRACE_SUBJECT}.{self._client().new_inbox().rsplit('.', 1)[-1]}"
            await self.record_message_traces(dest)
            self._trace_dest = dest
        return f"Nats-Trace-Dest: {self._trace_dest}\r\n" + (
            "Nats-Trace-Only: true\r\n" if only else "")

    async def subscriptions(self, *, account: str | None = None, timeout: float = 1.0,
                            **system: Any) -> Any:
        """Who is subscribed to what, from the server's CONNZ (subscription detail).

        Needs the system account: automatic with the embedded server; otherwise pass its
        credentials (``user``/``password``, ``user_credentials``, ``nkeys_seed``...), which
        are used for this request only and never recorded.

        Returns:
            a :class:`evtkit.subscriptions.SubscriptionMap` (``.frame``,
            ``.receivers(subject)``).
        """
        from .subscriptions import subscription_map

        return await subscription_map(self, account=account, timeout=timeout, **system)

    # -- many processes --------------------------------------------------------------------

    async def send_telemetry(self, interval: float = 0.5) -> Any:
        """Ship this bus's capture rows to collectors every ``interval`` seconds (on
        ``_EVTKIT.telemetry.<name>``). Rows leave the local recorder as they are sent.

        Returns:
            an :class:`evtkit.telemetry.TelemetrySender` (flushed and stopped on close).
        """
        from .telemetry import TelemetrySender

        sender = TelemetrySender(self, interval)
        self._owners.append(sender)
        return sender.start()

    async def collect(self) -> Any:
        """Merge the telemetry of every process that sends it into this bus's recorder,
        so ``bus.trace()`` covers all of them.

        Returns:
            an :class:`evtkit.telemetry.Collector` (``.rows``, ``.sources``).
        """
        from .telemetry import TELEMETRY_SUBJECT, Collector

        collector = Collector(self, f"{TELEMETRY_SUBJECT}.>")
        await self._attach(collector, collector.subject, None)
        return collector

    # -- JetStream ---------------------------------------------------------------------------

    async def add_stream(self, name: str, subjects: Iterable[str], **config: Any) -> Any:
        """Create a JetStream stream storing ``subjects`` (or update an existing one).

        Args:
            name: stream name.
            subjects: subjects or wildcards it stores.
            **config: further ``nats.js.api.StreamConfig`` fields (``max_msgs``, ``storage``,
                ``num_replicas``...).

        Returns:
            nats-py's ``StreamInfo``.

        Raises:
            JetStreamError: the server refused (JetStream off, overlapping subjects...).
        """
        from .jetstream import add_stream

        return await add_stream(self, name, subjects, **config)

    async def consume(self, stream: str, handler: Handler, *, consumer: str,
                      **options: Any) -> Any:
        """Consume ``stream`` through a durable consumer with explicit acks, recording
        every delivery (stream and consumer sequence, delivery count) and its settlement.

        A handler that returns acks; one that raises naks (redelivered until
        ``max_deliver``); raising :class:`evtkit.Term` terminates the message and
        :class:`evtkit.Nak` naks with a delay.

        Args:
            stream: the stream.
            handler: ``async def handler(event)``; ``event.delivery_count`` says which try.
            consumer: the consuming service's name (in delivery rows).
            **options: ``durable`` (default: ``consumer``), ``subject`` (filter),
                ``queue`` (push consumers: deliver group), ``pull`` (default False: push),
                ``batch`` (pull size), ``max_deliver``, ``ack_wait`` (s),
                ``max_ack_pending``, ``deliver_policy`` (``all``, ``new``, ``last``...),
                ``pending_msgs``, ``pending_bytes``.

        Returns:
            a :class:`evtkit.jetstream.JetStreamSubscription`.

        Raises:
            JetStreamError: no such stream, or a consumer of that name with another
                configuration.
        """
        from .jetstream import consume

        return await consume(self, stream, handler, consumer=consumer, **options)

    async def watch_jetstream(self, *streams: str, interval: float = 1.0,
                              advisories: bool = True) -> Any:
        """Sample every consumer of ``streams`` (default: all) each ``interval`` seconds
        into ``consumer_info`` rows, and record JetStream advisories as ``advisory`` rows.

        Returns:
            a :class:`evtkit.jetstream.JetStreamWatch` (stopped when the bus closes).
        """
        from .jetstream import JetStreamWatch

        watch = JetStreamWatch(self, streams or None, interval)
        self._owners.append(watch)
        return await watch.start(advisories)

    def trace(self) -> Any:
        """A :class:`~evtkit.trace.Trace` of everything recorded so far."""
        return self.recorder.trace()

    # -- connection events -----------------------------------------------------------------

    @staticmethod
    def _chain(ours: Callable[..., Awaitable[None]], theirs: Any) -> Callable[..., Any]:
        if theirs is None:
            return ours

        async def both(*args: Any) -> None:
            await ours(*args)
            await theirs(*args)

        return both

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError):
            owner = self._subs.get(exc.sid)
            consumer = owner.consumer if isinstance(owner, Subscription) else None
            self.recorder.add("drop", self.name, consumer=consumer, subject=exc.subject.encode(),
                              extra=(1, "slow consumer: nats-py pending limit reached"))
            return
        text = redact(f"{type(exc).__name__}: {exc}")
        self.recorder.add("error", self.name, extra=text)
        log.debug("nats error on %s: %s", self.name, text)

    def _last_error(self) -> str | None:
        for row in reversed(self.recorder.rows):
            if row[0] == "error" and row[2] == self.name:
                return row[9]
        return None

    async def _on_disconnect(self) -> None:
        self.recorder.add("disconnect", self.name, extra="disconnected from the server")

    async def _on_reconnect(self) -> None:
        url = self.nc.connected_url if self.nc is not None else None
        where = _public_url(url.geturl()) if url is not None else "?"
        self.recorder.add("reconnect", self.name, extra=f"reconnected to {where}")

    def __repr__(self) -> str:
        state = self.url if self._opened else "not connected"
        return f"<Bus {self.name!r} {state}, {len(self.recorder.rows)} rows>"


async def _never(msg: Any) -> None:  # pragma: no cover - the dispatcher takes these messages
    """Placeholder callback for subscriptions whose messages the dispatcher routes."""


RESERVED_PREFIXES = (b"$JS.", b"$SYS.", b"_EVTKIT.")
"""Subjects a wildcard tap leaves out: NATS's own API, acks and advisories, and evtkit's
telemetry, deliveries and traces (each is recorded by the part that owns it)."""


class Tap:
    """A passive capture of subjects; see :meth:`Bus.tap`.

    Attributes:
        skipped: messages on reserved subjects (:data:`RESERVED_PREFIXES`) left out.
    """

    def __init__(self, bus: Bus, subjects: Iterable[str], name: str) -> None:
        self.bus = bus
        self.subjects = tuple(subjects)
        self.name = name
        self.consumer = None
        self._nats_subs: list[Any] = []
        self.skipped = 0
        append = bus.recorder.rows.append
        ids = SyntheticIds()
        clock = time.time_ns
        # Machinery traffic (JetStream API calls and acks, evtkit's telemetry and traces) is
        # not events; it is left out unless a tap asks for those subjects by name.
        asked = any(s.startswith(("$", "_EVTKIT")) for s in self.subjects)
        reserved = () if asked else RESERVED_PREFIXES

        def sink(subject: bytes, reply: bytes, data: bytes, block: bytes | None) -> None:
            if subject.startswith(reserved):
                self.skipped += 1
                return
            syn = ids(subject, block, data) if block is None or b"ce-id:" not in block else None
            append(("tap", clock(), name, None, None, subject, reply or None, data, block, syn))

        self.sink = sink

    async def unsubscribe(self, timeout: float | None = None) -> None:
        """Stop capturing."""
        await self.bus._detach(self)

    def __repr__(self) -> str:
        return f"<Tap {self.name!r} on {', '.join(self.subjects)}>"


class Subscription:
    """A consumer's subscription; see :meth:`Bus.subscribe`.

    Attributes:
        delivered: messages handed to the handler so far.
        dropped: messages lost because the handler fell behind the pending limits.
        failed: handler calls that raised.
    """

    def __init__(self, bus: Bus, subject: str, handler: Handler, consumer: str,
                 queue: str | None, pending_msgs: int, pending_bytes: int) -> None:
        self.bus = bus
        self.subject = subject
        self.handler = handler
        self.consumer = consumer
        self.queue = queue
        self.delivered = 0
        self.dropped = 0
        self.failed = 0
        self._nats_subs: list[Any] = []
        self._queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._pending_bytes = 0
        recorder = bus.recorder
        append = recorder.rows.append
        ids = SyntheticIds()
        clock = time.time_ns
        observer = bus.name
        put = self._queue.put_nowait
        qsize = self._queue.qsize

        def sink(subject: bytes, reply: bytes, data: bytes, block: bytes | None) -> None:
            seq = recorder.next_seq()
            syn = ids(subject, block, data) if block is None or b"ce-id:" not in block else None
            append(("receive", clock(), observer, consumer, queue, subject, reply or None, data,
                    block, syn))
            if qsize() >= pending_msgs or self._pending_bytes + len(data) > pending_bytes:
                self.dropped += 1
                recorder.drops += 1
                append(("handled", clock(), observer, consumer, queue, None, None, None, None,
                        (seq, None, "dropped", "pending limit reached: handler fell behind")))
                return
            self._pending_bytes += len(data)
            put((seq, subject, reply, data, block, syn))

        self.sink = sink
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        append = self.bus.recorder.rows.append
        observer, consumer, queue = self.bus.name, self.consumer, self.queue
        clock = time.time_ns
        handler = self.handler
        settles = self.settles
        while True:
            seq, subject, reply, data, block, syn = await self._queue.get()
            self._pending_bytes -= len(data)
            event = decode_message(subject.decode("utf-8", "replace"), data, block,
                                   reply=reply.decode("utf-8", "replace") if reply else None,
                                   synthetic=syn)
            token = _CURRENT.set((event, consumer, seq))
            started = clock()
            outcome, error, failure, ack = "ok", None, None, None
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                outcome, error = "error", "cancelled: the subscription was closed"
                raise
            except Exception as exc:  # noqa: BLE001 - a failing handler must not stop us
                outcome, error, failure = "error", f"{type(exc).__name__}: {exc}", exc
                self.failed += 1
                log.debug("handler of %s failed on %s", consumer, event.id, exc_info=True)
            finally:
                _CURRENT.reset(token)
                # Not on cancel: an unsettled JetStream message is redelivered later.
                if settles and (error is None or failure is not None):
                    ack = await self._settle(reply, failure)
                self.delivered += 1
                append(("handled", clock(), observer, consumer, queue, None, None, None, None,
                        (seq, started, outcome, redact(error) if error else None, ack)))
                self._queue.task_done()

    settles = False
    """Whether messages are acknowledged after the handler (JetStream subscriptions)."""

    async def _settle(self, reply: bytes, failure: Exception | None) -> str | None:
        """After the handler, for subscriptions that :attr:`settles`: acknowledge the
        message; return what was sent (``ack``, ``nak``, ``term``) or None."""
        return None

    @property
    def pending(self) -> int:
        """Messages received and waiting for the handler."""
        return self._queue.qsize()

    async def idle(self) -> None:
        """Wait until every message received so far has been handled."""
        await self._queue.join()

    async def unsubscribe(self, timeout: float | None = None) -> None:
        """Stop receiving, let the handler finish what is already queued, then stop.

        Args:
            timeout: give up waiting for the queue after this many seconds (a hung handler
                must not hang the caller); what is left stays ``pending`` in the trace.
        """
        await self.bus._detach(self)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker

    def __repr__(self) -> str:
        group = f" queue={self.queue!r}" if self.queue else ""
        return f"<Subscription {self.consumer!r} on {self.subject!r}{group}>"


def connect(url: str | None = None, *, name: str = "evtkit", **options: Any) -> Bus:
    """Make a :class:`Bus`; ``await`` it or use it with ``async with``.

    URL resolution: the ``url`` argument, else ``$NATS_URL``, else an embedded
    ``nats-server`` started on a free loopback port (stopped when the bus closes).

    Args:
        url: server URL(s), comma-separated; may carry credentials, which are never
            recorded (``bus.url`` and traces show the URL without them).
        name: connection name (shown by the server, and the observer in traces); also the
            default CloudEvents source.
        **options: ``source=``, ``fast=``, ``connect_timeout=``, ``recorder=``,
            ``telemetry=`` (seconds between batches sent to collectors; default
            ``$EVTKIT_TELEMETRY``; 0 turns it off), and any
            ``nats.connect`` option (``user``, ``password``, ``token``, ``nkeys_seed``,
            ``user_credentials``, ``tls``, ...), passed through unchanged.

    Raises:
        ConnectError: the server could not be reached within ``connect_timeout``.
        ServerError: no URL and the embedded server could not start.
    """
    return Bus(url, name=name, **options)
