"""The only place evtkit touches nats-py internals, for capture speed.

Two shortcuts, each with a fallback to nats-py's public API, and one private field read:

* **Receive**: nats-py's parser calls ``Client._process_msg(sid, subject, reply, data,
  headers)`` for every MSG/HMSG. For evtkit's own subscriptions a :class:`Dispatcher` hands
  the raw bytes to a sink *before* nats-py parses headers and builds a ``Msg`` and a queue
  entry — the main per-message costs (see ``shared/design.md``). Other subscriptions (request
  inboxes, JetStream) go through nats-py untouched.
* **Publish**: :func:`publish` writes the ``HPUB`` line itself, with the header block evtkit
  already built as bytes, instead of nats-py encoding a header dict for every message.

* **Subscription ids**: nats-py keeps a subscription's id (the ``sid`` its parser passes
  to ``_process_msg`` and its slow-consumer errors carry) in the private ``_id``;
  :func:`subscription_id` reads it.

Supported nats-py versions are :data:`SUPPORTED` (the range pinned in ``pyproject.toml``);
:func:`available` also checks the exact internals used, so a nats-py that changed them falls
back to the public path (``Bus(fast=False)`` behaves the same, only slower).
"""

from __future__ import annotations

import inspect
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from nats.aio.client import Client
from nats.aio.subscription import Subscription

from .contract import Sink

__all__ = ["SUPPORTED", "Dispatcher", "available", "publish", "subscription_id"]

SUPPORTED = ((2, 7), (2, 17))
"""nats-py versions the fast path was written and tested against: [low, high)."""

_PROCESS_MSG_PARAMS = ["self", "sid", "subject", "reply", "data", "headers"]


def _nats_version() -> tuple[int, ...]:
    try:
        text = version("nats-py")
    except PackageNotFoundError:
        return (0,)
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def available() -> bool:
    """True when the installed nats-py is in :data:`SUPPORTED` and has the internals used."""
    low, high = SUPPORTED
    if not (low <= _nats_version()[:2] < high):
        return False
    try:
        params = list(inspect.signature(Client._process_msg).parameters)
    except (AttributeError, TypeError, ValueError):
        return False
    return params == _PROCESS_MSG_PARAMS and all(
        hasattr(Client, name) for name in ("_send_command", "_flush_pending", "is_connected")
    )


def subscription_id(sub: Subscription) -> int:
    """The id nats-py gave ``sub`` (the ``sid`` of its messages and slow-consumer errors)."""
    return int(sub._id)


class Dispatcher:
    """Routes messages of chosen subscription ids to sinks, bypassing ``Msg`` objects.

    Installed once per client; other subscriptions still reach nats-py's own handling.
    """

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._sinks: dict[int, Sink] = {}
        self._original = nc._process_msg
        nc._process_msg = self._process  # type: ignore[method-assign]

    def route(self, sid: int, sink: Sink) -> None:
        """Send messages of subscription ``sid`` to ``sink`` from now on."""
        self._sinks[sid] = sink

    def unroute(self, sid: int) -> None:
        """Stop routing ``sid``; later messages (if any) go back to nats-py."""
        self._sinks.pop(sid, None)

    async def _process(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any
    ) -> None:
        sink = self._sinks.get(sid)
        if sink is None:
            await self._original(sid, subject, reply, data, headers)
            return
        stats = self._nc.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        sink(subject, reply, data, headers)


async def publish(nc: Client, subject: bytes, reply: bytes, block: bytes, payload: bytes) -> bool:
    """Send ``HPUB`` with a ready header block; False if the caller must use the public path.

    Mirrors what ``Client.publish`` does after encoding headers: queue the command, count
    it, and kick the flusher. While not connected (reconnecting, buffering) it returns False
    so nats-py's own rules for buffering apply.
    """
    if not nc.is_connected:
        return False
    size = len(block) + len(payload)
    if reply:
        head = b"HPUB %s %s %d %d\r\n" % (subject, reply, len(block), size)
    else:
        head = b"HPUB %s %d %d\r\n" % (subject, len(block), size)
    await nc._send_command(b"".join((head, block, payload, b"\r\n")))
    nc.stats["out_msgs"] += 1
    nc.stats["out_bytes"] += len(payload)
    queue: Any = nc._flush_queue
    if queue is not None and queue.empty():
        await nc._flush_pending()
    return True
