"""How DuckDB keeps the events and deliveries tables: small, so less of them is spilled.

At 10 M events with a 3 GB budget the two tables were 7.4 GB in DuckDB's memory, most of it
spilled and read back by every analysis (the same analysis took 55 s given 12 GB, 79 s
given 3 GB). Two things make them smaller (5.0 GB, then 4.5 GB; measured in
``bench/scale.py``, see the README):

- **Few-valued text as ``ENUM`` columns.** A kept table holds each text value as a 16-byte
  string; consumer, subject, outcome and the like take a handful of values each. Their
  ``ENUM`` types are made once from the trace's own values, sorted, so an ``ENUM`` orders,
  compares and groups as its text does; a column with more than :data:`MOST` distinct
  values (an error message with an id in it, a subject per order) stays text. Results come
  back as Arrow dictionaries, which :mod:`evtkit._arrow` turns into the same pandas
  columns as text.
- **The deliveries' durations computed where read.** ``queue_s`` and ``processing_s`` are
  differences of the delivery's times (:func:`evtkit.engine.sql.durations`): the table
  keeps the times, and a view of it (what the analyses read as ``deliveries``) adds them.

Where the tables go to a database file (traces many times the budget:
:data:`evtkit.engine.backends.ON_DISK_BEYOND`), DuckDB compresses them as it writes them,
but not by its :data:`SLOW` methods.

DuckDB only: Spark caches its tables compressed already, and the SQL of
:mod:`evtkit.engine.sql` stays the same for both (this wraps it).
"""

from __future__ import annotations

from typing import Any

from .sql import DURATIONS, durations

__all__ = ["ADDED", "ENUMS", "MOST", "SLOW", "Kept"]

ENUMS = {
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

SLOW = ("fsst", "dict_fsst")
"""DuckDB's compression methods a kept database file goes without: its string compression
(FSST, alone or behind a dictionary) tried on every text column of every row group as the
tables are written. At 10 M events kept on disk, one part of the deliveries took 808 ns
per receive with them, 600 ns without, 480 ns uncompressed; the whole analysis 71.7 s,
65.7 s and 61.5 s; the file 1.2, 2.4 and 4.3 GB (``bench/scale.py``, see the README).
The ids stay text as they are; the few-valued text is ``ENUM`` codes, bit-packed."""


class Kept:
    """How one DuckDB database keeps its tables: the ``ENUM`` types, made once from its
    observations, the statements that store a table's rows with them, and the view that
    gives the deliveries their durations."""

    def __init__(self) -> None:
        self.types: dict[str, str] | None = None
        """Observation column → its ``ENUM`` type, once made."""

    def make(self, con: Any, observations: str) -> None:
        """Make the types from the values of view ``observations`` on connection ``con``
        (if not made yet): two scans of its text columns, the first counting their
        distinct values (approximately), the second listing those of the few."""
        if self.types is not None:
            return
        sources = sorted({source for columns in ENUMS.values() for source in columns.values()})
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

    def rows(self, table: str, select: str) -> str:
        """What kept table ``table`` stores of ``select`` (its rows): the few-valued text
        cast to its types, the deliveries without their durations; other tables' as
        they are."""
        columns = {c: self.types[s] for c, s in ENUMS.get(table, {}).items()
                   if self.types and s in self.types}
        left = f" EXCLUDE ({', '.join(DURATIONS)})" if table == "deliveries" else ""
        if not columns and not left:
            return select
        casts = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in columns.items())
        return f"SELECT *{left}{f' REPLACE ({casts})' if casts else ''} FROM ({select}) AS kept"

    @staticmethod
    def on_disk(con: Any) -> None:
        """Have the database of connection ``con`` write its tables without the
        :data:`SLOW` compression methods."""
        con.execute(f"SET disabled_compression_methods = '{','.join(SLOW)}'")

    @staticmethod
    def deliveries(con: Any) -> str:
        """Define the view of kept table ``deliveries`` with its durations (as
        :func:`evtkit.engine.sql.deliveries` has them, last) and return its name."""
        con.execute("CREATE OR REPLACE VIEW deliveries_timed AS SELECT *, "
                    f"{durations('started_at', 'published_at', 'done_at')} FROM deliveries")
        return "deliveries_timed"
