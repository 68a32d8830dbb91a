"""A consumer as the diagnosis reads it: its deliveries, loaded when a rule first reads
them and let go of when the evidence allows only so many at a time (a diagnosis on disk
holds one consumer's), and the order they will be read in told to the evidence ahead, so
an engine can read the next consumer's while the rules work on this one's."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from .evidence import Evidence
from .pace import select

__all__ = ["Consumer", "Holding"]


class Consumer:
    """One consumer's deliveries, in handler start order, and its typical pace.

    ``rows`` are loaded from the evidence when first read and may be let go between rules
    (a diagnosis on disk holds one consumer's rows at a time)."""

    __slots__ = ("_calls", "_load", "_rows", "baseline", "name", "revisit", "subjects",
                 "typical", "workers")

    def __init__(self, name: str, load: Callable[[Consumer], pd.DataFrame]) -> None:
        self.name, self._load = name, load
        self.typical = 0.0
        self.baseline: float | None = None
        self.workers: list[str] = []
        self.subjects: list[str] = []
        self._rows: pd.DataFrame | None = None
        self._calls: pd.DataFrame | None = None
        self.revisit = True
        """Whether the rules that follow flows can find anything in its rows."""

    @property
    def rows(self) -> pd.DataFrame:
        """Its deliveries (the columns of :data:`evtkit.analysis.evidence.ROWS`)."""
        if self._rows is None:
            self._rows = self._load(self)
        return self._rows

    @property
    def calls(self) -> pd.DataFrame:
        """The rows whose handler ran to an end (``ok`` or ``error``)."""
        if self._calls is None:
            self._calls = select(self.rows, self.rows["outcome"].isin(["ok", "error"]))
        return self._calls

    def release(self) -> None:
        """Let go of the rows (read again when next needed)."""
        self._rows = self._calls = None


class Holding:
    """Whose rows a diagnosis holds: at most the evidence's ``keep`` consumers', those read
    longest ago let go of first.

    Args:
        evidence: where the rows come from.
        arrange: what becomes of a consumer's rows as read (ordered, clocks corrected).
    """

    def __init__(self, evidence: Evidence,
                 arrange: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
        self.evidence, self._arrange = evidence, arrange
        self._held: list[Consumer] = []

    def load(self, c: Consumer) -> pd.DataFrame:
        """``c``'s rows for :attr:`Consumer.rows`, letting go of others' beforehand as
        far as the evidence asks (so the rules never hold two consumers' where one is
        allowed; the evidence may be reading the next one's meanwhile)."""
        self._held = [x for x in self._held if x is not c]
        for x in self._make_room(self._held):
            x.release()
        rows = self._arrange(self.evidence.deliveries_of(c.name))
        self._held.append(c)
        return rows

    def visit(self, order: Sequence[Consumer]) -> None:
        """Tell the evidence whose rows the rules will read next, visiting ``order``: each
        consumer not held by then (see :meth:`Evidence.read_ahead`)."""
        held, reads = list(self._held), []
        for c in order:  # (as load() will: rows held stay, in the order they were read)
            if c not in held:
                self._make_room(held)
                held.append(c)
                reads.append(c.name)
        self.evidence.read_ahead(reads)

    def release(self) -> None:
        """Let go of every consumer's rows held (the diagnosis is done). The consumers,
        this holding and the diagnosis refer to each other, so they wait for Python's
        cycle collector: rows left in them outlived the diagnosis (at 100 M events a
        consumer's 33 M deliveries, into ``lag()`` and beyond: peaks of 8.2–9.3 GB, not
        6.85 GB)."""
        for c in self._held:
            c.release()
        self._held.clear()

    def _make_room(self, held: list[Consumer]) -> list[Consumer]:
        """Take out of ``held`` (and return) those read longest ago, so that one more
        consumer's rows fit in what the evidence lets a diagnosis hold."""
        gone = held[:max(len(held) - self.evidence.keep + 1, 0)]
        del held[:len(gone)]
        return gone
