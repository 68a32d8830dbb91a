"""The recorder: a list of observation rows that grows cheaply and becomes frames on demand.

Capture code appends plain tuples (layout in :data:`evtkit.observation.ROW_FIELDS`) — no
parsing, no DataFrame work on the hot path. :meth:`Recorder.trace` builds a
:class:`~evtkit.trace.Trace` from everything recorded so far; :meth:`Recorder.drain` hands
rows over in batches (how ``evtkit record`` writes segments while capturing).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..observation import Row, build_observations
from ..trace import Trace

if TYPE_CHECKING:
    from ..asyncapi import Spec

__all__ = ["EVENT_MEMORY", "Recorder", "Stats"]

EVENT_MEMORY = 250_000
"""Event ids :meth:`Recorder.stats` keeps (twice over) to count repeated observations of
an event once: repeats further apart than this many events count again."""


@dataclass(slots=True)
class Stats:
    """Running totals for live progress views; always derivable from the rows too.

    A message the bus publishes while a tap is on is observed twice (its ``publish`` row
    and its ``tap`` row), as is a service's event collected by telemetry and tapped here:
    ``messages`` counts observations; ``events`` and ``events_by_subject`` count each event
    once, as ``trace.events`` does (by ``ce-id``, or the synthetic id of a message without
    one), from when :meth:`Recorder.count_events` was called (live views call it).
    """

    messages: int = 0
    """``publish`` and ``tap`` rows."""
    events: int = 0
    """Distinct events among them (see :meth:`Recorder.count_events`)."""
    drops: int = 0
    errors: int = 0
    """Handler calls that raised."""
    by_subject: Counter[str] = field(default_factory=Counter)
    """``publish`` and ``tap`` rows per subject."""
    events_by_subject: Counter[str] = field(default_factory=Counter)
    """Distinct events per subject."""
    by_consumer: Counter[str] = field(default_factory=Counter)
    """Deliveries (``receive`` rows) per consumer."""
    handled_by_consumer: Counter[str] = field(default_factory=Counter)
    """Deliveries finished per consumer: handled, failed or dropped."""
    errors_by_consumer: Counter[str] = field(default_factory=Counter)
    """Handler calls that raised, per consumer."""

    def pending(self, consumer: str) -> int:
        """Deliveries ``consumer`` has received and not finished yet (queued or in its
        handler)."""
        return max(self.by_consumer[consumer] - self.handled_by_consumer[consumer], 0)


_ID = b"\nce-id:"


def _event_key(row: tuple[Any, ...]) -> str | bytes | None:
    """A message row's event id (None when it names none), the same for every observation
    of one event: a tap's synthetic id, else the ``ce-id`` value as bytes."""
    extra = row[Row.EXTRA]
    if isinstance(extra, str):  # a tap's synthetic id for a message without ce-id
        return extra
    block = row[Row.HEADERS]
    if not block:
        return None
    start = block.find(_ID)
    if start < 0:
        start = block.lower().find(_ID)
        if start < 0:
            return None
    start += len(_ID)
    end = block.find(b"\n", start)
    return block[start:end if end >= 0 else len(block)].strip()


