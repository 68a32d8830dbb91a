"""JetStream: durable consumers with explicit acks, and what the server says about them.

::

    await bus.add_stream("ORDERS", ["orders.>"])
    await bus.publish("orders.placed", {"order": 1}, jetstream=True)   # waits for the PubAck
    await bus.consume("ORDERS", handle, consumer="billing", max_deliver=3)          # push
    await bus.consume("ORDERS", handle, consumer="audit", pull=True, batch=50)      # pull
    watch = await bus.watch_jetstream(interval=1.0)   # ConsumerInfo samples + advisories

A handler that returns acks the message; one that raises naks it (the server redelivers it
until ``max_deliver``); raising :class:`Term` terminates it (no redelivery); raising
:class:`Nak` with a delay asks for a later redelivery. Receive rows carry stream and consumer
sequence and the delivery count (read from the ack subject); handled rows say ``ack``,
``nak`` or ``term``. The watch adds ``consumer_info`` rows (pending, ack pending, redelivered,
waiting, delivered and ack-floor sequences, last active) every ``interval`` and an
``advisory`` row for every JetStream advisory (max deliveries reached, nak, terminated...).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import nats
import orjson
import pandas as pd
from nats.js import api
from nats.js.errors import NotFoundError

from .._headers import parse_block
from ..errors import JetStreamError, PublishError
from ._nats_errors import FAILURES, nats_errors
from ._tasks import Loop
from .credentials import redact
from .envelope import block_from_dict
from .router import DEFAULT_PENDING_BYTES, DEFAULT_PENDING_MSGS, Router
from .subscription import Handler, Subscription

__all__ = ["ADVISORY_SUBJECTS", "JetStreamSubscription", "JetStreamWatch", "Nak", "Term"]

log = logging.getLogger("evtkit")

ADVISORY_SUBJECTS = ("$JS.EVENT.ADVISORY.CONSUMER.>", "$JS.EVENT.ADVISORY.STREAM.>")
"""The JetStream advisories recorded: about consumers (max deliveries, nak, terminated,
created...) and streams. API audit advisories are left out: the watch's own sampling
would fill the trace with them."""
DELIVER_PREFIX = "_EVTKIT.deliver"
"""Deliver subjects of evtkit's push consumers (reserved: taps leave them out)."""
_API_TIMEOUT = 5.0


class Term(Exception):  # noqa: N818 - named after the protocol's +TERM
    """Raise in a JetStream handler to terminate the message: it is not redelivered."""


