"""The kept tables' text with few distinct values as DuckDB ``ENUM`` columns.

A kept table holds each text value as a 16-byte string; consumer, subject, outcome and the
like take a handful of values each. As ``ENUM`` types (one to two bytes a value) the kept
tables of 10 M events are half as large, so DuckDB spills less of them under its budget
and every analysis reads less (measured in ``bench/scale.py``; see the README). The types
are made from the trace's own values, sorted, so an ``ENUM`` orders, compares and groups as
its text does; a column with more than :data:`MOST` distinct values (an error message with
an id in it, a subject per order) stays text. Results come back as Arrow dictionaries,
which :mod:`evtkit._arrow` turns into the same pandas columns as text.

DuckDB only: Spark caches its tables compressed already, and the SQL of
:mod:`evtkit.engine.sql` stays the same for both (the casts wrap it).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ADDED", "KEPT", "MOST", "Enums"]

KEPT = {
    "events": {"type": "type", "subject": "subject", "source": "source",
               "content_type": "content_type", "mode": "mode", "producer": "observer",
               "emitted_by": "consumer"},
    "deliveries": {"consumer": "consumer", "queue": "queue", "observer": "observer",
                   "subject": "subject", "type": "type", "outcome": "outcome",
                   "error": "error", "ack": "ack"},
}
"""Kept table → its columns that may be ``ENUM`` → the observation column whose values
they take (an event's producer is a publish row's observer)."""
ADDED = {"outcome": "pending"}
"""Values a kept table makes besides the observations' (a receive not handled is
``pending``: :func:`evtkit.engine.sql.deliveries`). A value outside its type would be an
error, never a wrong answer."""
MOST = 65_536
"""Most distinct values of a column kept as an ``ENUM`` (two-byte codes); beyond it, text.
Counted approximately (HyperLogLog, ~2 %): only the codes' width depends on it."""


class Enums:
    """The ``ENUM`` types of one DuckDB database, made once from its observations."""

    def __init__(self) -> None:
        self.types: dict[str, str] | None = None
        """Observation column → its ``ENUM`` type, once made."""

    def make(self, con: Any, observations: str) -> None:
        """Make the types from the values of view ``observations`` on connection ``con``
        (if not made yet): two scans of its text columns, the first counting their
        distinct values (approximately), the second listing those of the few."""
        if self.types is not None:
            return
        sources = sorted({source for columns in KEPT.values() for source in columns.values()})
        counts = con.execute("SELECT " + ", ".join(
            f"approx_count_distinct({s})" for s in sources) + f" FROM {observations}"
        ).fetchall()[0]
        few = [s for s, n in zip(sources, counts, strict=True) if n <= MOST]
        types: dict[str, str] = {}
        if few:
            con.execute("CREATE OR REPLACE TEMP TABLE evtkit_words AS SELECT " + ", ".join(
                f"list(DISTINCT {s}) AS {s}" for s in few) + f" FROM {observations}")
            try:
                for source in few:
                    added = f" UNION ALL SELECT '{ADDED[source]}'" if source in ADDED else ""
                    types[source] = f"evtkit_{source}"
                    con.execute(
                        f"CREATE OR REPLACE TYPE {types[source]} AS ENUM (SELECT DISTINCT w "
                        f"FROM (SELECT unnest({source}) AS w FROM evtkit_words{added}) "
                        "WHERE w IS NOT NULL ORDER BY w)")
            finally:
                con.execute("DROP TABLE evtkit_words")
        self.types = types

    def cast(self, table: str, select: str) -> str:
        """``select`` (the rows of kept table ``table``) with its few-valued text columns
        cast to their types; other tables' as they are."""
        columns = {c: self.types[s] for c, s in KEPT.get(table, {}).items()
                   if self.types and s in self.types}
        if not columns:
            return select
        casts = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in columns.items())
        return f"SELECT * REPLACE ({casts}) FROM ({select}) AS typed"
