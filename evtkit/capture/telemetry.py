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

Nothing is lost silently: each batch is a request that a collector answers after merging
it, so a busy collector slows senders down instead of the server dropping batches for it
(a slow consumer); unanswered batches stay queued and are sent again (the collector skips
rows it already has), up to ``max_backlog`` rows, beyond which they are counted as lost and
reported; batches are split to fit the server's ``max_payload``, and a row whose payload
alone is too big travels without it and the collector records an ``error`` row saying so;
rows that never arrived (a gap in a sender's sequence numbers) become a ``drop`` row.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import nats

from ..errors import EvtkitError
from ..observation import Row, check_rows
from ._nats_errors import FAILURES
from ._tasks import Loop
from .credentials import redact
from .router import Router

__all__ = ["TELEMETRY_SUBJECT", "Collector", "TelemetrySender"]

log = logging.getLogger("evtkit")

TELEMETRY_SUBJECT = "_EVTKIT.telemetry"
"""Prefix of the telemetry subjects (``_EVTKIT.telemetry.<bus name>``)."""
FORMAT = 1
"""Version of the batch layout; a collector ignores (and reports) other versions."""
_HEADROOM = 4096  # bytes kept free under max_payload for the batch envelope
_ROW_OVERHEAD = 64
_BYTES = (Row.SUBJECT, Row.REPLY, Row.PAYLOAD, Row.HEADERS)  # the fields that hold bytes


def _row_size(row: tuple[Any, ...]) -> int:
    return _ROW_OVERHEAD + sum(len(row[i]) for i in _BYTES if row[i] is not None)


class TelemetrySender:
    """Ships a bus's rows to collectors; see :meth:`Bus.send_telemetry`.

    Attributes:
        batches: batches sent.
        rows: rows sent.
        lost: rows given up after ``max_backlog`` was exceeded (reported to collectors).
        stripped: rows sent without their payload because it alone exceeded max_payload.
    """

    def __init__(self, router: Router, interval: float = 0.5, max_backlog: int = 200_000,
                 ack_timeout: float = 5.0) -> None:
        if interval <= 0:
            raise ValueError(f"telemetry interval must be positive, not {interval}")
        self.router = router
        self.interval = interval
        self.max_backlog = max_backlog
        self.ack_timeout = ack_timeout
        self.subject = f"{TELEMETRY_SUBJECT}.{router.name}"
        self.source = f"{socket.gethostname()}/{os.getpid()}/{router.name}/{time.time_ns()}"
        self.batches = self.rows = self.lost = self.stripped = 0
        self._backlog: list[tuple[int, list[tuple[Any, ...]]]] = []
        self._loop: Loop | None = None
        self._lock = asyncio.Lock()

    def start(self) -> TelemetrySender:
        """Send every ``interval`` seconds from now on."""
        self._loop = Loop(self.flush, self.interval)
        return self

    async def flush(self) -> int:
        """Send every row recorded so far now; return how many rows a collector confirmed.

        Each batch is a request that a collector answers once it has merged it, so a slow
        collector slows the senders down instead of the server dropping batches for it.
        Without an answer (no collector, or it is busy) the rows stay queued for the next
        flush; beyond ``max_backlog`` the oldest are given up and counted in ``lost``.
        """
        async with self._lock:
            first, rows = self.router.recorder.drain()
            if rows:
                self._backlog.append((first, rows))
            sent = 0
            while self._backlog:
                first, rows = self._backlog[0]
                try:
                    n = await self._send_chunk(first, rows)
                except FAILURES as exc:
                    log.debug("telemetry from %s not sent yet: %s", self.router.name,
                              redact(f"{type(exc).__name__}: {exc}"))
                    self._trim()
                    break
                sent += n
                if n == len(rows):
                    self._backlog.pop(0)
                else:
                    self._backlog[0] = (first + n, rows[n:])
            return sent

    def _trim(self) -> None:
        """Keep at most ``max_backlog`` unsent rows; what goes is counted as lost."""
        while sum(len(r) for _, r in self._backlog) > self.max_backlog and self._backlog:
            self.lost += len(self._backlog.pop(0)[1])

    async def _send_chunk(self, first: int, rows: list[tuple[Any, ...]]) -> int:
        """Send the leading rows that fit in one message, wait for a collector's answer,
        and return how many went."""
        nc = self.router.client
        limit = nc.max_payload - _HEADROOM
        end, size = 0, 0
        while end < len(rows) and (end == 0 or size + _row_size(rows[end]) <= limit):
            size += _row_size(rows[end])
            end += 1
        chunk = rows[:end]
        stripped: list[int] = []
        if size > limit:  # one row, too big by itself: send it without its payload
            chunk = [(*chunk[0][:Row.PAYLOAD], None, *chunk[0][Row.PAYLOAD + 1:])]
            stripped = [first]
        body = msgpack.packb({
            "format": FORMAT, "source": self.source, "name": self.router.name,
            "batch": self.batches, "first": first, "rows": chunk, "lost": self.lost,
            "stripped": stripped, "metadata": self.router.recorder.metadata,
        }, use_bin_type=True)
        answer = await nc.request(self.subject, body, timeout=self.ack_timeout)
        if answer.data.startswith(b"-ERR"):  # the collector refused it: sending again won't help
            self.lost += len(chunk)
            log.warning("telemetry from %s: a collector refused %d rows: %s", self.router.name,
                        len(chunk), answer.data[5:].decode("utf-8", "replace"))
        self.stripped += len(stripped)
        self.batches += 1
        self.rows += len(chunk)
        return len(chunk)

    async def stop(self) -> None:
        """Send what is left and stop."""
        if self._loop is not None:
            await self._loop.stop()
            self._loop = None
        try:
            await self.flush()
            await self.router.flush(2)
        except (nats.errors.Error, OSError, TimeoutError, EvtkitError) as exc:
            # Nothing to send it on any more: say so, with how much stays behind.
            left = sum(len(rows) for _, rows in self._backlog)
            log.warning("telemetry from %s: %d rows could not be sent before closing (%s)",
                        self.router.name, left, type(exc).__name__)

    async def unsubscribe(self, timeout: float | None = None) -> None:
        """Same as :meth:`stop` (the bus stops it on close, before draining)."""
        await self.stop()

    def __repr__(self) -> str:
        return f"<TelemetrySender {self.subject} {self.rows} rows in {self.batches} batches>"


MAX_COUNT = 2**32
"""The most rows a batch may say were lost or skipped, and the most messages one ``drop``
row may count: larger claims are refused (they could only be forged or corrupt, and would
overflow a trace's totals)."""
_MAX_TEXT = 300
# Rows from the network keep times a trace can hold: ns since 1970, below int64's NaT end.
_TS_RANGE = (0, 2**63 - 2)


@dataclass(frozen=True, slots=True)
class Batch:
    """One telemetry batch, checked: every field of the type and range it must have."""

    source: str
    name: str
    first: int
    rows: tuple[tuple[Any, ...], ...]
    lost: int
    stripped: tuple[int, ...]
    metadata: dict[str, Any]


def read_batch(data: bytes) -> Batch:
    """Decode and check one batch as a sender wrote it.

    Raises:
        ValueError: saying what is wrong (not MessagePack, another format version, a field
            missing or of the wrong type or out of range, a malformed row).
    """
    try:
        batch = msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises many kinds on garbage
        raise ValueError(f"not a MessagePack batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"a batch is a map, not {type(batch).__name__}")
    if batch.get("format") != FORMAT:
        raise ValueError(f"batch format {batch.get('format')!r}, expected {FORMAT}")
    source = _text_field(batch, "source")
    rows: tuple[tuple[Any, ...], ...] = batch.get("rows")  # type: ignore[assignment]
    check_rows(rows)  # a tuple of rows, each shaped as ROW_FIELDS says
    for row in rows:
        if not _TS_RANGE[0] <= row[Row.TS] <= _TS_RANGE[1]:
            raise ValueError(f"a row's time {row[Row.TS]} is not ns since 1970")
        if row[Row.KIND] == "drop" and not 0 <= row[Row.EXTRA][0] <= MAX_COUNT:
            raise ValueError(f"a drop row counts {row[Row.EXTRA][0]} messages")
    first = _count(batch, "first", 2**62)
    stripped = batch.get("stripped") or ()
    if not isinstance(stripped, tuple) or not all(
            type(seq) is int and first <= seq < first + len(rows) for seq in stripped):
        raise ValueError("stripped must list seqs of rows in the batch")
    metadata = batch.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata is a map, not {type(metadata).__name__}")
    name = batch.get("name") or source
    return Batch(source, name if isinstance(name, str) else source, first, rows,
                 _count(batch, "lost", MAX_COUNT), stripped, metadata)


def _text_field(batch: dict[Any, Any], key: str) -> str:
    value = batch.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT:
        raise ValueError(f"{key} must be text of 1 to {_MAX_TEXT} characters")
    return value


def _count(batch: dict[Any, Any], key: str, most: int) -> int:
    value = batch.get(key, 0)
    if type(value) is not int or not 0 <= value <= most:
        raise ValueError(f"{key} must be a whole number from 0 to {most}, not {value!r:.40}")
    return value


def _connection(reply: bytes) -> str:
    """The sending connection as far as NATS shows it: nats-py answers requests on inboxes
    ``_INBOX.<per-connection prefix>.<token>``, so the prefix names the connection."""
    return reply.rpartition(b".")[0].decode("utf-8", "replace")


def _short(value: Any) -> str | None:
    """A metadata value from a sender, as bounded text."""
    return None if value is None else str(value)[:_MAX_TEXT]


@dataclass(slots=True)
class _Source:
    """What the collector knows about one sending process."""

    name: str
    connection: str  # the sender's connection, as its reply inbox names it
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
        refused: batches refused (each also became an ``error`` row saying why).
        busy_s: CPU seconds spent merging batches (what collecting costs this process).
        span_s: wall seconds from the first merged batch to the latest.
    """

    consumer = None

    def __init__(self, router: Router, subject: str = f"{TELEMETRY_SUBJECT}.>") -> None:
        self.router = router
        self.subject = subject
        self.rows = self.batches = self.refused = 0
        self.busy_s = self.span_s = 0.0
        self._first_at: float | None = None
        self.sources: dict[str, _Source] = {}
        self._answers: set[asyncio.Task[None]] = set()

    def sink(self, subject: bytes, reply: bytes, data: bytes, block: bytes | None) -> None:
        """Merge one batch (called for each telemetry message)."""
        started = time.process_time()
        try:
            self._merge(subject, reply, data)
        finally:
            self.busy_s += time.process_time() - started
            now = time.perf_counter()
            self._first_at = self._first_at if self._first_at is not None else now
            self.span_s = now - self._first_at

    def _merge(self, subject: bytes, reply: bytes, data: bytes) -> None:
        recorder = self.router.recorder
        observer = self.router.name
        where = subject.decode("utf-8", "replace")
        try:
            batch = read_batch(data)
            source = self._source_of(batch, _connection(reply))
            unresolved = self._take(source, batch)
        except Exception as exc:  # noqa: BLE001 - nothing a sender sends may stop collecting
            recorder.add("error", observer, subject=subject,
                         extra=f"unreadable telemetry batch on {where} ({len(data)} bytes), "
                               f"refused: {exc}")
            self.refused += 1
            if reply:
                self._answer(reply, b"-ERR " + str(exc).encode()[:200])
            return
        if unresolved:
            recorder.add("error", observer, consumer=source.name, extra=(
                f"telemetry: {unresolved} rows from {source.name} refer to rows this collector "
                "never received (sent before it started, or lost); their links are empty"))
        if reply:
            self._answer(reply, b"+OK")

    def _source_of(self, batch: Batch, connection: str) -> _Source:
        """The sender ``batch`` claims to be; refused if that claim was first made from
        another connection (a batch never speaks for someone else's rows)."""
        source = self.sources.get(batch.source)
        if source is None:
            source = self.sources[batch.source] = _Source(batch.name, connection)
            self.router.recorder.metadata.setdefault("collected", {})[batch.source] = {
                k: _short(batch.metadata.get(k)) for k in ("client", "server_url",
                                                           "server_version", "nats_py_version")}
        elif source.connection != connection:
            raise ValueError(f"it claims to come from {source.name} ({batch.source}), which "
                             "sends from another connection")
        return source

    def _take(self, source: _Source, batch: Batch) -> int:
        """Merge the rows of ``batch`` new to ``source``; return how many rows refer to rows
        the collector does not have."""
        recorder = self.router.recorder
        observer = self.router.name
        first, rows = batch.first, batch.rows
        if source.next_first is not None and first < source.next_first:
            # Sent again after an answer was lost: keep only what is new.
            rows = rows[source.next_first - first:]
            first = source.next_first
        if source.next_first is not None and first > source.next_first:
            gap = first - source.next_first
            if gap > MAX_COUNT:
                raise ValueError(f"its rows start {gap} after the last ones: not plausible")
            recorder.add("drop", observer, consumer=source.name, extra=(
                gap, f"telemetry: {gap} rows from {source.name} never reached the collector"))
        if batch.lost > source.lost:
            recorder.add("drop", observer, consumer=source.name, extra=(
                batch.lost - source.lost, f"telemetry: {source.name} could not send "
                f"{batch.lost - source.lost} rows (backlog limit)"))
            source.lost = batch.lost
        base = recorder.next_seq()
        source.src_first.append(first)
        source.dst_first.append(base)
        source.lengths.append(len(rows))
        source.next_first = max(source.next_first or 0, first + len(rows))
        renumbered, unresolved = self._renumber(source, rows)
        recorder.rows.extend(renumbered)
        for seq in batch.stripped:
            recorder.add("error", observer, consumer=source.name, extra=(
                f"telemetry: the payload of row {source.map(seq)} from {source.name} was too "
                "large to forward (over the server's max_payload); the row has no payload"))
        source.rows += len(rows)
        source.batches += 1
        self.rows += len(rows)
        self.batches += 1
        return unresolved

    def _answer(self, reply: bytes, body: bytes) -> None:
        """Tell the sender its batch is merged (``+OK``) or refused (``-ERR why``). The sink
        runs synchronously in nats-py's read loop, so the reply is sent from a task."""
        nc = self.router.client
        if nc.is_closed:
            return
        task = asyncio.get_running_loop().create_task(
            nc.publish(reply.decode("utf-8", "replace"), body))
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    @staticmethod
    def _renumber(source: _Source, rows: tuple[Any, ...]) -> tuple[list[tuple[Any, ...]], int]:
        """Rows as tuples with their references moved to the collector's numbering, and
        how many references point at rows the collector does not have."""
        out = []
        unresolved = 0
        for row in rows:
            kind, extra = row[Row.KIND], row[Row.EXTRA]
            ref = None
            if kind == "handled":
                ref = extra[0]
                extra = (source.map(ref), *extra[1:])
            elif kind == "publish" and extra is not None:
                ref = extra if type(extra) is int else extra[0]
                extra = (source.map(extra) if type(extra) is int
                         else (source.map(extra[0]), *extra[1:]))
            if ref is not None and source.map(ref) is None:
                unresolved += 1
            out.append((*row[:Row.EXTRA], extra))
        return out, unresolved

    async def start(self) -> Collector:
        """Subscribe to the telemetry subjects; returns once the server has the subscription."""
        await self.router.attach(self, self.subject)
        return self

    async def unsubscribe(self, timeout: float | None = None) -> None:
        """Stop collecting."""
        await self.router.detach(self)

    def __repr__(self) -> str:
        return (f"<Collector {self.rows} rows in {self.batches} batches from "
                f"{len(self.sources)} processes>")
