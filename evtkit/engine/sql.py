"""The analyses as SQL, written once for every engine.

Each function returns one ``SELECT`` (with ``WITH`` clauses) in the subset of SQL that DuckDB
and Spark SQL read the same way: ``row_number() OVER``, ``percentile_cont(q) WITHIN GROUP``,
``CASE``, ``regexp_extract``, window frames, no dialect-only functions. Times are BIGINT
nanoseconds since the epoch throughout (an engine's ``observations`` view provides them as
such: Spark cannot read Parquet's nanosecond timestamps as timestamps), durations are
DOUBLE seconds. The definitions follow :class:`evtkit.trace.Trace` and
:mod:`evtkit.analysis` row for row; ``tests/test_engine.py`` checks they agree.

The views build on one another::

    raw (engine: the Parquet files, with a ``file`` column)
      → observations (shards' seq and ref shifted so they follow one another)
      → events → deliveries (kept)
      → missed, flow_deliveries (kept when an analysis first needs them)
      → delivery_stats, backlog, fanout, flows, summary
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..schema import OBSERVATIONS

RAW = "__raw__"
"""The engine's view of the files, in query text (``__name__`` names a view)."""

__all__ = ["COLUMNS", "DURATIONS", "EVENTS_SEEN_EARLIER", "EVENT_ORDER", "HANDLED_ONCE",
           "MISSED", "RAW", "SEQ_LIMIT", "SIGHTINGS", "TIMES", "backlog", "deliveries",
           "delivery_stats", "distinct_consumers", "durations", "events", "expand_percentiles",
           "fanout", "fanout_names", "flow_deliveries", "flows", "one_of", "summary", "views"]


def _sql_type(arrow: pa.DataType) -> str:
    if pa.types.is_timestamp(arrow) or pa.types.is_integer(arrow):
        return "BIGINT"
    if pa.types.is_binary(arrow):
        return "BINARY"
    if pa.types.is_map(arrow):
        return "MAP"
    return {"string": "STRING", "bool": "BOOLEAN", "double": "DOUBLE"}[str(arrow)]


COLUMNS = {c.name: _sql_type(c.arrow) for c in OBSERVATIONS.columns}
"""Observation columns and their SQL types (timestamps as BIGINT ns; ``MAP`` is a map of
strings). Views keep them all, so a selection can be loaded whole; the analyses read few of
them and engines prune the rest (payloads stay on disk)."""
TIMES = tuple(c.name for c in OBSERVATIONS.columns if pa.types.is_timestamp(c.arrow))
"""The columns that are timestamps in files and BIGINT nanoseconds in the views."""


_EVENT_COLUMNS = ("type", "subject", "source", "correlation_id", "causation_id", "trace_id",
                  "size", "content_type", "mode", "id_synthetic", "replay_of", "event_time")


SEQ_LIMIT = 10**18
"""Every ``seq`` (shards' shifted) is from 0 to below this, which the engines check when
a trace is opened: an event's best row is found by one number, its kind's rank times
this plus its ``seq``, which must stay a BIGINT and below the next rank."""
_RANK = SEQ_LIMIT


def views(sharded: bool = False) -> dict[str, str]:
    """The views every analysis starts from, in order: ``observations`` (over the files),
    ``events`` and ``deliveries`` — name → ``SELECT``. Engines keep the last two (DuckDB as
    tables of its private database, Spark cached), so each analysis reads them instead of
    the files.

    An event's ``first_seq`` (its first row's ``seq``) is unique: deliveries carry it as
    ``event_seq``, so the analyses that pair deliveries with events join on an integer
    rather than on ``event_id`` text (a third quicker at 30 M deliveries).

    In the text, ``__name__`` stands for the engine's name of view ``name``."""
    plain = ", ".join(f"r.{c}" for c in COLUMNS if c not in ("seq", "ref"))
    return {
        # Shards number their rows on their own: each file's rows are shifted past the
        # shards before it (``__shifts__``: file, shift — a few rows, from the footers).
        "observations": f"""
SELECT r.seq + coalesce(s.shift, 0) AS seq, r.ref + coalesce(s.shift, 0) AS ref, {plain}
FROM {RAW} r LEFT JOIN __shifts__ s ON s.file = r.file""" if sharded else f"""
SELECT r.seq, r.ref, {plain} FROM {RAW} r""",
        "events": events(),
        "deliveries": deliveries(handled_once=True),
    }


