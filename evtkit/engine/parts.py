"""The kept tables built in parts that fit DuckDB's budget, where one query would spill.

DuckDB spills a join or aggregate that outgrows its budget, and a spilled join is slow: at
10 M events with a 500 MB budget (100 M events' ratio to 5 GB) the events' join to their
best rows took 28.6 s and the deliveries' joins 41–46 s; at 100 M events with 5 GB the
deliveries ran into the spill bound. Cut by ``seq`` so that each part holds a slice of
both sides of its joins, the same tables take 15 s and 20.5 s (whole analysis 106–113 →
71 s), and the tables of 100 M events are built in 6 minutes.

Each function here builds its table in parts and returns True, or returns False where one
query fits (the caller then runs it): :class:`evtkit.engine.backends.DuckDBEngine` asks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .sql import EVENTS_SEEN_EARLIER, SIGHTINGS
from .sql import deliveries as deliveries_sql
from .sql import events as events_sql

if TYPE_CHECKING:
    from .backends import DuckDBEngine

__all__ = ["EVENT_BYTES_PER_ROW", "JOIN_BYTES_PER_EVENT", "PART_BYTES_PER_RECEIVE",
           "deliveries", "events"]

EVENT_BYTES_PER_ROW = 16
"""What building the events in one query takes of DuckDB's memory per observation row
(its aggregate and join held 70 M rows in 1.5 GB, not in 250 MB)."""
JOIN_BYTES_PER_EVENT = 100
"""What joining the events' sightings to their best rows takes per event, so that a part
of them fits in half the budget (at 10 M events, 500 MB: 4 parts 8.4 s, 8 parts 9.4 s, 16
parts 10.3–12.8 s; one part 35.6 s)."""
PART_BYTES_PER_RECEIVE = 128
"""What building the deliveries takes of DuckDB's memory per receive (its joins to the
handled rows and the events), so that a part of them fits in half the budget (measured at
10 M events, 500 MB: parts of 1.9 M receives were quickest, 22 s; of 3.8 M 29 s, of 0.5 M
31 s)."""


def events(engine: DuckDBEngine) -> bool:
    """Keep ``events`` in parts unless one query fits in half the budget
    (:data:`EVENT_BYTES_PER_ROW` per observation row): each event's sightings
    (:data:`~evtkit.engine.sql.SIGHTINGS`) kept first, then joined to their best rows in
    parts by ``seq`` (:data:`JOIN_BYTES_PER_EVENT` each)."""
    if engine._rows() * EVENT_BYTES_PER_ROW <= engine.room():
        return False
    engine._define("sightings", engine.text(SIGHTINGS), keep=True)
    try:
        n, first, last = _values(engine, "SELECT count(*), min(best), max(best) "
                                         "FROM __sightings__")
        if n:
            _build(engine, "building events", _kept(engine, "events", events_sql(part=True)),
                   n * JOIN_BYTES_PER_EVENT, first, last)
            engine.names["events"] = "events"
    finally:  # (also when a part failed: the sightings are of no use then)
        engine.con.execute("DROP TABLE IF EXISTS sightings")
        del engine.names["sightings"]
    return bool(n)


def deliveries(engine: DuckDBEngine, handled_once: bool) -> bool:
    """Keep ``deliveries`` in parts unless its joins fit in half the budget
    (:data:`PART_BYTES_PER_RECEIVE` per receive): the receives by ``seq``, each part
    joined to its handled rows and to its slice of the events (those first seen from the
    part before it on); then the receives of events first seen earlier given theirs
    (:data:`~evtkit.engine.sql.EVENTS_SEEN_EARLIER`), in parts of the events by
    ``first_seq`` too where there are many (every receive, when a consumer drains a
    backlog published before it began). Not kept unless all of it is done."""
    (receives,) = _values(engine, "SELECT sum(deliveries) FROM __events__")
    if receives * PART_BYTES_PER_RECEIVE <= engine.room():
        return False
    first, last = _values(engine, "SELECT min(seq), max(seq) FROM __observations__ "
                                  "WHERE kind = 'receive'")
    try:
        _build(engine, "building deliveries",
               _kept(engine, "deliveries", deliveries_sql(handled_once, part=True)),
               receives * PART_BYTES_PER_RECEIVE, first, last, since=True)
        engine.names["deliveries"] = "deliveries"
        (missed,) = _values(engine, "SELECT count(*) FROM __deliveries__ "
                                    "WHERE event_seq IS NULL AND event_id IS NOT NULL")
        if missed:
            events, first, last = _values(engine, "SELECT count(*), min(first_seq), "
                                                  "max(first_seq) FROM __events__")
            update = engine.text(EVENTS_SEEN_EARLIER)
            _build(engine, "giving deliveries their events", (update, update),
                   min(missed * PART_BYTES_PER_RECEIVE, events * JOIN_BYTES_PER_EVENT),
                   first, last, at_least=1)
    except BaseException:  # (not kept: the next analysis builds them again)
        engine.names.pop("deliveries", None)
        raise
    return True


def _kept(engine: DuckDBEngine, name: str, select: str) -> tuple[str, str]:
    """The statements that keep ``select`` as table ``name``: its first part, the rest."""
    select = engine.kept.rows(name, select)
    return f"CREATE OR REPLACE TABLE {name} AS {select}", f"INSERT INTO {name} {select}"


_LOWEST = -(2**63)  # (a part's bounds stay BIGINTs, whatever seq a file holds)


def _build(engine: DuckDBEngine, label: str, statements: tuple[str, str], nbytes: int,
           first: int, last: int, *, since: bool = False, at_least: int = 2) -> None:
    """Run the first of ``statements`` over the first part of ``seq`` from ``first`` to
    ``last`` (``:lo`` to ``:last``; with ``since``, ``:since`` a part's length before
    ``:lo``), the second over each part after it, so many parts (``at_least``) that each
    holds its share of ``nbytes`` in half the budget; each shown as ``label (i of n)``
    where the engine shows progress."""
    parts = max(at_least, -(-nbytes // max(1, engine.room())))
    starts = range(first, last + 1, max(1, -(-(last + 1 - first) // parts)))
    for i, at in enumerate(starts):
        part = {"lo": at, "last": min(last, at + starts.step - 1)}
        if since:
            part["since"] = max(_LOWEST, at - starts.step)
        with engine._within_budget(), engine._shown(f"{label} ({i + 1} of {len(starts)})"):
            engine.con.execute(engine._query(statements[min(i, 1)]), part)


def _values(engine: DuckDBEngine, sql: str) -> tuple[int, ...]:
    """The integers of the one row ``sql`` gives (NULL as 0)."""
    with engine._within_budget():
        got = engine.con.execute(engine.text(sql)).fetchall()
    return tuple(int(v or 0) for v in got[0])
