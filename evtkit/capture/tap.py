"""A passive capture: every message on chosen subjects becomes a ``tap`` row, unparsed."""

from __future__ import annotations

import time
from collections.abc import Iterable

from ..event import SyntheticIds
from .router import Router

__all__ = ["RESERVED_PREFIXES", "Tap"]

RESERVED_PREFIXES = (b"$JS.", b"$SYS.", b"_EVTKIT.")
"""Subjects a wildcard tap leaves out: NATS's own API, acks and advisories, and evtkit's
telemetry, deliveries and traces (each is recorded by the part that owns it)."""


class Tap:
    """A passive capture of subjects; see :meth:`Bus.tap`.

    Attributes:
        skipped: messages on reserved subjects (:data:`RESERVED_PREFIXES`) left out.
    """

    consumer = None
    """A tap is not a consumer: messages the client drops for it are nobody's deliveries."""

    def __init__(self, router: Router, subjects: Iterable[str], name: str,
                 queue: str | None = None) -> None:
        self.router = router
        self.subjects = tuple(subjects)
        self.name = name
        self.queue = queue
        self.skipped = 0
        append = router.recorder.rows.append
        ids = SyntheticIds().for_message
        clock = time.time_ns
        # Machinery traffic (JetStream API calls and acks, evtkit's telemetry and traces) is
        # not events; it is left out unless a tap asks for those subjects by name.
        asked = any(s.startswith(("$", "_EVTKIT")) for s in self.subjects)
        reserved = () if asked else RESERVED_PREFIXES

        def sink(subject: bytes, reply: bytes, data: bytes, block: bytes | None) -> None:
            if subject.startswith(reserved):
                self.skipped += 1
                return
            # The usual spelling of ce-id is tested inline: no call on the hot path.
            syn = None if block is not None and b"\nce-id:" in block else ids(subject, block,
                                                                              data)
            append(("tap", clock(), name, None, None, subject, reply or None, data, block,
                    syn))

        self.sink = sink

    async def start(self) -> Tap:
        """Subscribe to every subject; returns once the server has the subscriptions."""
        for subject in self.subjects:
            await self.router.attach(self, subject, self.queue)
        return self

    async def unsubscribe(self, timeout: float | None = None) -> None:
        """Stop capturing."""
        await self.router.detach(self)

    def __repr__(self) -> str:
        group = f" in queue group {self.queue!r}" if self.queue else ""
        return f"<Tap {self.name!r} on {', '.join(self.subjects)}{group}>"
