"""Many processes, one trace: services ship their capture rows over NATS to a collector.

In each service (or set ``EVTKIT_TELEMETRY=0.5`` and leave the code alone)::

    bus = await ek.connect(name="billing", telemetry=0.5)   # ship rows every 0.5 s

In the notebook (or ``evtkit record --collect``)::

    collector = await bus.collect()          # merge rows from every process
    trace = bus.trace()                      # one trace: causation across processes works

Each batch is one NATS message on ``_EVTKIT.telemetry.<bus name>``: MessagePack of the
rows exactly as the service's recorder holds them (raw bytes, nothing parsed), plus who sent
it, a batch number and the sequence number of its first row. The collector renumbers rows
into its own recorder and rewrites the references between them (a handled row to its
receive, a publish to the delivery whose handler published it), so ``emitted_by`` and
critical paths work across processes.

Nothing is lost silently: batches are split to fit the server's ``max_payload``; a row whose
payload alone is too big travels without its payload and the collector records an
``error`` row saying so; batches that fail to send are kept and retried (up to
``max_backlog`` rows, then counted as lost); and rows the collector never received
(a gap in a sender's sequence numbers) become a ``drop`` row naming the sender.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack
import nats

if TYPE_CHECKING:
    from .bus import Bus

__all__ = ["TELEMETRY_SUBJECT", "Collector", "TelemetrySender"]

log = logging.getLogger("evtkit")

TELEMETRY_SUBJECT = "_EVTKIT.telemetry"
"""Prefix of the telemetry subjects (``_EVTKIT.telemetry.<bus name>``)."""
FORMAT = 1
"""Version of the batch layout; a collector ignores (and reports) other versions."""
_HEADROOM = 4096  # bytes kept free under max_payload for the batch envelope
_ROW_OVERHEAD = 64


def _row_size(row: tuple[Any, ...]) -> int:
    return _ROW_OVERHEAD + sum(len(row[i]) for i in (5, 6, 7, 8) if row[i] is not None)


class TelemetrySender:
    """Ships a bus's rows to collectors; see :meth:`Bus.send_telemetry`.

    Attributes:
        batches: batches sent.
        rows: rows sent.
        lost: rows given up after ``max_backlog`` was exceeded (reported to collectors).
        stripped: rows sent without their payload because it alone exceeded max_payload.
    """

    def __init__(self, bus: Bus, interval: float = 0.5, max_backlog: int = 1_000_000) -> None:
        if interval <= 0:
            raise ValueError(f"telemetry interval must be positive, not {interval}")
        self.bus = bus
        self.interval = interval
        self.max_backlog = max_backlog
        self.subject = f"{TELEMETRY_SUBJECT}.{bus.name}"
        self.source = f"{socket.gethostname()}/{os.getpid()}/{bus.name}/{time.time_ns()}"
        self.batches = self.rows = self.lost = self.stripped = 0
        self._backlog: list[tuple[int, list[tuple[Any, ...]]]] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> TelemetrySender:
        """Send every ``interval`` seconds from now on."""
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> int:
        """Send every row recorded so far now; return how many rows went out."""
        async with self._lock:
            first, rows = self.bus.recorder.drain()
            if rows:
                self._backlog.append((first, rows))
            sent = 0
            while self._backlog:
                first, rows = self._backlog[0]
                try:
                    sent += await self._send(first, rows)
                except (nats.errors.Error, OSError, TimeoutError) as exc:
                    log.debug("telemetry from %s not sent yet: %s", self.bus.name, exc)
                    self._trim()
                    break
                self._backlog.pop(0)
            return sent

    def _trim(self) -> None:
        """Keep at most ``max_backlog`` unsent rows; what goes is counted as lost."""
        while sum(len(r) for _, r in self._backlog) > self.max_backlog and self._backlog:
            self.lost += len(self._backlog.pop(0)[1])

    async def _send(self, first: int, rows: list[tuple[Any, ...]]) -> int:
        nc = self.bus._client()
        limit = nc.max_payload - _HEADROOM
        start = 0
        while start < len(rows):
            end, size = start, 0
            while end < len(rows) and (end == start or size + _row_size(rows[end]) <= limit):
                size += _row_size(rows[end])
                end += 1
            chunk = rows[start:end]
            stripped: list[int] = []
            if size > limit:  # one row, too big by itself: send it without its payload
                row = chunk[0]
                chunk = [(*row[:7], None, *row[8:])]
                stripped = [first + start]
                self.stripped += 1
            body = msgpack.packb({
                "format": FORMAT, "source": self.source, "name": self.bus.name,
                "batch": self.batches, "first": first + start, "rows": chunk,
                "lost": self.lost, "stripped": stripped,
                "metadata": self.bus.recorder.metadata if self.batches == 0 else None,
            }, use_bin_type=True)
            await nc.publish(self.subject, body)
            self.batches += 1
            self.rows += len(chunk)
            start = end
        return len(rows)

    async def stop(self) -> None:
        """Send what is left and stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):  # a closed connection keeps nothing to send
            await self.flush()
            await self.bus._client().flush(2)

    async def unsubscribe(self, timeout: float | None = None) -> None:
        """Same as :meth:`stop` (the bus stops it on close, before draining)."""
        await self.stop()

    def __repr__(self) -> str:
        return f"<TelemetrySender {self.subject} {self.rows} rows in {self.batches} batches>"