class _Seen:
    """Recently seen event keys, in two generations of at most ``size`` each: repeated
    observations of an event arrive close together (a publish and its tap within
    milliseconds, a service's telemetry within seconds), so memory stays bounded on
    endless recordings while every repeat within ``size`` events is recognised."""

    __slots__ = ("new", "old", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.new: set[str | bytes] = set()
        self.old: set[str | bytes] = set()

    def add(self, key: str | bytes) -> None:
        """Remember ``key`` (the caller checked it is in neither generation)."""
        if len(self.new) >= self.size:
            self.old, self.new = self.new, set()
        self.new.add(key)


class Recorder:
    """Collects observation rows for one or more connections.

    Args:
        metadata: extra key/values stored with traces built from this recorder.
    """

    def __init__(self, metadata: dict[str, Any] | None = None) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.started_ns = time.time_ns()
        self.drops = 0
        self._base = 0
        self._seen = 0
        self._stats = Stats()
        self._events: _Seen | None = None

    # -- hot path ----------------------------------------------------------------------------

    def next_seq(self) -> int:
        """The ``seq`` the next appended row will get."""
        return self._base + len(self.rows)

    def add(self, kind: str, observer: str, *, consumer: str | None = None,
            queue: str | None = None, subject: bytes | None = None, extra: Any = None) -> int:
        """Append a non-message row (handled, drop, disconnect...) and return its seq."""
        seq = self.next_seq()
        self.rows.append(
            (kind, time.time_ns(), observer, consumer, queue, subject, None, None, None, extra)
        )
        if kind == "drop":
            self.drops += extra[0]
        return seq

    # -- frames --------------------------------------------------------------------------------

    def drain(self) -> tuple[int, list[tuple[Any, ...]]]:
        """Take the rows recorded since the last drain: ``(seq of the first, rows)``.

        The list object the hot path appends to stays the same, so bound ``append``
        methods remain valid.
        """
        self.stats()  # count the rows before they leave
        first = self._base
        taken = self.rows[:]
        del self.rows[: len(taken)]
        self._base += len(taken)
        return first, taken

    def observations(self) -> pd.DataFrame:
        """The ``observations`` frame of every row not yet drained."""
        return build_observations(self.rows[:], self._base)

    def trace(self, *, spec: Spec | None = None) -> Trace:
        """A :class:`~evtkit.trace.Trace` of every row not yet drained (with ``spec``
        attached, if given)."""
        meta = dict(self.metadata)
        meta.setdefault("started_at_ns", self.started_ns)
        meta["ended_at_ns"] = time.time_ns()
        return Trace(self.observations(), meta, spec=spec)

    def count_events(self) -> None:
        """Make :meth:`stats` count distinct events (``events``, ``events_by_subject``) from
        now on; rows counted before and still held are counted at once (rows drained before
        are not). Off until asked, because reading every message's id costs about 1 µs
        a message, which a recording that only shows row counts need not pay."""
        if self._events is not None:
            return
        self._events = _Seen(EVENT_MEMORY)
        self._count_events(self.rows[: max(self._seen - self._base, 0)])

    def _count_events(self, rows: list[tuple[Any, ...]]) -> None:
        seen, stats = self._events, self._stats
        assert seen is not None
        kind, subject_at = Row.KIND, Row.SUBJECT
        subjects: Counter[bytes | None] = Counter()
        count = 0
        for row in rows:
            if row[kind] != "publish" and row[kind] != "tap":
                continue
            key = _event_key(row)
            if key is not None:
                if key in seen.new or key in seen.old:
                    continue
                seen.add(key)
            count += 1
            subjects[row[subject_at]] += 1
        stats.events += count
        for subject, n in subjects.items():  # names decoded once per subject, not per row
            stats.events_by_subject[subject.decode("utf-8", "replace") if subject else ""] += n

    def stats(self) -> Stats:
        """Totals so far (counts rows appended since the previous call, so it stays cheap)."""
        stats = self._stats
        rows = self.rows
        start = max(self._seen - self._base, 0)
        new = rows[start:]
        for row in new:
            kind = row[Row.KIND]
            if kind == "receive":
                stats.by_consumer[row[Row.CONSUMER]] += 1
            elif kind in ("publish", "tap"):
                stats.messages += 1
                subject = row[Row.SUBJECT]
                stats.by_subject[subject.decode("utf-8", "replace") if subject else ""] += 1
            elif kind == "handled":
                consumer = row[Row.CONSUMER]
                stats.handled_by_consumer[consumer] += 1
                if row[Row.EXTRA][2] == "error":
                    stats.errors += 1
                    stats.errors_by_consumer[consumer] += 1
        if self._events is not None:
            self._count_events(new)
        stats.drops = self.drops
        self._seen = self._base + len(rows)
        return stats