# The row that describes an event best: its publish, else a tap, else a receive; then the
# first of them. As one number, so an aggregate finds it without sorting. (seq numbers
# every row once: the best row is found again by its seq alone, an integer join, not by
# event_id and rank)
_BEST = f"CASE kind WHEN 'publish' THEN 0 WHEN 'tap' THEN 1 ELSE 2 END * {_RANK} + seq"
SIGHTINGS = f"""
SELECT event_id, min({_BEST}) % {_RANK} AS best, min(ts) AS first_seen,
       min(CASE WHEN kind = 'publish' THEN ts END) AS published,
       count(CASE WHEN kind = 'receive' THEN 1 END) AS deliveries,
       count(CASE WHEN kind = 'publish' THEN 1 END) AS publishes,
       min(seq) AS first_seq
FROM __observations__ WHERE kind IN ('publish', 'receive', 'tap') GROUP BY event_id"""
"""Each event's sightings summed up: the ``seq`` of its best row, when it was first seen
and published, its deliveries and publishes, its first ``seq``."""


def events(part: bool = False) -> str:
    """The ``events`` view: each event's best row (:data:`SIGHTINGS`) with its sightings'
    sums. With ``part``, from a kept ``sightings`` view, the events whose best row's
    ``seq`` is from ``:lo`` to ``:last``: both sides of the join cut alike (it is on ``seq``), so
    the parts together are the whole and each fits in memory where the whole join spilled
    (at 100 M events, 29 GB)."""
    best = ", ".join(f"m.{c}" for c in _EVENT_COLUMNS)
    sightings = "(SELECT * FROM __sightings__ WHERE best BETWEEN :lo AND :last)" if part \
        else f"({SIGHTINGS})"
    return f"""
SELECT m.event_id, {best},
       coalesce(s.published, s.first_seen) AS published_at, s.first_seen AS first_seen_at,
       CASE WHEN m.kind = 'publish' THEN m.observer END AS producer,
       CASE WHEN m.kind = 'publish' THEN m.consumer END AS emitted_by,
       CASE WHEN m.kind = 'publish' THEN m.ref END AS emitted_seq,
       s.deliveries, s.publishes, s.first_seq
FROM __observations__ m JOIN {sightings} s ON m.seq = s.best""" + (
        "\nWHERE m.seq BETWEEN :lo AND :last" if part else "")


def deliveries(handled_once: bool, part: bool = False) -> str:
    """The ``deliveries`` view: each receive with its handler's row (matched by ``ref``;
    a receive handled more than once takes its last, as loading does) and its event's.

    With ``handled_once`` every handled row is joined as it is: right only when no
    receive was handled twice, which :meth:`evtkit.engine.backends.Engine.prepare`
    checks by counting (:data:`HANDLED_ONCE`), and a third quicker at 30 M deliveries
    (no aggregate over the handled rows to find each receive's last, nor a join back to
    them: 16 → 12 s).

    With ``part``, one part of them: the receives whose ``seq`` is from ``:lo`` to ``:last`` (and
    so the handled rows whose ``ref`` is), each with its event only if that was first
    seen at ``:since`` or later (``first_seq``; never after the receive, one of its
    sightings, so not after ``:last``): a part joins a slice of the events, not all of them,
    and fits in memory where the whole join would spill. A receive of an event first
    seen earlier has no event columns (``event_seq`` NULL): :data:`EVENTS_SEEN_EARLIER`
    fills them in."""
    within = " AND ref BETWEEN :lo AND :last" if part else ""
    handled = "SELECT ref, ts, started_at, outcome, error, ack FROM __observations__ " \
        f"WHERE kind = 'handled'{within}"
    if not handled_once:
        handled = f"""SELECT h.ref, h.ts, h.started_at, h.outcome, h.error, h.ack
        FROM __observations__ h JOIN (
            SELECT ref, max(seq) AS seq FROM __observations__ WHERE kind = 'handled'{within}
            GROUP BY ref) last ON h.seq = last.seq"""
    events = "(SELECT * FROM __events__ WHERE first_seq BETWEEN :since AND :last)" \
        if part else "__events__"
    receives = " AND r.seq BETWEEN :lo AND :last" if part else ""
    return f"""
SELECT r.event_id, r.consumer, r.queue, r.observer, r.subject, e.type, e.correlation_id,
       e.published_at, r.ts AS received_at, h.started_at,
       CASE WHEN h.outcome = 'dropped' THEN NULL ELSE h.ts END AS done_at,
       coalesce(h.outcome, 'pending') AS outcome, h.error, r.delivery_count, h.ack, r.seq,
       e.first_seq AS event_seq,
       {durations("h.started_at", "e.published_at",
                  "CASE WHEN h.outcome = 'dropped' THEN NULL ELSE h.ts END")}
FROM __observations__ r
LEFT JOIN ({handled}) h ON h.ref = r.seq
LEFT JOIN {events} e ON e.event_id = r.event_id
WHERE r.kind = 'receive'{receives}"""


