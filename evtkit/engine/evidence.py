"""The diagnosis's questions (:class:`evtkit.analysis.evidence.Evidence`) answered by an
engine's queries, so ``Dataset.diagnose()`` runs the very rules of
:mod:`evtkit.analysis.diagnose` on a trace left on disk, holding one consumer's deliveries
at a time while the next consumer's are read on the engine's other connection; and
``Dataset.problems()`` finds the facts of :func:`evtkit.analysis.problems.problems` the
same way."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..analysis import problems as words
from ..analysis.causal import on_cycles, propagate
from ..analysis.evidence import ROWS, Evidence, by_subject
from .flows import lineage
from .sql import EVENT_ORDER, one_of

if TYPE_CHECKING:
    from ..trace import Trace
    from .dataset import Dataset

__all__ = ["EngineEvidence", "problems"]

_TIMES = ("published_at", "received_at", "started_at", "done_at")


def _times(frame: pd.DataFrame) -> np.ndarray:
    """A frame's ``published_at`` (ns), sorted."""
    return np.sort(frame["published_at"].to_numpy(dtype=np.int64), kind="stable")


class EngineEvidence(Evidence):
    """The answers from a :class:`~evtkit.engine.dataset.Dataset`'s engine."""

    keep = 1  # one consumer's deliveries in memory at a time (and the next one's, read)

    def __init__(self, dataset: Dataset, *, read_ahead: bool = True) -> None:
        """Answers from ``dataset``'s engine; ``read_ahead=False``: never a consumer's rows
        read before they are asked for (two consumers' would not fit in memory)."""
        self.ds = dataset
        self._reads_ahead = read_ahead
        self._ahead: list[str] = []  # whose rows the diagnosis reads next, in order
        self._next: tuple[str, Future[pd.DataFrame]] | None = None  # being read
        self._counts: dict[str, int] | None = None  # each consumer's deliveries

    def _frame(self, sql: str, categories: tuple[str, ...] = (), times: tuple[str, ...] = (),
               **params: Any) -> pd.DataFrame:
        return self.ds._engine.frame(sql, params, categories=categories, times=times)

    def span(self) -> tuple[int, int]:
        s = self.ds.summary()
        return (s["first_ns"], s["last_ns"]) if s["observations"] else (0, 0)

    def consumers(self) -> list[str]:
        return sorted(self._sizes())

    def _sizes(self) -> dict[str, int]:
        """How many deliveries each consumer has (so its rows are read into arrays of that
        size: see :func:`evtkit._arrow.filled`)."""
        if self._counts is None:
            counts = self._frame("SELECT consumer, count(*) AS n FROM __deliveries__ "
                                 "WHERE consumer IS NOT NULL GROUP BY consumer")
            self._counts = {str(c): int(n) for c, n in zip(counts["consumer"], counts["n"],
                                                           strict=True)}
        return self._counts

    def read_ahead(self, consumers: list[str]) -> None:
        self._ahead = list(consumers)
        self._keep_next()
        self._read_next()

    def _keep_next(self) -> None:
        """Let go of the read under way unless it is the next one asked for (cancelled if
        it has not begun)."""
        if self._next is not None and self._next[0] not in self._ahead[:1]:
            self._next[1].cancel()
            self._next = None

    def _read_next(self) -> None:
        """Start reading the next consumer's rows on the engine's other connection, so
        DuckDB finds them while the rules work in Python on the rows read before (at 10 M
        events, 0.5 s of each consumer's ~1.3 s); not on an engine that would read them
        at once."""
        if self._next is None and self._ahead and self._reads_ahead and \
                self.ds._engine.reads_aside:
            sql, params, options = self._rows_query(self._ahead[0], self._sizes())
            self._next = self._ahead[0], self.ds._engine.frame_soon(sql, params, **options)

    @staticmethod
    def _rows_query(consumer: str, sizes: dict[str, int]
                    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        return (f"SELECT {', '.join(ROWS)} FROM __deliveries__ WHERE consumer = :c",
                {"c": consumer},  # (in any order: pace.start_order orders them)
                # (as the trace in memory holds them: fewer bytes, quicker tests)
                {"categories": ("observer", "subject", "outcome", "error"), "times": _TIMES,
                 "size": sizes.get(consumer, 0)})

    def deliveries_of(self, consumer: str) -> pd.DataFrame:
        if consumer in self._ahead:  # (those before it were not asked for after all)
            del self._ahead[:self._ahead.index(consumer)]
        if self._next is not None and self._next[0] == consumer:
            rows = self._next[1].result()
            self._next = None
            del self._ahead[:1]
        else:  # out of turn: read now, the read under way kept if it is still the next
            self._keep_next()
            sql, params, options = self._rows_query(consumer, self._sizes())
            rows = self.ds._engine.frame(sql, params, **options)
            if self._ahead[:1] == [consumer]:
                del self._ahead[:1]
        self._read_next()
        rows["processing_s"] = rows["processing_s"].astype(float)
        return rows.reset_index(drop=True)

    def handler_medians(self) -> dict[str, float]:
        ok = "outcome = 'ok' AND processing_s IS NOT NULL"
        frame = self.ds.by_consumers(lambda where: (
            "SELECT consumer, percentile_cont(0.5) WITHIN GROUP (ORDER BY processing_s) AS m "
            f"FROM __deliveries__ WHERE {ok} AND consumer IS NOT NULL AND ({where}) "
            "GROUP BY consumer"), rows=ok)
        return {str(c): float(m) for c, m in zip(frame["consumer"], frame["m"], strict=True)}

    def floors(self) -> pd.Series:
        frame = self._frame(
            "SELECT observer, min(received_at - published_at) AS floor FROM __deliveries__ "
            "WHERE received_at IS NOT NULL AND published_at IS NOT NULL "
            "AND observer IS NOT NULL GROUP BY observer ORDER BY observer")
        return pd.Series(frame["floor"].to_numpy(dtype=np.int64),
                         index=frame["observer"].astype(str).to_numpy())

    def received_by(self, observer: str) -> int:
        return int(self._frame("SELECT count(*) AS n FROM __deliveries__ "
                               "WHERE observer = :o", o=observer)["n"].iloc[0])

    def early_s(self, observer: str) -> float:
        got = self._frame(
            "SELECT max(published_at - CASE WHEN started_at IS NULL OR received_at <= "
            "started_at THEN coalesce(received_at, started_at) ELSE started_at END) AS ns "
            "FROM __deliveries__ WHERE observer = :o", o=observer)["ns"].iloc[0]
        return float(got) / 1e9 if pd.notna(got) else 0.0

    def expected(self, consumer: str, subjects: list[str], since: int
                 ) -> tuple[np.ndarray, np.ndarray]:
        where, params = one_of("subject", subjects)
        self.ds._keep("missed")
        mine = self._frame(f"SELECT published_at FROM __events__ WHERE published_at >= :since "
                           f"AND {where}", since=since, **params)
        missed = self._frame(f"SELECT published_at FROM __missed__ WHERE consumer = :c AND "
                             f"published_at >= :since AND {where}", c=consumer, since=since,
                             **params)
        return _times(mine), _times(missed)

    def root_publishes(self) -> Iterator[tuple[tuple[str, str], np.ndarray]]:
        roots = "causation_id IS NULL AND emitted_by IS NULL"
        keys = self._frame(f"SELECT DISTINCT coalesce(source, '?') AS source, "
                           f"coalesce(subject, '?') AS subject FROM __events__ WHERE {roots}")
        for source, subject in sorted(zip(keys["source"].astype(str),
                                          keys["subject"].astype(str), strict=True)):
            times = self._frame(
                f"SELECT published_at FROM __events__ WHERE {roots} AND "
                "coalesce(source, '?') = :source AND coalesce(subject, '?') = :subject",
                source=source, subject=subject)["published_at"]
            yield (source, subject), times.to_numpy(dtype=np.int64)

    def coverage(self) -> pd.DataFrame:
        s = self.ds.summary()
        if not s["deliveries"] or not s["events"]:
            return pd.DataFrame(columns=["subject", "events", "lonely", "begin", "end"])
        frame = self._frame("""
            WITH e AS (
                SELECT CASE WHEN substr(coalesce(subject, '?'), 1, 7) = '_INBOX.'
                            THEN '_INBOX.>' ELSE coalesce(subject, '?') END AS subject,
                       coalesce(deliveries, 0) = 0 AS lonely, published_at
                FROM __events__)
            SELECT subject, count(*) AS events,
                   count(CASE WHEN lonely THEN 1 END) AS lonely,
                   min(CASE WHEN lonely THEN published_at END) AS first_at,
                   max(CASE WHEN lonely THEN published_at END) AS last_at
            FROM e GROUP BY subject""").rename(columns={"first_at": "begin", "last_at": "end"})
        frame["subject"] = frame["subject"].astype(str)
        return frame.sort_values("subject").reset_index(drop=True)

    def emitters(self) -> dict[str, set[str]]:
        pairs = self._frame("SELECT DISTINCT subject, emitted_by FROM __events__ "
                            "WHERE subject IS NOT NULL AND emitted_by IS NOT NULL")
        return by_subject(pairs)

    def problems(self) -> pd.DataFrame:
        return self.ds.problems()

    @property
    def rare(self) -> Trace:
        return self.ds._rare


def problems(ds: Dataset) -> pd.DataFrame:
    """:func:`evtkit.analysis.problems.problems` of a dataset, its facts found by queries
    (causation followed explicitly: links the in-memory path infers for events without
    causality are not made here)."""
    q = ds._engine.frame
    rows: list[dict[str, Any]] = []
    rows += words.cycle_rows(_loops(ds))

    if int(q("SELECT count(*) AS n FROM __events__ WHERE publishes > 1")["n"].iloc[0]):
        twice = q("""
            WITH p AS (SELECT event_id, seq, row_number() OVER (PARTITION BY event_id
                                                                ORDER BY seq) AS k
                       FROM __observations__ WHERE kind = 'publish' AND event_id IN (
                           SELECT event_id FROM __events__ WHERE publishes > 1))
            SELECT event_id FROM p WHERE k = 2 ORDER BY seq""")["event_id"]
        rows += words.duplicate_rows([str(x) for x in twice])

    early = q("""
        WITH d AS (
            SELECT observer, event_id,
                   row_number() OVER (PARTITION BY observer ORDER BY seq) AS k,
                   published_at - CASE WHEN started_at IS NULL OR received_at <= started_at
                       THEN coalesce(received_at, started_at) ELSE started_at END AS ahead
            FROM __deliveries__
            WHERE observer IS NOT NULL AND (received_at < published_at OR queue_s < 0))
        SELECT observer, count(*) AS n, max(ahead) AS ahead,
               min(CASE WHEN k = 1 THEN event_id END) AS event_id
        FROM d GROUP BY observer ORDER BY observer""")
    for row in early.itertuples(index=False):
        consumers = q("SELECT DISTINCT consumer FROM __deliveries__ WHERE observer = :o AND "
                      "(received_at < published_at OR queue_s < 0)", {"o": row.observer})
        rows.append(words.clock_row(str(row.observer), int(row.n), row.event_id,
                                    sorted(consumers["consumer"].astype(str)),
                                    float(row.ahead) / 1e9))

    for kind, outcome in (("failed", "error"), ("dropped", "dropped")):
        bad = q("""
            WITH d AS (SELECT consumer, event_id,
                              row_number() OVER (PARTITION BY consumer ORDER BY seq) AS k
                       FROM __deliveries__ WHERE outcome = :outcome AND consumer IS NOT NULL),
                 t AS (SELECT consumer, count(*) AS total FROM __deliveries__
                       GROUP BY consumer)
            SELECT d.consumer, count(*) AS n, max(t.total) AS total,
                   min(CASE WHEN d.k = 1 THEN d.event_id END) AS event_id
            FROM d JOIN t ON t.consumer = d.consumer GROUP BY d.consumer ORDER BY d.consumer""",
                {"outcome": outcome})
        for row in bad.itertuples(index=False):
            detail = q("""
                SELECT subject, error, count(*) AS n, min(seq) AS first FROM __deliveries__
                WHERE outcome = :outcome AND consumer = :c GROUP BY subject, error""",
                       {"outcome": outcome, "c": row.consumer})
            errors = detail.dropna(subset=["error"]).groupby("error")[["n", "first"]] \
                .agg({"n": "sum", "first": "min"}).sort_values(["n", "first"],
                                                               ascending=[False, True])
            rows.append(words.outcome_row(
                kind, str(row.consumer), int(row.n), int(row.total),
                sorted({str(x) for x in detail["subject"].dropna()}), row.event_id,
                errors.index[0] if len(errors) else None))

    # The causal tree's first level (kept by lineage()) is every event whose cause is not
    # in the trace: the orphans are those of them that name one.
    lineage(ds._engine)
    orphan = q(f"""
        WITH o AS (SELECT e.event_id, e.causation_id, e.published_at, e.first_seen_at,
                          e.first_seq FROM __events__ e
                   JOIN __lineage_1__ r ON r.event_id = e.event_id
                   WHERE e.causation_id IS NOT NULL),
             n AS (SELECT count(*) AS n FROM o)
        SELECT n.n, o.event_id, o.causation_id FROM n
        LEFT JOIN (SELECT * FROM o ORDER BY {EVENT_ORDER} LIMIT 1) o ON TRUE""")
    if int(orphan["n"].iloc[0]):
        rows.append(words.orphan_row(int(orphan["n"].iloc[0]), orphan["event_id"].iloc[0],
                                     orphan["causation_id"].iloc[0]))

    if ds.summary()["deliveries"]:
        lonely = q(f"""
            WITH l AS (SELECT coalesce(subject, '?') AS subject, event_id, row_number() OVER (
                           PARTITION BY coalesce(subject, '?') ORDER BY {EVENT_ORDER}) AS k
                       FROM __events__ WHERE deliveries = 0)
            SELECT subject, count(*) AS n, min(CASE WHEN k = 1 THEN event_id END) AS event_id
            FROM l GROUP BY subject""")
        for row in lonely.sort_values("subject").itertuples(index=False):
            rows.append(words.unreceived_row(str(row.subject), int(row.n), row.event_id))
    rows += words.advisory_rows(ds._rare.advisories)
    return words.to_frame(rows)


def _loops(ds: Dataset) -> list[list[str]]:
    """Causation loops: the explicit links as integers (each event's ``first_seq``, unique),
    followed by the in-memory path's own code; only the events on loops come back by id,
    in the trace's event order. Only an event on a loop, or below one, is never reached
    from a root: when the causal tree (kept for ``chains()``) holds every event, there is
    none, and the links are not read."""
    q = ds._engine.frame
    lineage(ds._engine)
    if int(q("SELECT (SELECT count(*) FROM __events__) - (SELECT count(*) FROM __lineage__) "
             "AS n")["n"].iloc[0]) == 0:
        return []
    links = q("SELECT e.first_seq AS id, c.first_seq AS parent FROM __events__ e "
              "LEFT JOIN __events__ c ON c.event_id = e.causation_id")
    ids = links["id"].to_numpy(dtype=np.int64)
    order = np.argsort(ids)
    ids = ids[order]
    parent_id = links["parent"].to_numpy(dtype=np.int64, na_value=-1)[order]
    parent = np.where(parent_id >= 0, np.searchsorted(ids, parent_id), -1)
    depth, _, _ = propagate(parent, np.zeros(len(parent), bool), np.zeros(len(parent),
                                                                          np.int64))
    unreached = np.flatnonzero(depth == 0)
    if not len(unreached):
        return []
    members = ids[np.unique(on_cycles(parent, unreached))]
    rows = q(f"""SELECT event_id, causation_id FROM __events__
                 WHERE first_seq IN ({', '.join(str(int(i)) for i in members)})
                 ORDER BY {EVENT_ORDER}""")
    cause_of = dict(zip(rows["event_id"].astype(str), rows["causation_id"].astype(str),
                        strict=True))
    return words._loops(list(cause_of), cause_of)