class Nak(Exception):  # noqa: N818 - named after the protocol's -NAK
    """Raise in a JetStream handler to have the message redelivered, after ``delay`` s."""

    def __init__(self, reason: str = "", *, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


async def add_stream(router: Router, name: str, subjects: Iterable[str], **config: Any
                     ) -> api.StreamInfo:
    """Create the stream ``name`` for ``subjects`` (or update it); see :meth:`Bus.add_stream`."""
    js = router.client.jetstream(timeout=_API_TIMEOUT)
    subjects = list(subjects)
    with nats_errors(JetStreamError, f"could not create stream {name!r} "
                                     "(is JetStream enabled?)"):
        try:
            return await js.add_stream(name=name, subjects=subjects, **config)
        except nats.js.errors.BadRequestError:
            pass  # it exists with another configuration: update it
    with nats_errors(JetStreamError, f"could not create or update stream {name!r}"):
        return await js.update_stream(api.StreamConfig(name=name, subjects=subjects, **config))


async def publish_acked(router: Router, subject: str, payload: bytes, block: bytes,
                        timeout: float) -> tuple[str, int]:
    """Publish through JetStream and wait for the stream's ack: ``(stream, sequence)``."""
    router.check_size(subject, len(block) + len(payload))
    router.sent += 1
    js = router.client.jetstream(timeout=timeout)
    missing = (f"no JetStream stream stores {subject!r}: create one with "
               f"bus.add_stream(name, [{subject!r}])")
    with nats_errors(PublishError, f"JetStream did not store {subject!r}",
                     {nats.errors.NoRespondersError: missing,
                      nats.js.errors.NoStreamResponseError: missing}):
        ack = await js.publish(subject, payload, headers=parse_block(block).headers)
    return ack.stream, ack.seq


class JetStreamSubscription(Subscription):
    """A durable JetStream consumer feeding a handler; see :meth:`Bus.consume`.

    Attributes:
        stream: the stream consumed.
        durable: the durable consumer's name on the server.
        pull: True for a pull consumer, False for push.
        acked, naked, termed: how many messages were settled each way.
    """

    def __init__(self, router: Router, stream: str, handler: Handler, *, consumer: str,
                 durable: str, subject: str | None, queue: str | None, pull: bool,
                 batch: int, pending_msgs: int, pending_bytes: int) -> None:
        super().__init__(router, subject or f"<stream {stream}>", handler, consumer, queue,
                         pending_msgs, pending_bytes)
        self.stream = stream
        self.durable = durable
        self.pull = pull
        self.batch = batch
        self.acked = self.naked = self.termed = 0
        self._puller: Loop | None = None
        self._psub: Any = None

    settles = True

    async def _settle(self, reply: bytes, failure: Exception | None) -> str | None:
        if not reply.startswith(b"$JS.ACK."):
            return None  # not a JetStream delivery (nothing to acknowledge)
        if failure is None:
            body, ack = b"+ACK", "ack"
            self.acked += 1
        elif isinstance(failure, Term):
            body, ack = b"+TERM " + str(failure).encode()[:200], "term"
            self.termed += 1
        else:
            delay = failure.delay if isinstance(failure, Nak) else None
            body = b"-NAK" if not delay else b"-NAK " + orjson.dumps({"delay": int(delay * 1e9)})
            ack = "nak"
            self.naked += 1
        nc = self.router.client
        if not nc.is_closed:
            with contextlib.suppress(nats.errors.Error):
                await nc.publish(reply.decode(), body.rstrip())
        return ack

    async def start_pulling(self) -> None:
        """Bind to the pull consumer and fetch batches from now on (pull consumers)."""
        js = self.router.client.jetstream(timeout=_API_TIMEOUT)
        self._psub = await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        self._puller = Loop(self._pull, 0)

    async def _pull(self) -> None:
        """Fetch a batch when the handler has finished the previous one: the server keeps
        what the handler has not asked for, so a slow handler shows as ``pending``."""
        try:
            msgs = await self._psub.fetch(self.batch, timeout=1.0)
        except TimeoutError:
            return
        except nats.errors.Error as exc:
            self.router.recorder.add("error", self.router.name,
                                     extra=redact(f"pull from {self.durable}: {exc}"))
            await asyncio.sleep(0.5)
            return
        for msg in msgs:
            self.sink(msg.subject.encode(), (msg.reply or "").encode(), msg.data,
                      block_from_dict(msg.headers))
        await self.idle()

    async def unsubscribe(self, timeout: float | None = None) -> None:
        """Stop fetching or receiving, finish what is queued (acks included), then stop.
        The durable consumer stays on the server."""
        if self._puller is not None:
            await self._puller.stop(grace=2.0)
            self._puller = None
        if self._psub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._psub.unsubscribe()
            self._psub = None
        await super().unsubscribe(timeout)

    def __repr__(self) -> str:
        kind = "pull" if self.pull else "push"
        return f"<JetStreamSubscription {self.consumer!r} {kind} {self.stream}/{self.durable}>"


async def consume(
    router: Router,
    stream: str,
    handler: Handler,
    *,
    consumer: str,
    durable: str | None = None,
    subject: str | None = None,
    queue: str | None = None,
    pull: bool = False,
    batch: int = 10,
    max_deliver: int | None = None,
    ack_wait: float | None = None,
    max_ack_pending: int | None = None,
    deliver_policy: str = "all",
    pending_msgs: int = DEFAULT_PENDING_MSGS,
    pending_bytes: int = DEFAULT_PENDING_BYTES,
) -> JetStreamSubscription:
    """Create (or reuse) a durable consumer on ``stream`` and run ``handler`` for each
    message, acknowledging explicitly. See :meth:`Bus.consume` for the arguments."""
    if not consumer:
        raise ValueError("consumer= must name the consuming service")
    durable = durable or consumer
    if any(c in durable for c in ".*> \t"):
        raise ValueError(f"durable name {durable!r} may not contain '.', '*', '>' or spaces")
    config = api.ConsumerConfig(
        durable_name=durable,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy(deliver_policy),
        filter_subject=subject,
        max_deliver=max_deliver,
        ack_wait=ack_wait,
        max_ack_pending=max_ack_pending,
        deliver_subject=None if pull else f"{DELIVER_PREFIX}.{stream}.{durable}",
        deliver_group=None if pull else queue,
    )
    js = router.client.jetstream(timeout=_API_TIMEOUT)
    with nats_errors(JetStreamError, f"could not create consumer {durable!r} on stream "
                                     f"{stream!r}",
                     {NotFoundError: f"stream {stream!r} does not exist: create it with "
                                     f"bus.add_stream({stream!r}, [subjects])"}):
        info = await js.add_consumer(stream, config)
    if info.push_bound and not pull and not queue:
        raise JetStreamError(
            f"consumer {durable!r} on stream {stream!r} is already bound to a subscription; "
            "two unrelated subscribers would each get every message: close the other one, "
            "or give both the same queue= to share the messages")
    sub = JetStreamSubscription(
        router, stream, handler, consumer=consumer, durable=durable, subject=subject, queue=queue,
        pull=pull, batch=batch, pending_msgs=pending_msgs, pending_bytes=pending_bytes,
    )
    if pull:
        await sub.start_pulling()
        router.adopt(sub)
    else:
        assert config.deliver_subject is not None
        await router.attach(sub, config.deliver_subject, queue)
    return sub


def _ns(value: Any) -> int | None:
    """A ConsumerInfo time (a datetime; RFC 3339 text in older nats-py) as ns, or None."""
    if isinstance(value, datetime | str):
        with contextlib.suppress(ValueError):
            return int(pd.Timestamp(value).value)
    return None


class JetStreamWatch:
    """Samples JetStream consumers and records advisories; see :meth:`Bus.watch_jetstream`.

    Attributes:
        samples: ConsumerInfo samples taken so far.
        advisories: advisories recorded so far.
    """

    consumer = None

    def __init__(self, router: Router, streams: Iterable[str] | None, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval}")
        self.router = router
        self.streams = tuple(streams) if streams is not None else None
        self.interval = interval
        self.samples = 0
        self.advisories = 0
        self._loop: Loop | None = None
        append = router.recorder.rows.append
        observer = router.name

        def sink(subject: bytes, reply: bytes, data: bytes, block: bytes | None) -> None:
            self.advisories += 1
            try:
                body = orjson.loads(data)
            except orjson.JSONDecodeError:
                body = {}
            if not isinstance(body, dict):
                body = {}
            stream_seq = body.get("stream_seq")
            deliveries = body.get("deliveries")
            # $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>: the event's name
            # is the fifth token, as in the NATS docs.
            tokens = subject.decode("utf-8", "replace").split(".")
            append(("advisory", time.time_ns(), observer, _text(body.get("consumer")), None,
                    subject, None, data, block,
                    (tokens[4] if len(tokens) > 4 else ".".join(tokens),
                     _text(body.get("stream")),
                     stream_seq if type(stream_seq) is int else None,
                     deliveries if type(deliveries) is int else None)))

        self.sink = sink

    async def start(self, advisories: bool = True) -> JetStreamWatch:
        """Subscribe to advisories and start sampling every ``interval`` seconds."""
        if advisories:
            for subject in ADVISORY_SUBJECTS:
                await self.router.attach(self, subject)
        await self.sample()
        self._loop = Loop(self.sample, self.interval)
        return self

    async def sample(self) -> int:
        """Take one sample of every watched consumer now; return how many were recorded.

        A failed request becomes an ``error`` row (the watch carries on)."""
        router = self.router
        jsm = router.client.jsm()
        try:
            streams = self.streams
            if streams is None:
                streams = tuple(str(s.config.name) for s in await jsm.streams_info())
            infos = []
            for stream in streams:
                infos += await jsm.consumers_info(stream)
        except FAILURES as exc:
            router.recorder.add("error", router.name,
                                extra=redact(f"JetStream consumer sampling failed: {exc!r}"))
            return 0
        now = time.time_ns()
        for info in infos:
            delivered = info.delivered or api.SequenceInfo(0, 0)
            floor = info.ack_floor or api.SequenceInfo(0, 0)
            router.recorder.rows.append((
                "consumer_info", now, router.name, info.name, None, None, None, None, None,
                (info.stream_name, info.num_pending, info.num_ack_pending,
                 info.num_redelivered, info.num_waiting, delivered.consumer_seq,
                 delivered.stream_seq, floor.stream_seq, _ns(delivered.last_active),
                 info.cluster.leader if info.cluster else None),
            ))
        self.samples += len(infos)
        return len(infos)

    async def stop(self) -> None:
        """Stop sampling and recording advisories."""
        if self._loop is not None:
            await self._loop.stop()
            self._loop = None
        await self.router.detach(self)

    async def unsubscribe(self, timeout: float | None = None) -> None:
        """Same as :meth:`stop` (so the bus closes it like its subscriptions)."""
        await self.stop()

    def __repr__(self) -> str:
        which = ", ".join(self.streams) if self.streams else "all streams"
        return f"<JetStreamWatch {which} every {self.interval:g} s>"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
