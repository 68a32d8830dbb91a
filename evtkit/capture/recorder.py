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
from typing import Any

import pandas as pd

from ..observation import Row, build_observations
from ..trace import Trace

__all__ = ["Recorder", "Stats"]


@dataclass(slots=True)
class Stats:
    """Running totals for live progress views; always derivable from the rows too."""

    messages: int = 0
    drops: int = 0
    errors: int = 0
    by_subject: Counter[str] = field(default_factory=Counter)
    by_consumer: Counter[str] = field(default_factory=Counter)


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

    def trace(self) -> Trace:
        """A :class:`~evtkit.trace.Trace` of every row not yet drained."""
        meta = dict(self.metadata)
        meta.setdefault("started_at_ns", self.started_ns)
        meta["ended_at_ns"] = time.time_ns()
        return Trace(self.observations(), meta)

    def stats(self) -> Stats:
        """Totals so far (counts rows appended since the previous call, so it stays cheap)."""
        stats = self._stats
        rows = self.rows
        start = max(self._seen - self._base, 0)
        for row in rows[start:]:
            kind = row[Row.KIND]
            if kind == "receive":
                stats.by_consumer[row[Row.CONSUMER]] += 1
            elif kind in ("publish", "tap"):
                stats.messages += 1
                subject = row[Row.SUBJECT]
                stats.by_subject[subject.decode("utf-8", "replace") if subject else ""] += 1
            elif kind == "handled" and row[Row.EXTRA][2] == "error":
                stats.errors += 1
        stats.drops = self.drops
        self._seen = self._base + len(rows)
        return stats