@dataclass(slots=True)
class _Source:
    """What the collector knows about one sending process."""

    name: str
    src_first: list[int] = field(default_factory=list)  # segment starts, sender's numbering
    dst_first: list[int] = field(default_factory=list)  # the same segments, ours
    lengths: list[int] = field(default_factory=list)
    next_first: int | None = None
    lost: int = 0
    rows: int = 0
    batches: int = 0

    def map(self, seq: Any) -> int | None:
        if type(seq) is not int:
            return None
        i = bisect.bisect_right(self.src_first, seq) - 1
        if i < 0 or seq >= self.src_first[i] + self.lengths[i]:
            return None  # refers to a row from before this collector started
        return self.dst_first[i] + seq - self.src_first[i]


class Collector:
    """Merges telemetry batches from every process into a bus's recorder; see
    :meth:`Bus.collect`.

    Attributes:
        rows: rows merged so far.
        batches: batches merged so far.
    """

    def __init__(self, bus: Bus, subject: str = f"{TELEMETRY_SUBJECT}.>") -> None:
        self.bus = bus
        self.subject = subject
        self.consumer = None
        self.rows = self.batches = 0
        self.sources: dict[str, _Source] = {}
        self._nats_subs: list[Any] = []

    def sink(self, subject: bytes, reply: bytes, data: bytes, block: bytes | None) -> None:
        """Merge one batch (called for each telemetry message)."""
        recorder = self.bus.recorder
        try:
            batch = msgpack.unpackb(data, raw=False, use_list=False)
            if batch["format"] != FORMAT:
                raise ValueError(f"batch format {batch['format']!r}, expected {FORMAT}")
            key, first, rows = batch["source"], int(batch["first"]), batch["rows"]
        except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
            recorder.add("error", self.bus.name, subject=subject,
                         extra=f"unreadable telemetry batch on {subject.decode('utf-8', 'replace')}"
                               f" ({len(data)} bytes): {exc}")
            return
        source = self.sources.get(key)
        if source is None:
            source = self.sources[key] = _Source(batch.get("name") or key)
            meta = batch.get("metadata") or {}
            recorder.metadata.setdefault("collected", {})[key] = {
                k: meta.get(k) for k in ("client", "server_url", "server_version",
                                         "nats_py_version")}
        if source.next_first is not None and first > source.next_first:
            recorder.add("drop", self.bus.name, consumer=source.name, extra=(
                first - source.next_first,
                f"telemetry: {first - source.next_first} rows from {source.name} never "
                "reached the collector"))
        lost = int(batch.get("lost") or 0)
        if lost > source.lost:
            recorder.add("drop", self.bus.name, consumer=source.name, extra=(
                lost - source.lost, f"telemetry: {source.name} could not send "
                f"{lost - source.lost} rows (backlog limit)"))
            source.lost = lost
        base = recorder.next_seq()
        source.src_first.append(first)
        source.dst_first.append(base)
        source.lengths.append(len(rows))
        source.next_first = max(source.next_first or 0, first + len(rows))
        recorder.rows.extend(self._renumber(source, rows))
        for seq in batch.get("stripped") or ():
            recorder.add("error", self.bus.name, consumer=source.name, extra=(
                f"telemetry: the payload of row {source.map(seq)} from {source.name} was too "
                "large to forward (over the server's max_payload); the row has no payload"))
        source.rows += len(rows)
        source.batches += 1
        self.rows += len(rows)
        self.batches += 1

    @staticmethod
    def _renumber(source: _Source, rows: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Rows as tuples with their references moved to the collector's numbering."""
        out = []
        for row in rows:
            kind, extra = row[0], row[9]
            if kind == "handled":
                extra = (source.map(extra[0]), *extra[1:])
            elif kind == "publish" and extra is not None:
                extra = (source.map(extra) if type(extra) is int
                         else (source.map(extra[0]), *extra[1:]))
            out.append((*row[:9], extra))
        return out

    async def unsubscribe(self, timeout: float | None = None) -> None:
        """Stop collecting."""
        await self.bus._detach(self)

    def __repr__(self) -> str:
        return (f"<Collector {self.rows} rows in {self.batches} batches from "
                f"{len(self.sources)} processes>")