def _seconds(end: str, start: str) -> str:
    """``end - start`` (BIGINT nanoseconds) in DOUBLE seconds."""
    return f"CAST({end} - {start} AS DOUBLE) / 1e9"


DURATIONS = ("queue_s", "processing_s")
"""The deliveries' columns computed from their times (:func:`durations`), last of them."""


def durations(started: str, published: str, done: str) -> str:
    """A delivery's :data:`DURATIONS` from the expressions of its handler's start, its
    event's publish and its handler's end: from publish to start, from start to end."""
    queue, processing = DURATIONS
    return f"{_seconds(started, published)} AS {queue}, {_seconds(done, started)} AS {processing}"


EVENTS_SEEN_EARLIER = """
UPDATE __deliveries__ SET type = e.type, correlation_id = e.correlation_id,
       published_at = e.published_at, event_seq = e.first_seq
FROM __events__ e
WHERE __deliveries__.event_seq IS NULL AND e.event_id = __deliveries__.event_id
  AND e.first_seq BETWEEN :lo AND :last"""
"""Gives the deliveries built in parts (``deliveries(part=True)``) the event columns of
the events a part did not join (first seen before its slice), from the events first seen
from ``:lo`` to ``:last``: an ``UPDATE`` (DuckDB's dialect; Spark builds the deliveries in
one query) of the rows without them. (DuckDB keeps no :data:`DURATIONS`: its view of the
deliveries computes them, see :mod:`evtkit.engine.kept`.)"""


HANDLED_ONCE = """
SELECT (SELECT count(*) FROM __deliveries__)
       = (SELECT count(*) FROM __observations__ WHERE kind = 'receive') AS once"""
"""Whether ``deliveries(handled_once=True)`` holds one row per receive (a receive handled
twice would appear twice; events are one row per ``event_id``)."""


EVENT_ORDER = "published_at, first_seen_at, first_seq"
"""The order of ``Trace.events`` (by publish, then first sighting, then capture order)."""


def summary() -> str:
    """Counts and the time span: one row (``observations, events, deliveries, consumers,
    errors, dropped, pending, first_ns, last_ns``): one read of the observations and of
    each kept table (the deliveries' counts from one scan, not one scan each)."""
    return """
WITH o AS (SELECT count(*) AS observations, min(ts) AS first_ns, max(ts) AS last_ns
           FROM __observations__),
     d AS (SELECT count(*) AS deliveries, count(DISTINCT consumer) AS consumers,
                  count(CASE WHEN outcome = 'error' THEN 1 END) AS errors,
                  count(CASE WHEN outcome = 'dropped' THEN 1 END) AS dropped,
                  count(CASE WHEN outcome = 'pending' THEN 1 END) AS pending
           FROM __deliveries__)
SELECT o.observations, (SELECT count(*) FROM __events__) AS events, d.deliveries,
       d.consumers, d.errors, d.dropped, d.pending, o.first_ns, o.last_ns
FROM o CROSS JOIN d
"""


