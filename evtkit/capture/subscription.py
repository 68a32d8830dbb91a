"""A consumer's subscription: a handler run for each message, every delivery recorded.

Messages arrive in the router's sink (nats-py's read loop), which appends a ``receive`` row
and queues the bytes; a worker task decodes each into an :class:`~evtkit.event.Event`, runs
the handler and appends a ``handled`` row (outcome, times, error). While a handler runs,
:func:`current_event` returns its event, so whatever the handler publishes is caused by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from ..event import Event, SyntheticIds, decode_message
from .credentials import redact
from .router import Router

__all__ = ["Delivery", "Handler", "Subscription", "current_delivery", "current_event"]

log = logging.getLogger("evtkit")

Handler = Callable[[Event], Awaitable[Any] | Any]
"""``async def handler(event)`` (a plain function works too)."""


class Delivery(NamedTuple):
    """The delivery whose handler is running: what it publishes is attributed to it."""

    event: Event
    consumer: str
    seq: int
    """seq of its ``receive`` row."""


_CURRENT: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar(
    "evtkit_current_delivery", default=None
)


def current_delivery() -> Delivery | None:
    """The delivery whose handler is running in this task, or None outside handlers."""
    return _CURRENT.get()


def current_event() -> Event | None:
    """The event whose handler is running in this task, or None outside handlers."""
    handling = _CURRENT.get()
    return handling.event if handling is not None else None


class Subscription:
    """A consumer's subscription; see :meth:`Bus.subscribe`.

    Attributes:
        delivered: messages handed to the handler so far.
        dropped: messages lost because the handler fell behind the pending limits.
        failed: handler calls that raised.
    """

    def __init__(self, router: Router, subject: str, handler: Handler, consumer: str,
                 queue: str | None, pending_msgs: int, pending_bytes: int) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        if not consumer:
            raise ValueError("consumer= must name the consuming service")
        self.router = router
        self.subject = subject
        self.handler = handler
        self.consumer = consumer
        self.queue = queue
        self.delivered = 0
        self.dropped = 0
        self.failed = 0
        self._queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._pending_bytes = 0
        recorder = router.recorder
        append = recorder.rows.append
        ids = SyntheticIds().for_message
        clock = time.time_ns
        observer = router.name
        put = self._queue.put_nowait
        qsize = self._queue.qsize

        def sink(subject: bytes, reply: bytes, data: bytes, block: bytes | None) -> None:
            seq = recorder.next_seq()
            # The usual spelling of ce-id is tested inline: no call on the hot path.
            syn = None if block is not None and b"\nce-id:" in block else ids(subject, block,
                                                                              data)
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

    async def start(self) -> Subscription:
        """Subscribe to :attr:`subject` (in :attr:`queue`); returns once the server has it."""
        await self.router.attach(self, self.subject, self.queue)
        return self

    async def _work(self) -> None:
        append = self.router.recorder.rows.append
        observer, consumer, queue = self.router.name, self.consumer, self.queue
        clock = time.time_ns
        handler = self.handler
        settles = self.settles
        while True:
            seq, subject, reply, data, block, syn = await self._queue.get()
            self._pending_bytes -= len(data)
            started = clock()
            outcome, error, failure, ack, token = "ok", None, None, None, None
            try:
                # Decoding never raises by design; it runs in here all the same, so that no
                # message can ever end this loop.
                event = decode_message(subject.decode("utf-8", "replace"), data, block,
                                       reply=reply.decode("utf-8", "replace") if reply
                                       else None, synthetic=syn)
                token = _CURRENT.set(Delivery(event, consumer, seq))
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                outcome, error = "error", "cancelled: the subscription was closed"
                raise
            except Exception as exc:  # noqa: BLE001 - a failing handler must not stop us
                outcome, error, failure = "error", f"{type(exc).__name__}: {exc}", exc
                self.failed += 1
                if log.isEnabledFor(logging.DEBUG):  # the traceback, without credentials
                    log.debug("handler of %s failed on %s:\n%s", consumer, seq,
                              redact("".join(traceback.format_exception(exc))))
            finally:
                if token is not None:
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
        await self.router.detach(self)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker

    def __repr__(self) -> str:
        group = f" queue={self.queue!r}" if self.queue else ""
        return f"<Subscription {self.consumer!r} on {self.subject!r}{group}>"
