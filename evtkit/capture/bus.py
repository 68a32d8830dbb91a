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

Given event definitions (``ek.connect(spec="api.yaml")``), the bus checks every event it
publishes against the message its channel declares and raises
:class:`~evtkit.errors.ContractError` instead of sending one that breaks it (see
:mod:`evtkit.capture.guard`); what it taps is recorded as it is, and ``bus.trace()`` carries
the definitions, so ``trace.conformance(trace.spec)``, ``problems()`` and ``diagnose()``
flag what broke them.

The bus owns the connection; the features (subscriptions, taps, JetStream, message traces,
the subscription map, telemetry) live in modules of their own and reach the connection
through one :class:`~evtkit.capture.router.Router` (see :mod:`evtkit.capture.contract`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Generator, Iterable
from os import PathLike
from typing import Any

from nats.aio.client import Client
from nats.js.api import StreamInfo

from .. import env
from ..asyncapi.document import load
from ..asyncapi.spec import Spec
from ..errors import ConnectError, PublishError
from ..event import Event
from ..trace import Trace
from . import _fastpath, msgtrace
from .connection import (
    ConnectionEvents,
    client_metadata,
    close_client,
    open_client,
    telemetry_interval,
)
from .contract import Feature
from .credentials import public_url, redact
from .envelope import Clock, check_value, envelope
from .guard import Guard
from .jetstream import (
    JetStreamSubscription,
    JetStreamWatch,
    add_stream,
    consume,
    publish_acked,
)
from .msgtrace import MessageTraces
from .recorder import Recorder
from .router import DEFAULT_PENDING_BYTES, DEFAULT_PENDING_MSGS, Router
from .server import MSG_TRACE_SUBJECT, EmbeddedServer
from .subscription import Handler, Subscription, current_delivery, current_event
from .subscription_map import SubscriptionMap, subscription_map
from .tap import Tap
from .telemetry import TELEMETRY_SUBJECT, Collector, TelemetrySender

__all__ = ["Bus", "Subscription", "Tap", "connect", "current_event", "redact"]


class Bus:
    """A named NATS connection that records everything it publishes, receives and taps.

    Create it with :func:`connect`. Use ``async with`` (or ``await`` and later
    :meth:`close`). See the module docstring for an example.

    Attributes:
        nc: the underlying nats-py client, for what evtkit does not wrap (None until open).
        server: the embedded server this bus started, if it started one.
        url: the server URL(s) it connected to, without credentials.
        spec: the event definitions its publishes are checked against (``spec=``), or None.
    """

    def __init__(self, url: str | None = None, *, name: str = "evtkit",
                 source: str | None = None, recorder: Recorder | None = None,
                 fast: bool = True, connect_timeout: float = 5.0,
                 telemetry: float | None = None,
                 spec: Spec | str | PathLike[str] | dict[str, Any] | None = None,
                 strict: bool = False, **nats_options: Any) -> None:
        if strict and spec is None:
            raise ValueError("strict=True refuses subjects the event definitions do not "
                             "declare: pass them too (spec=...)")
        self.name = name
        self.source = check_value("source", source or name)
        self.spec: Spec | None = None if spec is None else load(spec)
        self._guard = None if self.spec is None else Guard(self.spec, strict=strict)
        self.recorder = recorder or Recorder()
        self.server: EmbeddedServer | None = None
        self.nc: Client | None = None
        self.url: str | None = None
        self._url = url
        self._fast = fast and _fastpath.available()
        self._connect_timeout = connect_timeout
        self._options = nats_options
        self._telemetry = telemetry
        self._router: Router | None = None
        self._clock = Clock()
        self._own_traces: MessageTraces | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> Bus:
        """Connect (starting the embedded server when there is no URL); return ``self``."""
        if self._router is not None and not self._router.closed:
            return self
        interval = telemetry_interval(self._telemetry)  # a bad setting fails first
        url = self._url or os.environ.get(env.NATS_URL)
        if not url:
            self.server = await EmbeddedServer().start()
            url = str(self.server.url)
        servers = [u.strip() for u in url.split(",") if u.strip()]
        self.url = ",".join(public_url(u) for u in servers)
        events = ConnectionEvents(self.recorder, self.name,
                                  lambda sid: self._router.owner(sid) if self._router else None)
        try:
            self.nc = await open_client(servers, name=self.name, timeout=self._connect_timeout,
                                        events=events, options=self._options)
        except BaseException:
            await self._stop_server()
            raise
        self._router = Router(self.nc, self.recorder, self.name, self.url, fast=self._fast)
        self.recorder.metadata.update(
            client_metadata(self.nc), server_url=self.url, client=self.name,
            fast_path=self._fast, embedded_server=self.server is not None)
        if interval is not None:
            await self.send_telemetry(interval)
        return self

    def __await__(self) -> Generator[Any, None, Bus]:
        return self.open().__await__()

    async def __aenter__(self) -> Bus:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, timeout: float = 10.0) -> None:
        """Let handlers finish what they hold (for at most ``timeout`` seconds each), drain
        the connection, stop an embedded server."""
        if self._router is not None:
            await self._router.close(timeout)
        if self.nc is not None:
            await close_client(self.nc, timeout)
        await self._stop_server()

    async def _stop_server(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    def _wire(self) -> Router:
        if self._router is None or self._router.closed:
            raise ConnectError("the bus is not connected: `await bus` or use `async with`")
        return self._router

    @property
    def features(self) -> list[Feature]:
        """What this bus stops when it closes: subscriptions, taps, consumers, watches,
        message-trace recorders, telemetry senders and collectors."""
        return self._router.features if self._router is not None else []

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until the server has all published so far and this bus has read what the
        server routed to it before (handlers may still run: see :meth:`settle`)."""
        await self._wire().flush(timeout)

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until every message this bus published so far has been received and
        handled by its subscriptions and taps (and what their handlers published too).

        Raises:
            SettleTimeoutError: still busy after ``timeout`` s (``.pending``: who holds what).
        """
        await self._wire().settle(timeout)

    def trace(self) -> Trace:
        """A :class:`~evtkit.trace.Trace` of everything recorded so far, with the bus's
        :attr:`spec` attached (``trace.spec``) when it has one."""
        return self.recorder.trace(spec=self.spec)

    # -- publish ---------------------------------------------------------------------------

    async def publish(self, subject: str, data: Any = b"", *, type: str | None = None,
                      source: str | None = None, headers: dict[str, str] | None = None,
                      cause: Event | str | None = None, content_type: str | None = None,
                      reply: str | None = None, jetstream: bool = False,
                      timeout: float = 5.0, trace: bool | str = False) -> Event:
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
            ContractError: (a bus with a ``spec``) the payload or headers break every
                message its channel declares for sending, or, with ``strict=True``, no
                channel declares the subject; nothing was sent or recorded.
        """
        router = self._wire()
        handling = current_delivery()
        if cause is None and handling is not None:
            cause = handling.event
        extra = await self._trace_request(trace) if trace else ""
        ts = time.time_ns()
        event = envelope(subject, data, time_text=self._clock.rfc3339(ts), type=type,
                         source=self.source if source is None else check_value("source",
                                                                               source),
                         cause=cause, content_type=content_type, headers=headers,
                         extra=extra, reply=reply)
        assert event.block is not None
        if self._guard is not None:
            self._guard.check(subject, event.raw, event.content_type, event.block,
                              None if extra else headers or {})
        ref = handling.seq if handling is not None else None
        if jetstream:
            stream, seq = await publish_acked(router, subject, event.raw, event.block,
                                              timeout)
            event = dataclasses.replace(event, stream=stream, stream_seq=seq)
            extra_row: Any = (ref, stream, seq)
        else:
            await router.send(subject, event.raw, event.block, reply, checked=True)
            extra_row = ref
        self.recorder.rows.append((
            "publish", ts, self.name, handling.consumer if handling is not None else None,
            None, subject.encode(), reply.encode() if reply else None, event.raw,
            event.block, extra_row))
        return event

    async def send_raw(self, subject: str, payload: bytes, block: bytes | None, *,
                       reply: str | None = None) -> None:
        """Send a message with a ready-made header block (or None), byte for byte,
        unrecorded: for tools that re-send captured messages (replay).

        Raises:
            PublishError: a bad subject.
            PayloadTooLargeError: larger than the server's ``max_payload``.
        """
        await self._wire().send(subject, payload, block, reply)

    async def _trace_request(self, trace: bool | str) -> str:
        if trace not in (True, "only"):
            raise PublishError(f"trace= must be True or 'only', not {trace!r}")
        if self._own_traces is None:
            self._own_traces = await msgtrace.record_message_traces(self._wire())
        return self._own_traces.request_header(only=trace == "only")

    # -- subscribe and tap -----------------------------------------------------------------

    async def subscribe(self, subject: str, handler: Handler, *, consumer: str,
                        queue: str | None = None, pending_msgs: int = DEFAULT_PENDING_MSGS,
                        pending_bytes: int = DEFAULT_PENDING_BYTES) -> Subscription:
        """Run ``handler(event)`` for each message on ``subject``, recording each delivery.

        Each delivery records when the message was read, when the handler started and
        finished, and whether it raised (a failing handler is recorded; the subscription
        carries on). Messages beyond the pending limits are recorded as ``dropped``.

        Args:
            subject: subject or wildcard.
            handler: ``async def handler(event)`` (a plain function works too).
            consumer: the consumer's name (the service), used in every delivery row.
            queue: queue group; members share the messages.
            pending_msgs: most messages held for the handler before dropping.
            pending_bytes: most payload bytes held for the handler before dropping.
        """
        return await Subscription(self._wire(), subject, handler, consumer, queue,
                                  pending_msgs, pending_bytes).start()

    async def tap(self, *subjects: str, name: str | None = None, queue: str | None = None
                  ) -> Tap:
        """Passively record every message on ``subjects`` (default ``>``: everything).

        Works for publishers that do not use evtkit (CloudEvents binary and structured
        mode, ``traceparent``; bare messages get synthetic ids). Machinery subjects
        (``$JS.``, ``$SYS.``, ``_EVTKIT.``...) are left out (counted in ``tap.skipped``)
        unless you tap them by name.

        Args:
            subjects: subjects or wildcards to capture.
            name: observer name in the trace (default: the bus name).
            queue: share the capture with other taps in this queue group: each message
                is recorded by one of them (how ``evtkit record --shard`` scales out).
        """
        return await Tap(self._wire(), subjects or (">",), name or self.name, queue).start()

    # -- what the server knows (see capture.msgtrace, capture.subscription_map) ------------

    async def record_message_traces(self, subject: str | None = None) -> MessageTraces:
        """Record the server's message-trace reports on ``subject`` as ``hop`` rows (default
        :data:`evtkit.MSG_TRACE_SUBJECT`, where an embedded server with ``trace_sampling``
        sends them; ``publish(trace=True)`` uses a subject of its own)."""
        return await msgtrace.record_message_traces(self._wire(), subject or MSG_TRACE_SUBJECT)

    async def subscriptions(self, *, account: str | None = None, timeout: float = 1.0,
                            **system: Any) -> SubscriptionMap:
        """Who is subscribed to what, from the server's CONNZ: ``.frame`` and
        ``.receivers(subject)``. Needs the system account: automatic with the embedded
        server; else pass its credentials (``user``/``password``, ``user_credentials``...),
        used for this request only and never recorded."""
        return await subscription_map(self._wire(), account=account, timeout=timeout,
                                      **system)

    # -- many processes (see capture.telemetry) ------------------------------------------------

    async def send_telemetry(self, interval: float = 0.5) -> TelemetrySender:
        """Ship this bus's capture rows to collectors every ``interval`` seconds (on
        ``_EVTKIT.telemetry.<name>``); they leave the local recorder as they are sent."""
        router = self._wire()
        return router.adopt(TelemetrySender(router, interval)).start()

    async def collect(self) -> Collector:
        """Merge the telemetry of every process that sends it into this bus's recorder,
        so ``bus.trace()`` covers all of them (``.rows``, ``.sources``)."""
        return await Collector(self._wire(), f"{TELEMETRY_SUBJECT}.>").start()

    # -- JetStream (see capture.jetstream) -----------------------------------------------------

    async def add_stream(self, name: str, subjects: Iterable[str], **config: Any
                         ) -> StreamInfo:
        """Create a JetStream stream storing ``subjects`` (or update it); ``config``: more
        ``nats.js.api.StreamConfig`` fields (``max_msgs``, ``storage``...).

        Raises:
            JetStreamError: the server refused (JetStream off, overlapping subjects...).
        """
        return await add_stream(self._wire(), name, subjects, **config)

    async def consume(self, stream: str, handler: Handler, *, consumer: str,
                      **options: Any) -> JetStreamSubscription:
        """Consume ``stream`` through a durable consumer with explicit acks, recording
        every delivery (stream and consumer sequence, delivery count) and its settlement.

        A handler that returns acks; one that raises naks (redelivered until
        ``max_deliver``); raising :class:`evtkit.Term` terminates the message and
        :class:`evtkit.Nak` naks with a delay. ``options``: see
        :func:`evtkit.capture.jetstream.consume` (``durable``, ``subject``, ``queue``,
        ``pull``, ``batch``, ``max_deliver``, ``ack_wait``, ``deliver_policy``...).

        Raises:
            JetStreamError: no such stream, or a consumer of that name with another
                configuration.
        """
        return await consume(self._wire(), stream, handler, consumer=consumer, **options)

    async def watch_jetstream(self, *streams: str, interval: float = 1.0,
                              advisories: bool = True) -> JetStreamWatch:
        """Sample every consumer of ``streams`` (default: all) each ``interval`` seconds
        into ``consumer_info`` rows; record JetStream advisories as ``advisory`` rows."""
        router = self._wire()
        watch = router.adopt(JetStreamWatch(router, streams or None, interval))
        return await watch.start(advisories)

    def __repr__(self) -> str:
        state = self.url if self._router and not self._router.closed else "not connected"
        return f"<Bus {self.name!r} {state}, {len(self.recorder.rows)} rows>"


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
            ``$EVTKIT_TELEMETRY``; 0 turns it off), ``spec=`` (event definitions: a
            :class:`~evtkit.asyncapi.Spec`, or an AsyncAPI document's path, URL or dict;
            each publish is checked against them, see :meth:`Bus.publish`, and traces
            carry them), ``strict=`` (with ``spec``: refuse subjects no channel declares;
            by default they are sent, and ``trace.conformance`` reports them), and any
            ``nats.connect`` option (``user``, ``password``, ``token``, ``nkeys_seed``,
            ``user_credentials``, ``tls``, ...), passed through unchanged.

    Raises:
        ConnectError: the server could not be reached within ``connect_timeout``.
        ServerError: no URL and the embedded server could not start.
        SpecError: ``spec`` is a document that cannot be used (raised at once).
    """
    return Bus(url, name=name, **options)
