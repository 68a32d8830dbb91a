"""The contract between the bus and the features that own NATS subscriptions.

A *feature* is anything the bus must stop when it closes: a subscription feeding a handler,
a tap, a JetStream consumer or watch, a message-trace recorder, a telemetry sender or
collector. An *owner* is a feature that also owns NATS subscriptions: the bus's
:class:`~evtkit.capture.router.Router` hands every message of those subscriptions to the
owner's :attr:`~Owner.sink`, as raw bytes, from nats-py's read loop.

::

    class Counter:                       # a minimal owner
        consumer = None
        def __init__(self, router):
            self.router, self.count = router, 0
        def sink(self, subject, reply, data, block):
            self.count += 1              # cheap: no parsing, never raises
        async def unsubscribe(self, timeout=None):
            await self.router.detach(self)

    await router.attach(Counter(router), "orders.>")

Rules an owner keeps:

* ``sink`` runs synchronously inside nats-py's read loop for every message: it appends a
  row (or queues the bytes) and returns; it must not block and must not raise.
* ``consumer`` names the consumer that lost messages when the client reports a slow
  consumer for one of the owner's subscriptions (None: not a consumer).
* ``unsubscribe(timeout)`` stops the feature, letting work in flight finish for at most
  ``timeout`` seconds; the router calls it when the bus closes. It must be safe to call twice.

This module imports nothing of evtkit, so every module can depend on these shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Feature", "Owner", "Sink", "Worker"]

Sink = Callable[[bytes, bytes, bytes, "bytes | None"], None]
"""Called with (subject, reply, payload, raw header block or None) for each message."""


@runtime_checkable
class Feature(Protocol):
    """Something the bus stops when it closes."""

    async def unsubscribe(self, timeout: float | None = None) -> None:
        """Stop, finishing work in flight for at most ``timeout`` seconds."""


@runtime_checkable
class Owner(Feature, Protocol):
    """A feature that owns NATS subscriptions and writes rows for their messages."""

    @property
    def consumer(self) -> str | None:
        """The consumer whose messages are lost when the client drops some (or None)."""

    def sink(self, subject: bytes, reply: bytes, data: bytes, block: bytes | None) -> None:
        """Take one message (see the module docstring for the rules)."""


@runtime_checkable
class Worker(Owner, Protocol):
    """An owner that works through what it receives later (a handler's queue): the bus
    waits for it to be idle when it settles."""

    @property
    def pending(self) -> int:
        """Messages received and not yet worked through."""

    async def idle(self) -> None:
        """Return once everything received so far has been worked through."""
