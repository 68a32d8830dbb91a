"""The router: the bus as its features see it.

A :class:`~evtkit.capture.bus.Bus` makes one router when it connects and hands it to every
feature (subscriptions, taps, JetStream, message traces, the subscription map, telemetry).
Through it a feature reaches the connection (:attr:`Router.client`), the recorder and the
observer name, attaches its NATS subscriptions (:meth:`Router.attach`: their messages go to
the feature's ``sink``), and is stopped when the bus closes (attached owners, and features
registered with :meth:`Router.adopt`). Features depend on this object and on
:mod:`evtkit.capture.contract`, never on the bus.

:meth:`Router.send` is the one way a message leaves: subject and size checked, then the
fast path (a ready header block written as ``HPUB``) or nats-py's public ``publish``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, TypeVar

import nats
from nats.aio.client import Client
from nats.aio.subscription import Subscription as NatsSubscription

from .._headers import parse_block
from ..errors import ConnectError, PayloadTooLargeError, SettleTimeoutError
from . import _fastpath
from .contract import Feature, Owner, Worker
from .envelope import block_from_dict, check_subject
from .recorder import Recorder

__all__ = ["DEFAULT_PENDING_BYTES", "DEFAULT_PENDING_MSGS", "Router"]

DEFAULT_PENDING_MSGS = 524_288
"""Messages a subscription may hold before its handler takes them (nats-py's default)."""
DEFAULT_PENDING_BYTES = 128 * 1024 * 1024
"""Payload bytes a subscription may hold before its handler takes them (nats-py's)."""

F = TypeVar("F", bound=Feature)


async def _never(msg: Any) -> None:  # pragma: no cover - the dispatcher takes these messages
    """Placeholder callback for subscriptions whose messages the dispatcher routes."""


class Router:
    """Routes messages to the features that own their subscriptions; closes them all.

    Args:
        client: the connected nats-py client.
        recorder: where every feature appends its rows.
        name: the connection name (the observer in rows).
        url: the server URL(s) without credentials.
        fast: route messages and publish through :mod:`evtkit.capture._fastpath`.
    """

    def __init__(self, client: Client, recorder: Recorder, name: str, url: str, *,
                 fast: bool) -> None:
        self._client = client
        self.recorder = recorder
        self.name = name
        self.url = url
        self._dispatcher = _fastpath.Dispatcher(client) if fast else None
        self._owner_of: dict[int, Owner] = {}
        self._subs: dict[Owner, list[NatsSubscription]] = {}
        self._adopted: list[Feature] = []
        self.closed = False
        self.sent = 0  # messages this connection sent (settle() waits for their effects)

    @property
    def client(self) -> Client:
        """The nats-py client.

        Raises:
            ConnectError: the bus has been closed.
        """
        if self.closed:
            raise ConnectError("the bus is not connected: `await bus` or use `async with`")
        return self._client

    @property
    def fast(self) -> bool:
        """Whether messages bypass nats-py's per-message objects (see ``_fastpath``)."""
        return self._dispatcher is not None

    @property
    def features(self) -> list[Feature]:
        """Everything :meth:`close` will stop, in the order it was added."""
        return list(dict.fromkeys([*self._subs, *self._adopted]))

    def owner(self, sid: int) -> Owner | None:
        """The feature that owns NATS subscription ``sid`` (None if none does)."""
        return self._owner_of.get(sid)

    # -- subscriptions ---------------------------------------------------------------------

    async def attach(self, owner: Owner, subject: str, queue: str | None = None) -> None:
        """Subscribe to ``subject`` (in ``queue``) and hand every message to ``owner.sink``;
        returns once the server has the subscription."""
        nc = self.client
        if self._dispatcher is not None:
            nsub = await nc.subscribe(subject, queue=queue or "", cb=_never)
            self._dispatcher.route(_fastpath.subscription_id(nsub), owner.sink)
        else:
            async def callback(msg: Any) -> None:
                owner.sink(msg.subject.encode(), msg.reply.encode(), msg.data,
                           block_from_dict(msg.headers))
            nsub = await nc.subscribe(
                subject, queue=queue or "", cb=callback,
                pending_msgs_limit=DEFAULT_PENDING_MSGS, pending_bytes_limit=-1,
            )
        self._subs.setdefault(owner, []).append(nsub)
        self._owner_of[_fastpath.subscription_id(nsub)] = owner
        await self.flush()

    async def detach(self, owner: Owner) -> None:
        """Stop ``owner``'s subscriptions without losing what is in flight: drain each
        (UNSUB, then a round trip, so the server has sent everything it routed before)
        while its messages still reach the owner, and only then stop routing them."""
        nc = self._client
        for nsub in self._subs.pop(owner, []):
            if not nc.is_closed and not nc.is_draining:
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    await asyncio.wait_for(nsub.drain(), 5.0)
            sid = _fastpath.subscription_id(nsub)
            self._owner_of.pop(sid, None)
            if self._dispatcher is not None:
                self._dispatcher.unroute(sid)

    def adopt(self, feature: F) -> F:
        """Stop ``feature`` when the bus closes (for features without subscriptions of
        their own, such as pull consumers and samplers); returns it."""
        self._adopted.append(feature)
        return feature

    async def close(self, timeout: float) -> None:
        """Stop every feature, giving each ``timeout`` seconds to finish its work."""
        for feature in self.features:
            await feature.unsubscribe(timeout=timeout)
        self._adopted.clear()
        self.closed = True

    # -- sending ---------------------------------------------------------------------------

    async def flush(self, timeout: float = 10.0) -> None:
        """Return once the server has everything sent so far, and everything it routed to
        this connection before that has been read (and handed to the sinks).

        nats-py's ``flush()`` writes its PING straight to the socket, ahead of commands
        still in its write buffer, so one round trip can come back before a publish or a
        subscription that preceded it was sent. That flush also hands the buffer to
        nats-py's writer, which runs before the answer is read; a second round trip
        therefore follows everything that was sent before the first.
        """
        nc = self.client
        for _ in range(2):
            await nc.flush(timeout)  # type: ignore[arg-type] # nats-py says int; float works

    async def settle(self, timeout: float) -> None:
        """Return once everything this connection sent has reached the server, everything
        the server routed here before has been read, and every worker (a handler's queue)
        is idle — again and again while handlers send more.

        Raises:
            SettleTimeoutError: not settled within ``timeout`` seconds; says who still
                holds messages.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            sent = -1
            while sent != self.sent:
                sent = self.sent
                await asyncio.wait_for(self.flush(timeout),
                                       max(deadline - loop.time(), 0.001))
                for feature in self.features:
                    if isinstance(feature, Worker):
                        await asyncio.wait_for(feature.idle(),
                                               max(deadline - loop.time(), 0.001))
        except TimeoutError:
            pending: dict[str, int] = {}
            for feature in self.features:
                if isinstance(feature, Worker) and feature.pending and feature.consumer:
                    pending[feature.consumer] = pending.get(feature.consumer, 0) + \
                        feature.pending
            raise SettleTimeoutError(timeout, pending) from None

    def check_size(self, subject: str, size: int) -> None:
        """Raise :class:`PayloadTooLargeError` if ``size`` bytes exceed ``max_payload``."""
        limit = self.client.max_payload
        if size > limit:
            raise PayloadTooLargeError(subject, size, limit)

    async def send(self, subject: str, payload: bytes, block: bytes | None,
                   reply: str | None = None, *, checked: bool = False) -> None:
        """Send one message with a ready header block (or none), byte for byte.

        ``checked``: the subject was checked already (publish's envelope checks it before
        it goes into a header), so the hot path does not check it twice.

        Raises:
            PublishError: a bad subject.
            PayloadTooLargeError: larger than the server's ``max_payload``.
        """
        nc = self.client
        if not checked:
            check_subject(subject)
        self.check_size(subject, len(block or b"") + len(payload))
        self.sent += 1
        if block is None:
            await nc.publish(subject, payload, reply=reply or "")
        elif not (self._dispatcher is not None and await _fastpath.publish(
                nc, subject.encode(), (reply or "").encode(), block, payload)):
            await nc.publish(subject, payload, reply=reply or "",
                             headers=parse_block(block).headers)