def one_of(name: str, values: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """``name IN (:name0, ...)`` and its parameters (FALSE for none)."""
    if not values:
        return "FALSE", {}
    params = {f"{name}{i}": v for i, v in enumerate(values)}
    return f"{name} IN ({', '.join(':' + k for k in params)})", params


PERCENTILES = {"queue_s": (0.5, 0.95, 0.99), "processing_s": (0.5, 0.95)}
"""The percentiles :func:`delivery_stats` computes, per column."""


def delivery_stats(percentiles: Callable[[str, tuple[float, ...]], str], where: str = "TRUE"
                   ) -> str:
    """Per consumer and queue group (as :func:`evtkit.analysis.lag.lag` counts them):
    deliveries, queue-time and processing percentiles (linear interpolation), errors and
    drops.

    ``percentiles(column, qs)`` is the engine's aggregate of several percentiles at once,
    as one array (``queue_s_ps``, ``processing_s_ps``; :func:`expand_percentiles` makes
    them columns): one sort of each column instead of one per percentile, and one copy of
    its values held instead of five (which ran DuckDB out of a 2 GB budget at 30 M
    deliveries). Of the consumers ``where`` picks (the percentiles hold every value of
    their groups at once: a caller asks for so many consumers at a time)."""
    return f"""
SELECT consumer, coalesce(queue, '') AS queue, count(*) AS deliveries,
       {percentiles("queue_s", PERCENTILES["queue_s"])} AS queue_s_ps,
       max(queue_s) AS queue_max_s,
       {percentiles("processing_s", PERCENTILES["processing_s"])} AS processing_s_ps,
       count(CASE WHEN outcome = 'error' THEN 1 END) AS errors,
       count(CASE WHEN outcome = 'dropped' THEN 1 END) AS dropped
FROM __deliveries__
WHERE consumer IS NOT NULL AND ({where})
GROUP BY consumer, coalesce(queue, '')
ORDER BY consumer, queue
"""


def expand_percentiles(stats: pd.DataFrame) -> pd.DataFrame:
    """:func:`delivery_stats`' arrays as columns ``queue_p50_s, ...``, in the order of
    :func:`evtkit.analysis.lag.lag` (``queue_max_s`` after the queue percentiles)."""
    columns: dict[str, object] = {c: stats[c] for c in ("consumer", "queue", "deliveries")}
    for column, qs in PERCENTILES.items():
        values = [np.full(len(qs), np.nan) if v is None else np.asarray(v, float)
                  for v in stats[f"{column}_ps"]]
        table = np.vstack(values) if values else np.empty((0, len(qs)))
        prefix = column.removesuffix("_s")
        for k, q in enumerate(qs):
            columns[f"{prefix}_p{round(q * 100)}_s"] = table[:, k]
        if column == "queue_s":
            columns["queue_max_s"] = stats["queue_max_s"]
    columns.update(errors=stats["errors"], dropped=stats["dropped"])
    return pd.DataFrame(columns)


def backlog(start: int, step: int, bins: int) -> str:
    """Per consumer and bin ``j`` (ending at ``start + (j + 1) * step`` ns, ``bins`` of
    them): backlog and the oldest waiting message's age at the bin end, and counts of
    arrivals, receives, handled, errors and missed in the bin — as
    :func:`evtkit.analysis.lag.backlog` defines them.

    A delivery waits from its publish until its handler finished (or it was dropped); it
    counts at every bin end in between. Exact integer bin arithmetic on offsets from
    ``start`` (so doubles hold them without loss). Reads the kept :data:`MISSED`."""
    first_end = f"CAST(ceil(CAST(t - {start} AS DOUBLE) / {step}) AS BIGINT) - 1"
    slot = f"CAST(floor(CAST(t - {start} AS DOUBLE) / {step}) AS BIGINT)"

    def end_slot(expr: str) -> str:  # first bin whose end is at or after expr (or `bins`)
        return (f"CASE WHEN {expr} IS NULL THEN {bins} ELSE least({bins}, greatest(0, "
                f"{first_end.replace('t -', f'{expr} -')})) END")

    def in_bin(expr: str) -> str:  # the bin an instant falls in, NULL outside the grid
        s = slot.replace("t -", f"{expr} -")
        return f"CASE WHEN {expr} >= {start} AND {s} < {bins} THEN {s} END"

    # Each delivery's span, written out where it is read: as a WITH clause read seven
    # times, DuckDB would first copy all 30 M deliveries (a fifth of the query's time).
    spans = """(SELECT consumer, event_seq, subject,
           coalesce(published_at, received_at) AS pub, received_at, done_at, outcome,
           CASE WHEN outcome = 'dropped' THEN received_at ELSE done_at END AS finished
    FROM __deliveries__ WHERE consumer IS NOT NULL)"""
    return f"""
WITH consumers AS (
    SELECT consumer, min(pub) AS since FROM {spans} s GROUP BY consumer
), grid AS (
    SELECT c.consumer, s.j
    FROM consumers c CROSS JOIN range({bins}) AS s(j)
), marks AS (
    SELECT consumer, {end_slot("pub")} AS j, 1 AS began, 0 AS ended, pub AS oldest,
           CAST(NULL AS BIGINT) AS arrived
    FROM {spans} s
    UNION ALL
    SELECT consumer, {end_slot("finished")} AS j, 0, 1, CAST(NULL AS BIGINT), pub
    FROM {spans} s
), ends AS (
    SELECT consumer, j, sum(began) AS began, sum(ended) AS ended,
           min(arrived) AS oldest_pub
    FROM marks GROUP BY consumer, j
), expected AS (  -- (one row per consumer and event: events has one row per event_id)
    SELECT s.consumer, e.published_at
    FROM (SELECT DISTINCT consumer, subject FROM {spans} s) s
    JOIN __events__ e ON e.subject = s.subject
    JOIN consumers c ON c.consumer = s.consumer AND e.published_at >= c.since
), counted AS (
    SELECT consumer, j, sum(arrivals) AS arrivals, sum(received) AS received,
           sum(handled) AS handled, sum(errors) AS errors, sum(missed) AS missed
    FROM (
        SELECT consumer, {in_bin("received_at")} AS j, 0 AS arrivals, 1 AS received,
               0 AS handled, 0 AS errors, 0 AS missed
        FROM {spans} s
        UNION ALL
        SELECT consumer, {in_bin("done_at")}, 0, 0,
               CASE WHEN outcome <> 'dropped' THEN 1 ELSE 0 END,
               CASE WHEN outcome = 'error' THEN 1 ELSE 0 END, 0
        FROM {spans} s WHERE done_at IS NOT NULL
        UNION ALL
        SELECT consumer, {in_bin("published_at")}, 1, 0, 0, 0, 0 FROM expected
        UNION ALL
        SELECT m.consumer, {in_bin("m.published_at")}, 0, 0, 0, 0, 1
        FROM __missed__ m JOIN consumers c ON c.consumer = m.consumer
        WHERE m.published_at >= c.since
    ) parts
    WHERE j IS NOT NULL
    GROUP BY consumer, j
), running AS (
    SELECT g.consumer, g.j,
           sum(coalesce(e.began, 0) - coalesce(e.ended, 0)) OVER (
               PARTITION BY g.consumer ORDER BY g.j
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS backlog,
           min(e.oldest_pub) OVER (
               PARTITION BY g.consumer ORDER BY g.j
               ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS oldest_pub
    FROM (SELECT consumer, j FROM grid
          UNION ALL SELECT consumer, {bins} FROM consumers) g
    LEFT JOIN ends e ON e.consumer = g.consumer AND e.j = g.j
)
SELECT r.consumer, r.j, r.backlog,
       CASE WHEN r.oldest_pub <= {start} + (r.j + 1) * {step}
            THEN CAST({start} + (r.j + 1) * {step} - r.oldest_pub AS DOUBLE) / 1e9
            ELSE 0.0 END AS oldest_s,
       coalesce(c.arrivals, 0) AS arrivals, coalesce(c.received, 0) AS received,
       coalesce(c.handled, 0) AS handled, coalesce(c.errors, 0) AS errors,
       coalesce(c.missed, 0) AS missed
FROM running r
LEFT JOIN counted c ON c.consumer = r.consumer AND c.j = r.j
WHERE r.j < {bins}
ORDER BY r.consumer, r.j
"""


MISSED = """
SELECT s.consumer, e.first_seq AS event_seq, e.subject, e.published_at
FROM (SELECT DISTINCT consumer, subject FROM __deliveries__ WHERE consumer IS NOT NULL) s
JOIN __events__ e ON e.subject = s.subject
WHERE NOT EXISTS (SELECT 1 FROM __deliveries__ d
                  WHERE d.consumer = s.consumer AND d.event_seq = e.first_seq)"""
"""The view ``missed``: each consumer's events that never reached it (``consumer,
event_seq, subject, published_at``) among those on the subjects it receives, whenever published
(each reader says from when). Kept: :func:`backlog` counts them per bin and the
diagnosis's stopped-consumer rule reads one consumer's; the anti-join of 30 M expected
pairs against 30 M deliveries behind it (4 s at 10 M events) is made once."""


_KINDS = """
WITH kinds AS (
    SELECT event_id, first_seq, coalesce(subject, '?') AS subject,
           coalesce(type, '?') AS type
    FROM __events__
)"""


def fanout() -> str:
    """Per subject and type: events, most events first (what reached whom comes from
    :func:`fanout_names`)."""
    return """
SELECT coalesce(subject, '?') AS subject, coalesce(type, '?') AS type, count(*) AS events
FROM __events__ GROUP BY coalesce(subject, '?'), coalesce(type, '?')
ORDER BY events DESC, subject
"""


def fanout_names(which: str) -> str:
    """``subject, type, name, n`` rows: each consumer of each subject and type with its
    deliveries (``which="consumers"``: their sums and counts are the deliveries and
    consumers of :func:`fanout`, from one join of the deliveries), or the types their
    handlers emitted (``"emitted"``, explicit causes) — to be joined into lists (string
    aggregation is not portable)."""
    if which == "consumers":
        return _KINDS + """
SELECT k.subject, k.type, d.consumer AS name, count(*) AS n
FROM __deliveries__ d JOIN kinds k ON k.first_seq = d.event_seq
GROUP BY k.subject, k.type, d.consumer"""
    if which == "emitted":
        return _KINDS + """
SELECT DISTINCT p.subject, p.type, coalesce(e.type, '?') AS name, 1 AS n
FROM __events__ e JOIN kinds p ON p.event_id = e.causation_id
WHERE e.event_id IS NOT NULL"""
    raise ValueError(f"which: 'consumers' or 'emitted', not {which!r}")


_BITS = 62  # consumers per word of bits (a BIGINT's, short of its sign)
_WORDS = 8  # words at most: beyond 8 × 62 consumers, count(DISTINCT)


def distinct_consumers(consumers: int) -> tuple[str, str]:
    """How to count the distinct consumers of each group of deliveries ``d``, exactly, in
    a trace with ``consumers`` of them: a join to write after ``FROM __deliveries__ d``,
    and the aggregate.

    ``count(DISTINCT consumer)`` keeps a set of names per group (6 s per flow at 30 M
    deliveries); instead each consumer is a bit (its rank among the names), a group ORs
    its consumers' bits and counts them — 2 s. Beyond ``8 × 62`` consumers the sets it
    is."""
    if not 0 < consumers <= _BITS * _WORDS:
        return "", "count(DISTINCT d.consumer)"
    join = """LEFT JOIN (
        SELECT consumer, row_number() OVER (ORDER BY consumer) - 1 AS k
        FROM (SELECT DISTINCT consumer FROM __deliveries__ WHERE consumer IS NOT NULL) names
    ) bits ON bits.consumer = d.consumer"""
    words = [f"bit_count(bit_or(CASE WHEN bits.k >= {_BITS * w} AND bits.k < {_BITS * (w + 1)}"
             f" THEN CAST(pow(2, bits.k - {_BITS * w}) AS BIGINT) ELSE 0 END))"
             for w in range(-(-consumers // _BITS))]
    return join, " + ".join(words)


def flow_deliveries(consumers: int, max_by: Callable[[str, str, str], str]) -> str:
    """Per flow, over its deliveries: when the last handler finished (``last_done``: its
    end, else its start, else the receive) and which delivery that was (``last_seq``: the
    latest of them if several), ``deliveries``, distinct ``consumers`` (of the trace's
    ``consumers``, see :func:`distinct_consumers`) and ``errors``; on an engine whose
    :meth:`~evtkit.engine.backends.Engine.max_by` is ``max_by``."""
    join, count = distinct_consumers(consumers)
    done = "coalesce(d.done_at, d.started_at, d.received_at)"
    return f"""
    SELECT d.correlation_id, max({done}) AS last_done, {max_by("d.seq", done, "d.seq")} AS last_seq,
           count(*) AS deliveries, {count} AS consumers,
           count(CASE WHEN d.outcome = 'error' THEN 1 END) AS errors
    FROM __deliveries__ d {join} GROUP BY d.correlation_id"""


def flows() -> str:
    """Per flow (``correlation_id``): events, deliveries, distinct consumers, errors, when
    it started (first publish) and ended (the last handler finished, or the last publish
    if later). Reads the kept ``flow_deliveries`` (:func:`flow_deliveries`), which
    ``chains()`` reads as well."""
    return """
SELECT e.correlation_id, count(*) AS events, min(e.published_at) AS started_ns,
       greatest(max(e.published_at), coalesce(max(x.last_done), max(e.published_at)))
           AS ended_ns,
       coalesce(max(x.deliveries), 0) AS deliveries, coalesce(max(x.consumers), 0) AS consumers,
       coalesce(max(x.errors), 0) AS errors
FROM __events__ e LEFT JOIN __flow_deliveries__ x ON x.correlation_id = e.correlation_id
GROUP BY e.correlation_id
"""
