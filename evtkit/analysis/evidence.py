"""What the diagnosis reads, asked as questions rather than taken as whole frames.

:class:`Evidence` answers them from a :class:`~evtkit.trace.Trace` in memory. An engine
answers the same questions with queries over files (:mod:`evtkit.engine.evidence`), so the
rules of :mod:`evtkit.analysis.diagnose` run unchanged on traces larger than memory: the
only per-delivery data they hold is one consumer's deliveries at a time (and, being read,
the next one's).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..schema import fill
from .finding import NAT

if TYPE_CHECKING:
    from ..trace import Trace

__all__ = ["ROWS", "Evidence"]

ROWS = ["observer", "subject", "published_at", "received_at", "started_at", "done_at",
        "outcome", "processing_s", "error", "delivery_count", "seq"]
"""The delivery columns the rules read (a consumer's rows, in capture order)."""


def by_subject(pairs: pd.DataFrame) -> dict[str, set[str]]:
    """``subject, emitted_by`` rows → subject → the consumers that emitted on it."""
    emitted: dict[str, set[str]] = {}
    for subject, who in zip(pairs["subject"], pairs["emitted_by"], strict=True):
        emitted.setdefault(str(subject), set()).add(str(who))
    return emitted


class Evidence:
    """The answers the rules need, from a trace in memory.

    Attributes:
        keep: how many consumers' rows a diagnosis may hold at once: one, as on disk
            (rows in memory are read again in milliseconds; all of them held at once
            were 0.2 GB at 1 M events).
    """

    keep = 1

    def __init__(self, trace: Trace) -> None:
        self.trace = trace

    def span(self) -> tuple[int, int]:
        """The first and last instant of the trace (ns; 0, 0 when empty)."""
        ts = self.trace.observations["ts"].array.asi8
        return (int(ts.min()), int(ts.max())) if len(ts) else (0, 0)

    def consumers(self) -> list[str]:
        """Names of the consumers with deliveries, sorted."""
        dv = self.trace.deliveries
        return sorted(str(c) for c in dv["consumer"].dropna().unique())

    def deliveries_of(self, consumer: str) -> pd.DataFrame:
        """The :data:`ROWS` of one consumer's deliveries, in capture order (an engine may
        give them in any order: the diagnosis puts them in handler start order, ``seq``
        breaking ties)."""
        dv = self.trace.deliveries
        return dv.loc[(dv["consumer"] == consumer).to_numpy(), ROWS]

    def read_ahead(self, consumers: list[str]) -> None:
        """The consumers whose :meth:`deliveries_of` the diagnosis will ask for next, in
        that order (an engine reads the next one's while the rules work on the last's;
        in memory there is nothing to read)."""

    def handler_medians(self) -> dict[str, float]:
        """Each consumer's median handler time over its successful calls (for baselines)."""
        dv = self.trace.deliveries
        return dv[dv["outcome"] == "ok"].groupby("consumer", observed=True)["processing_s"] \
            .median().dropna().to_dict()

    def floors(self) -> pd.Series:
        """Per observer, the shortest publish → receive time it saw (ns)."""
        dv = self.trace.deliveries
        latency = dv["received_at"].array.asi8 - dv["published_at"].array.asi8
        observer = dv["observer"].astype("category")  # (by code: as text, 0.3 GB at 1 M)
        codes = observer.cat.codes.to_numpy()
        known = (dv["received_at"].array.asi8 != NAT) & (dv["published_at"].array.asi8 != NAT) \
            & (codes >= 0)
        floor = pd.Series(latency[known]).groupby(codes[known]).min()
        floor.index = observer.cat.categories[floor.index].astype(str)
        return floor.sort_index()

    def received_by(self, observer: str) -> int:
        """Deliveries ``observer`` received."""
        return int((self.trace.deliveries["observer"] == observer).sum())

    def early_s(self, observer: str) -> float:
        """How much earlier than its publish ``observer`` saw an event, at most (seconds)."""
        dv = self.trace.deliveries
        mine = dv[dv["observer"] == observer]
        seen = mine[["received_at", "started_at"]].min(axis=1)
        early = (mine["published_at"] - seen).dt.total_seconds()
        return float(early.max()) if early.notna().any() else 0.0

    def expected(self, consumer: str, subjects: list[str], since: int
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Publish times (ns, sorted) of the events on ``subjects`` published from
        ``since``, and of those among them that never reached ``consumer``."""
        ev = self.trace.events
        pub = ev["published_at"].array.asi8
        mine = ev["subject"].isin(subjects).to_numpy() & (pub >= since)
        delivered = np.zeros(len(ev), bool)
        idx = self.trace.delivery_events[(self.trace.deliveries["consumer"] == consumer)
                                         .to_numpy()]
        delivered[idx[idx >= 0]] = True
        return (np.sort(pub[mine], kind="stable"),
                np.sort(pub[mine & ~delivered], kind="stable"))

    def root_publishes(self) -> Iterator[tuple[tuple[str, str], np.ndarray]]:
        """Per producer (``source``) and subject of root events, their publish times."""
        ev = self.trace.events
        roots = ev[ev["causation_id"].isna() & ev["emitted_by"].isna()]
        for key, part in roots.groupby([fill(roots["source"], "?"),
                                        fill(roots["subject"], "?")]):
            yield (str(key[0]), str(key[1])), part["published_at"].array.asi8

    def coverage(self) -> pd.DataFrame:
        """Per subject (``_INBOX.`` ones as ``_INBOX.>``): ``subject, events, lonely``
        (reached no consumer), ``begin, end`` (first and last publish of the lonely ones,
        ns); empty when nothing was delivered at all."""
        ev = self.trace.events
        if self.trace.deliveries.empty or ev.empty:
            return pd.DataFrame(columns=["subject", "events", "lonely", "begin", "end"])
        subject = fill(ev["subject"], "?").astype("category")
        names = pd.Series(subject.cat.categories.astype(str))  # (per subject, not per event)
        names = names.where(~names.str.startswith("_INBOX."), "_INBOX.>")
        # Grouped by number, named after: grouping a million names as text took 0.13 GB.
        code, named = pd.factorize(names, sort=True)
        lonely = ev["deliveries"].fillna(0).to_numpy() == 0
        pub = ev["published_at"].array.asi8
        frame = pd.DataFrame({"subject": code[subject.cat.codes.to_numpy()], "lonely": lonely,
                              "begin": np.where(lonely, pub, np.iinfo(np.int64).max),
                              "end": np.where(lonely, pub, NAT)})
        out = frame.groupby("subject", sort=True).agg(
            events=("lonely", "size"), lonely=("lonely", "sum"), begin=("begin", "min"),
            end=("end", "max")).reset_index()
        out["subject"] = np.asarray(named, dtype=object)[out["subject"].to_numpy()]
        return out

    def emitters(self) -> dict[str, set[str]]:
        """Subject → the consumers whose handlers published events on it."""
        ev = self.trace.events
        return by_subject(ev[["subject", "emitted_by"]].dropna().drop_duplicates())

    def problems(self) -> pd.DataFrame:
        """:func:`evtkit.analysis.problems.problems` of the trace."""
        return self.trace.problems()

    @property
    def rare(self) -> Trace:
        """The trace the rare rows (disconnects, JetStream samples and advisories) are read
        from: here the whole one; an engine loads just those rows."""
        return self.trace

    @property
    def gaps(self) -> pd.DataFrame:
        """Disconnections (``trace.gaps``)."""
        return self.rare.gaps

    @property
    def consumer_info(self) -> pd.DataFrame:
        """JetStream consumer samples (``trace.consumer_info``)."""
        return self.rare.consumer_info

    @property
    def advisories(self) -> pd.DataFrame:
        """JetStream advisories (``trace.advisories``)."""
        return self.rare.advisories
