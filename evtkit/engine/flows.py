"""Flows of a trace left on disk: one row per flow, the slowest flows with their
bottlenecks, and the observed flow graph — :meth:`Dataset.chains`,
:meth:`Dataset.slowest_flows` and :meth:`Dataset.flow_graph`, as
:mod:`evtkit.analysis.causal`, :mod:`~evtkit.analysis.bottleneck` and
:mod:`~evtkit.analysis.fanout` define them, computed by the engine.

Causation is followed along explicit links (``causation_id``), as ``Trace.chains(infer=False)``
does: the links the in-memory path infers for events without causality are not made here.

A flow's root and depth come from the causal tree of its events. Recursive CTEs are not
portable (Spark has none), so the tree is walked from here one level per query — the roots,
then the children of the last level — until a level is empty: each event is reached at most
once, so this ends after the deepest chain, and events on causation cycles (and below them)
are never reached, as in memory. The levels are kept (``lineage_1``, ``lineage_2``, ...),
``lineage`` (``event_id, seq, root_pub, depth``: each event's ``first_seq`` and when its
root was published, so what reads it joins on an integer and needs no root's row) is their
union, and the flows are kept as
``chains`` (from ``flow_events`` and ``flow_deliveries``, kept too): computed once per
dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from .._arrow import utc_times
from ..schema import DELIVERIES, conform, utc
from .sql import EVENT_ORDER

if TYPE_CHECKING:
    from ..trace import Trace
    from .backends import Engine
    from .dataset import Dataset

__all__ = ["CANDIDATES", "chains", "deliveries", "flow_graph", "lineage", "slowest_flows"]

CANDIDATES = 50
"""How many of the slowest flows (overall, and inside each finding's window)
:func:`slowest_flows` examines — :func:`evtkit.analysis.bottleneck.slowest_flows`'s
``candidates``."""

_NEVER = np.iinfo(np.int64).min  # NaT as int64 nanoseconds

# A flow's rows ordered as Trace.chains() orders them: longest first, ties in the order
# the flows began (the order of each flow's first event in ``Trace.events``).
_CHAIN_ORDER = "ended_ns - started_ns DESC, started_ns, first_seen_ns, first_seq"


def _flow_events_sql(min_by: Callable[[str, str], str]) -> str:
    """The kept ``flow_events``: per flow, what its events say (count, start, depth, its
    first and last event, its root), on an engine whose
    :meth:`~evtkit.engine.backends.Engine.min_by` is ``min_by``."""
    root = "CASE WHEN depth = 1 THEN first_n END"  # a root's rank, else NULL (skipped)
    return f"""
WITH ev AS (
    SELECT e.correlation_id, e.event_id, e.subject, e.published_at, e.first_seen_at,
           e.first_seq, l.root_pub, l.depth
    FROM __events__ e  -- (an event without an id has no place in the tree, as in memory)
    LEFT JOIN __lineage__ l ON l.seq = e.first_seq AND e.event_id IS NOT NULL
), ranked AS (  -- one sort: the last event is number `total`, the root the first at depth 1
    SELECT ev.*,
           row_number() OVER (PARTITION BY correlation_id ORDER BY {EVENT_ORDER}) AS first_n,
           count(*) OVER (PARTITION BY correlation_id) AS total
    FROM ev
)
SELECT correlation_id, count(*) AS events, min(published_at) AS started_ns,
       max(depth) AS depth,
       max(CASE WHEN first_n = 1 THEN first_seen_at END) AS first_seen_ns,
       max(CASE WHEN first_n = 1 THEN first_seq END) AS first_seq,
       max(CASE WHEN first_n = total THEN published_at END) AS last_pub,
       max(CASE WHEN first_n = total THEN root_pub END) AS last_root_pub,
       {min_by("event_id", root)} AS root_event_id,
       {min_by("subject", root)} AS root_subject
FROM ranked GROUP BY correlation_id"""


_LAST_DELIVERY = """
SELECT x.correlation_id, x.last_done AS done, l.root_pub
FROM __flow_deliveries__ x JOIN __deliveries__ d ON d.seq = x.last_seq
LEFT JOIN __lineage__ l ON l.seq = d.event_seq"""
"""The kept ``last_delivery``: per flow, the delivery that ended last (the latest of those,
if several), when it did, and its root's publish."""

_CHAINS = """
WITH ends AS (
    -- The root of whatever ended last (a handler, else an event) starts the critical path.
    SELECT f.*, coalesce(x.deliveries, 0) AS deliveries, coalesce(x.consumers, 0) AS consumers,
           coalesce(x.errors, 0) AS errors,
           CASE WHEN x.last_done > f.last_pub THEN x.last_done ELSE f.last_pub END AS ended_ns,
           CASE WHEN ld.done >= f.last_pub THEN ld.root_pub ELSE f.last_root_pub END
               AS root_pub
    FROM __flow_events__ f
    LEFT JOIN __flow_deliveries__ x ON x.correlation_id = f.correlation_id
    LEFT JOIN __last_delivery__ ld ON ld.correlation_id = f.correlation_id
)
SELECT c.correlation_id, c.root_event_id, c.root_subject, c.events, c.deliveries, c.consumers,
       c.depth, c.started_ns, c.ended_ns, c.errors, c.root_pub, c.first_seen_ns, c.first_seq
FROM ends c"""
"""The kept ``chains``: one row per flow, from its events' and its deliveries' (kept
``flow_events``, ``flow_deliveries`` and ``last_delivery``)."""


def lineage(engine: Engine) -> None:
    """Define ``lineage``: each event reached from a root, with its root's publish and its
    depth (see the module docstring)."""
    if "lineage" in engine.names:
        return
    levels: list[str] = []
    select = """
SELECT e.event_id, e.first_seq AS seq, e.published_at AS root_pub, 1 AS depth
FROM __events__ e LEFT JOIN __events__ c ON c.event_id = e.causation_id
WHERE c.event_id IS NULL"""
    while True:
        levels.append(f"lineage_{len(levels) + 1}")
        engine.define(levels[-1], select)
        if not int(engine.frame(f"SELECT count(*) AS n FROM __{levels[-1]}__")["n"].iloc[0]):
            break
        select = f"""
SELECT e.event_id, e.first_seq AS seq, p.root_pub, p.depth + 1 AS depth
FROM __events__ e JOIN __{levels[-1]}__ p ON e.causation_id = p.event_id"""
    engine.define("lineage", "\nUNION ALL\n".join(
        f"SELECT event_id, seq, root_pub, depth FROM __{level}__" for level in levels),
        keep=False)


def _chains(ds: Dataset, where: str = "TRUE", limit: int | None = None, *,
            columns: str = "*", size: int | None = None, **params: Any) -> pd.DataFrame:
    """``columns`` of the kept ``chains`` (``where``, in chain order, at most ``limit``;
    ``size``: how many rows that is, where known: see :meth:`Engine.frame`)."""
    _keep_chains(ds)
    top = f" LIMIT {int(limit)}" if limit is not None else ""
    return ds._engine.frame(
        f"SELECT {columns} FROM __chains__ WHERE {where} ORDER BY {_CHAIN_ORDER}{top}",
        params, size=size)


def _keep_chains(ds: Dataset) -> None:
    """Define the kept ``chains`` (and what it is built from) once."""
    engine = ds._engine
    if "chains" not in engine.names:
        # In steps, each query with the engine's whole budget to itself: as one query the
        # window's sort and the joins' tables held memory at once and spilled (13.9 ->
        # 11.7 s at 10 M events); with the last delivery's joins inside, the chains ran a
        # 500 MB budget out of memory at 10 M events (joins pin what they build).
        lineage(engine)
        ds._keep("flow_deliveries")
        ds._keep("flow_events", _flow_events_sql(engine.min_by))
        ds._keep("last_delivery", _LAST_DELIVERY)
        ds._keep("chains", _CHAINS)


_CHAIN_COLUMNS = ("correlation_id, root_event_id, events, deliveries, consumers, depth, "
                  "started_ns, ended_ns, errors, root_pub")
"""What :func:`_chain_frame` reads of the kept ``chains``."""


def _chain_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Engine rows → the frame of :meth:`Trace.chains`, each column taken out of ``rows``
    as it is made (at 100 M events, 33 M flows: a frame held twice is gigabytes)."""
    ended = rows.pop("ended_ns").to_numpy(dtype=np.int64)
    root_pub = rows.pop("root_pub").to_numpy(dtype=np.int64, na_value=_NEVER)
    critical = np.where(root_pub != _NEVER, (ended - root_pub) / 1e9, np.nan)
    del root_pub
    started, ended = utc_times(rows.pop("started_ns").to_numpy(dtype=np.int64)), utc_times(ended)
    return pd.DataFrame({
        "correlation_id": rows.pop("correlation_id").astype("str"),
        "root_event_id": rows.pop("root_event_id").astype("str"),
        **{c: rows.pop(c).to_numpy(dtype=np.int64) for c in ("events", "deliveries",
                                                              "consumers")},
        "depth": rows.pop("depth").astype("Int64"),
        "started_at": started,
        "ended_at": ended,
        # As the in-memory path computes them, so the numbers agree to the last bit.
        "duration_s": (ended - started).total_seconds(),
        "errors": rows.pop("errors").to_numpy(dtype=np.int64),
        "critical_path_s": critical,
        "links_inferred": np.zeros(len(critical), np.int64),
    }, copy=False)


def chains(ds: Dataset) -> pd.DataFrame:
    """One row per flow, as ``Trace.chains(infer=False)``: ``correlation_id,
    root_event_id, events, deliveries, consumers, depth, started_at, ended_at, duration_s,
    errors, critical_path_s, links_inferred`` (always 0), longest first."""
    _keep_chains(ds)
    count = "SELECT count(*) AS n FROM __chains__"
    with ds._holding(count):  # (a row per flow, in pandas)
        return _chain_frame(_chains(ds, columns=_CHAIN_COLUMNS, size=int(
            ds._engine.frame(count)["n"].iloc[0])))


class _Candidates:
    """What :func:`evtkit.analysis.bottleneck.slowest_flows` reads of a trace, for the
    flows it can pick: the slowest overall and the slowest inside each finding's window
    (in chain order, so it picks the flows it would pick from every flow), their rows in
    memory for their critical paths, and the dataset's diagnosis."""

    def __init__(self, ds: Dataset, rows: pd.DataFrame) -> None:
        self._ds = ds
        self._chains = _chain_frame(rows.copy())  # (a few flows; rows read below)
        self.events = pd.DataFrame({"event_id": rows["root_event_id"].astype("str"),
                                    "subject": rows["root_subject"].astype("str")}).dropna()
        self.observations = pd.DataFrame({"ts": utc(np.array([ds.summary()["first_ns"]]))})
        self._loaded = _load_flows(ds, list(self._chains["correlation_id"]))

    def chains(self) -> pd.DataFrame:
        return self._chains

    def diagnose(self) -> pd.DataFrame:
        return self._ds.diagnose()

    def critical_path(self, flow: str) -> pd.DataFrame:
        return self._loaded.critical_path(flow)


def _load_flows(ds: Dataset, flows: list[str]) -> Trace:
    """The observations of several flows in one query, as one in-memory Trace."""
    from ..trace import Trace
    from .dataset import _observations

    if not flows:
        return Trace(_observations(ds._engine.frame(
            "SELECT * FROM __observations__ WHERE FALSE")), dict(ds.metadata))
    params = {f"f{i}": flow for i, flow in enumerate(flows)}
    listed = ", ".join(f":{name}" for name in params)
    frame = ds._engine.frame(
        f"SELECT * FROM __observations__ r WHERE r.event_id IN (SELECT event_id FROM "
        f"__events__ WHERE correlation_id IN ({listed})) OR r.ref IN (SELECT seq FROM "
        f"__deliveries__ WHERE correlation_id IN ({listed})) ORDER BY seq", params)
    return Trace(_observations(frame), dict(ds.metadata))


def slowest_flows(ds: Dataset, top: int = 10) -> pd.DataFrame:
    """:meth:`Trace.slowest_flows` of a dataset: the very function of
    :mod:`evtkit.analysis.bottleneck`, run over the flows it can pick (see
    :class:`_Candidates`); the critical paths come from those flows' rows alone."""
    from ..analysis.bottleneck import slowest_flows as pick

    many = max(top, CANDIDATES)
    parts = [_chains(ds, limit=many)]
    findings = ds.diagnose()
    for start, end in zip(findings["start"], findings["end"], strict=True):
        if pd.notna(start) and pd.notna(end):
            parts.append(_chains(ds, "started_ns >= :start AND started_ns <= :end", many,
                                 start=pd.Timestamp(start).value, end=pd.Timestamp(end).value))
    rows = pd.concat(parts, ignore_index=True).drop_duplicates("correlation_id")
    order = pd.DataFrame({"duration": rows["ended_ns"].to_numpy(dtype=np.int64)
                          - rows["started_ns"].to_numpy(dtype=np.int64)})
    for column in ("started_ns", "first_seen_ns", "first_seq"):
        order[column] = rows[column].to_numpy(dtype=np.int64)
    rows = rows.take(order.sort_values(["duration", "started_ns", "first_seen_ns", "first_seq"],
                                       ascending=[False, True, True, True]).index)
    return pick(cast("Trace", _Candidates(ds, rows.reset_index(drop=True))), top,
                candidates=CANDIDATES)


_UNKNOWN = "(unknown)"  # evtkit.analysis.fanout.UNKNOWN

_GRAPH = f"""
WITH children AS (
    SELECT c.event_id, c.subject, c.source, c.published_at, c.emitted_seq, c.causation_id
    FROM __events__ c JOIN __events__ p ON p.event_id = c.causation_id
), attributed AS (
    -- Without a recorded emitting delivery: the cause's delivery by the same service,
    -- the last that started before the publish.
    SELECT ch.event_id, d.seq, row_number() OVER (PARTITION BY ch.event_id ORDER BY
               coalesce(d.started_at, d.received_at) DESC, d.seq DESC) AS n
    FROM children ch JOIN __deliveries__ d
         ON d.event_id = ch.causation_id AND d.consumer = ch.source
    WHERE ch.emitted_seq IS NULL AND coalesce(d.started_at, d.received_at) <= ch.published_at
), emitted AS (
    SELECT d.consumer AS source, coalesce(ch.subject, '{_UNKNOWN}') AS target,
           CAST(ch.published_at - coalesce(d.started_at, d.received_at) AS DOUBLE) / 1e9
               AS lead_s
    FROM children ch
    LEFT JOIN attributed a ON a.event_id = ch.event_id AND a.n = 1
    JOIN __deliveries__ d ON d.seq = coalesce(ch.emitted_seq, a.seq)
    WHERE d.consumer IS NOT NULL
), published AS (
    SELECT coalesce(source, producer, '{_UNKNOWN}') AS source,
           coalesce(subject, '{_UNKNOWN}') AS target
    FROM __events__
), delivered AS (
    SELECT coalesce(subject, '{_UNKNOWN}') AS source, consumer AS target, queue_s AS lead_s,
           outcome
    FROM __deliveries__ WHERE consumer IS NOT NULL
)
SELECT 'publishes' AS kind, source, target, count(*) AS n,
       CAST(NULL AS DOUBLE) AS p50_s, CAST(NULL AS DOUBLE) AS p95_s, 0 AS errors
FROM published GROUP BY source, target
UNION ALL
SELECT 'delivers', source, target, count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY lead_s),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY lead_s),
       count(CASE WHEN outcome = 'error' THEN 1 END)
FROM delivered GROUP BY source, target
UNION ALL
SELECT 'emits', source, target, count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY lead_s),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY lead_s), 0
FROM emitted GROUP BY source, target"""

_GRAPH_KINDS = {"publishes": ("service", "subject"), "delivers": ("subject", "service"),
                "emits": ("service", "subject")}
_GRAPH_COLUMNS = ["source", "source_kind", "target", "target_kind", "kind", "count", "p50_s",
                  "p95_s", "errors", "seen_by"]


def flow_graph(ds: Dataset) -> pd.DataFrame:
    """:meth:`Trace.flow_graph`'s edges as evtkit saw them (``seen_by`` is always
    ``evtkit``): ``publishes`` (the service is the events' source, else the publishing
    connection), ``delivers`` and ``emits`` (explicit causes) — see the module docstring
    of :mod:`evtkit.engine.dataset` for what the server's message traces add in memory."""
    if not ds.summary()["events"]:
        return pd.DataFrame(columns=_GRAPH_COLUMNS)
    edges = ds._engine.frame(_GRAPH)
    edges["source"] = edges["source"].astype("str")
    edges["target"] = edges["target"].astype("str")
    parts = []
    for kind, (source_kind, target_kind) in _GRAPH_KINDS.items():
        part = edges[edges["kind"] == kind].sort_values(["source", "target"])
        parts.append(part.assign(source_kind=source_kind, target_kind=target_kind))
    frame = pd.concat(parts, ignore_index=True).assign(seen_by="evtkit")
    frame["count"] = frame.pop("n").astype(np.int64)
    frame["errors"] = frame["errors"].astype(np.int64)
    for column in ("p50_s", "p95_s"):
        frame[column] = frame[column].astype(float)
    for column in ("source", "source_kind", "target", "target_kind", "kind", "seen_by"):
        frame[column] = frame[column].astype("str")
    return frame[_GRAPH_COLUMNS]


def deliveries(ds: Dataset, sample: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The columns of ``Trace.deliveries`` (in ``seq`` order) for every delivery, or for
    ``sample`` of them drawn at random: the smallest MD5 of ``seed`` and each delivery's
    ``seq`` — the same draw on every engine and every run with the same ``seed``."""
    total = ds.summary()["deliveries"]
    query = "SELECT * FROM __deliveries__"
    params: dict[str, Any] = {}
    if sample is not None and sample < total:
        query += (" ORDER BY md5(concat(:seed, '/', CAST(seq AS STRING)))"
                  f" LIMIT {max(int(sample), 0)}")
        params["seed"] = str(int(seed))
    frame = ds._engine.frame(query, params).sort_values("seq", kind="stable")
    frame = frame.reset_index(drop=True)
    for column in ("published_at", "received_at", "started_at", "done_at"):
        frame[column] = utc(frame[column].to_numpy(dtype=np.int64, na_value=_NEVER))
    for column in ("queue_s", "processing_s"):  # nanoseconds / 1e9, as in memory
        frame[column] = frame[column].to_numpy(dtype=float, na_value=np.nan)
    return conform(frame, DELIVERIES)
