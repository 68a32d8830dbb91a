"""A trace left on disk: ``ek.open(path)`` analyses Parquet traces larger than memory.

::

    ds = ek.open("capture.parquet")                # a file, or a directory of parts/shards
    ds.summary()                                   # counts and time span
    ds.lag(); ds.backlog("1s"); ds.fanout(); ds.flows()
    ds.chain(flow); ds.critical_path(flow)         # one flow, loaded into memory
    ds.chains(); ds.slowest_flows(); ds.flow_graph()
    ds.deliveries(sample=20_000)                   # a random sample, in memory
    ds.trace(correlation_id=flow)                  # any selection as an in-memory Trace

    ek.open(path, engine="spark", spark=session)   # the same analyses on a Spark cluster

Every whole-trace analysis is one query of :mod:`evtkit.engine.sql`, run by the engine (DuckDB
in this process by default: all cores, spilling to disk; or Spark) and returning a small
pandas frame; ``diagnose()`` runs the rules of :mod:`evtkit.analysis.diagnose` on the
engine's answers (:mod:`evtkit.engine.evidence`), holding one consumer's deliveries at a
time (the next one's read meanwhile). Results equal :class:`~evtkit.trace.Trace`'s on the
same file (the tests hold them against each other) except where a column says otherwise:

- ``fanout()``'s ``emitted_types`` and ``problems()``' cycles follow explicit
  ``causation_id`` links only (the in-memory path also infers links for events that carry
  none), and ``fanout()`` has no ``server_seen`` (server message traces are not read).
- ``flows()`` is ``chains()`` without the causal columns (root, depth, critical path).
- ``chains()``, ``slowest_flows()`` and ``flow_graph()``'s ``emits`` edges follow explicit
  links as well: ``chains()`` is ``Trace.chains(infer=False)`` (``links_inferred`` always
  0), computed by :mod:`evtkit.engine.flows`; ``slowest_flows()``' critical paths come from
  the candidate flows' own rows.
- ``flow_graph()`` has evtkit's own edges only (``seen_by == "evtkit"``): the server's
  message traces, which in memory add ``delivers`` edges to connections that do not run
  evtkit and name the sender of an event that carries no source, are not read.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa

from ..schema import OBSERVATIONS, utc
from . import sql
from .backends import DuckDBEngine, Engine
from .files import trace_files
from .spark import SparkEngine

if TYPE_CHECKING:
    from ..analysis.causal import Chain
    from ..analysis.diagnose import Rules
    from ..trace import Trace

__all__ = ["ENGINES", "HELD_BYTES_PER_ROW", "PERCENTILE_BYTES_PER_ROW", "Dataset", "open"]

_VIEW = re.compile(r"\b(FROM|JOIN)\s+(observations|events|deliveries)\b", re.IGNORECASE)
ENGINES = ("duckdb", "spark")
"""Engines :func:`open` can run the analyses on."""


def open(path: str | os.PathLike[str], engine: str = "duckdb", *, spark: Any = None,  # noqa: A001
         memory_limit: str | None = None, temp_directory: str | None = None,
         filesystem: Any = None, storage: str = "auto", spill_limit: str | None = None,
         progress: bool = False) -> Dataset:
    """Open a Parquet trace (a file, or a directory of ``part-*.parquet`` written by
    ``evtkit record``, shards included) without loading it.

    Args:
        path: the trace: a local path, a URL (``s3://bucket/run.parquet``, ``file://``,
            ``memory://``...: its filesystem is found from the URL), or with ``filesystem``
            a path or URL on that filesystem.
        engine: ``"duckdb"`` (in this process) or ``"spark"`` (needs ``spark``).
        spark: a ``pyspark.sql.SparkSession`` for ``engine="spark"``.
        memory_limit: DuckDB's memory budget, e.g. ``"2GB"``; beyond it, it spills to disk.
        temp_directory: where DuckDB spills.
        filesystem: an fsspec filesystem the files are on (object stores).
        storage: where DuckDB keeps the tables it builds: ``"memory"`` (spilling beyond
            the budget), ``"disk"`` (a compressed database file in ``temp_directory``) or
            ``"auto"``: on disk when they would be several times the budget (see
            :class:`~evtkit.engine.backends.DuckDBEngine`).
        spill_limit: how much DuckDB may spill to ``temp_directory``, e.g. ``"20GB"``
            (default: half the free space of its disk at opening); reaching it is an
            :class:`~evtkit.errors.EngineError`.
        progress: show DuckDB's queries that take more than a second as they run (which
            table is being built, how far it is), on standard error.

    Raises:
        TraceFormatError: not a Parquet trace, or a trace without parts.
        ValueError: an unknown engine, or ``engine="spark"`` without a session.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "spark" and spark is None:
        raise ValueError("engine='spark' needs spark=SparkSession (local or a cluster)")
    files, meta, shifts, filesystem = trace_files(path, filesystem)
    if engine == "spark":
        runner: Engine = SparkEngine(files, shifts, spark)
    else:
        runner = DuckDBEngine(files, shifts, memory_limit=memory_limit,
                              temp_directory=temp_directory, filesystem=filesystem,
                              storage=storage, spill_limit=spill_limit)
        runner.progress = progress
    return Dataset(runner, meta)


HELD_BYTES_PER_ROW = 300
"""What a row an analysis holds in pandas costs, with the working arrays made from it
(measured: the diagnosis's process grows by ~1.2 GB, the interpreter's own share included,
for a consumer's 3.3 M deliveries, the next consumer's read ahead meanwhile included; about
half of that where the loan does not fit and the diagnosis does not read ahead): lent
out of the engine's budget while it is held (a consumer's deliveries while the rules read
them, the rows of ``chains()`` while they become its frame), so the process stays near the
budget."""


PERCENTILE_BYTES_PER_ROW = 32
"""What DuckDB's percentile aggregates hold per delivery (each delivery's queue and handler
times: DuckDB 2 counts them in its budget and cannot spill them; measured 0.71 GB for 30 M
deliveries, 24 B each, and one group's values flattened again to take its percentiles):
how :meth:`Dataset.by_consumers` sizes its parts to fit half the budget."""


class Dataset:
    """A trace on disk, analysed by an engine (see the module docstring).

    Attributes:
        metadata: the capture metadata (merged over parts and shards, as ``ek.load`` does).
        engine: the engine's name (``duckdb`` or ``spark``).
    """

    def __init__(self, engine: Engine, metadata: dict[str, Any]) -> None:
        self._engine = engine
        self.metadata = metadata
        self.engine = engine.name
        self._cache: dict[Any, Any] = {}

    def __repr__(self) -> str:
        s = self.summary()
        return (f"<Dataset {self.metadata.get('source_path')!r} on {self.engine}: "
                f"{s['events']:,} events, {s['deliveries']:,} deliveries>")

    def close(self) -> None:
        """Release the engine (DuckDB's connection and spill files; a Spark view)."""
        self._engine.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        """The text of ``evtkit info`` for a trace analysed on disk, the verdict first (as
        :meth:`Trace.describe`): the verdict and findings of :meth:`diagnose`, what the
        trace holds, then one line per consumer (latency percentiles, errors, drops,
        backlog peak), worst first."""
        from ..overview import findings

        facts, consumers = self._facts()
        return "\n".join([*findings(self), "", *(f"{k:<13}{v}" for k, v in facts),
                          "consumers (by oldest wait)",
                          *(f"  {k:<20} {v}" for k, v in consumers)])

    def _repr_html_(self) -> str:
        from ..overview import html_view

        facts, consumers = self._facts()
        return html_view(self, facts + consumers, "evtkit Dataset")

    def _facts(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """What :meth:`describe` states after the verdict, as (label, text): the trace's
        counts, and each consumer's line, the one that waited longest first."""
        from .._units import count, duration

        s = self.summary()
        span = (s["last_ns"] - s["first_ns"]) / 1e9
        facts = [("engine", f"{self.engine} (the trace stays on disk)"),
                 ("events", f"{count(s['events'])} in {duration(span)}"),
                 ("deliveries", f"{count(s['deliveries'])}: {count(s['errors'])} failed, "
                                f"{count(s['dropped'])} dropped, {count(s['pending'])} not "
                                "handled")]
        lag = self.lag().sort_values(["oldest_max_s", "consumer"], ascending=[False, True])
        return facts, [(str(row.consumer),
                        f"{count(row.deliveries)} deliveries, waited p50 "
                        f"{duration(row.queue_p50_s)} / p99 {duration(row.queue_p99_s)}, "
                        f"handler p50 {duration(row.processing_p50_s)}, {count(row.errors)} "
                        f"errors, {count(row.dropped)} dropped, up to "
                        f"{count(row.backlog_max)} waiting ({duration(row.oldest_max_s)})")
                       for row in lag.itertuples(index=False)]

    def query(self, text: str, **params: Any) -> pd.DataFrame:
        """Run your own SQL on the engine over the views of :func:`evtkit.engine.sql.views`
        (``observations``, ``events``, ``deliveries``, named after FROM or JOIN), e.g.
        ``ds.query("SELECT consumer, count(*) AS n FROM deliveries GROUP BY consumer")``.
        ``:name`` in the text is bound to the keyword argument ``name``. The query sees
        those views only, never Python variables of the same name."""
        return self._engine.frame(_VIEW.sub(r"\1 __\2__", text), params)

    def summary(self) -> dict[str, int]:
        """``observations, events, deliveries, consumers, errors, dropped, pending`` (counts) and
        ``first_ns``/``last_ns``: when the trace starts and ends."""
        if "summary" not in self._cache:
            row = self._engine.frame(sql.summary()).iloc[0]
            self._cache["summary"] = {k: int(v) if pd.notna(v) else 0 for k, v in row.items()}
        return dict(self._cache["summary"])

    def _grid(self, freq: str | pd.Timedelta | None) -> tuple[np.ndarray, int]:
        from ..analysis.lag import grid, nice_width

        s = self.summary()
        first, last = s["first_ns"], s["last_ns"]
        return grid(first, last, freq if freq is not None else
                    nice_width((last - first) / 1e9 if s["observations"] else 1.0))

    def _series(self, freq: str | pd.Timedelta | None
                ) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray]:
        """Each consumer's per-bin arrays, as the in-memory path holds them, and the bin
        ends; JetStream ConsumerInfo samples (few rows, read into memory) counted alike."""
        from ..analysis.lag import add_server_samples

        key = ("series", freq)  # lag() and backlog() both read it
        if key in self._cache:
            return cast("tuple[dict[str, dict[str, np.ndarray]], np.ndarray]", self._cache[key])
        ends, step = self._grid(freq)
        self._keep("missed")
        frame = self._engine.frame(sql.backlog(int(ends[0]) - step, step, len(ends)))
        series: dict[str, dict[str, np.ndarray]] = {}
        for consumer, part in frame.groupby("consumer", sort=True):
            ints = {c: part[c].to_numpy(dtype=np.int64) for c in (
                "backlog", "arrivals", "received", "handled", "errors", "missed")}
            series[str(consumer)] = {  # in the in-memory path's column order
                "backlog": ints.pop("backlog"), "oldest_s": part["oldest_s"].to_numpy(float),
                **ints, "from_server": np.zeros(len(ends), bool)}
        add_server_samples(self._rare, ends, series)
        self._cache[key] = series, ends
        return series, ends

    def _keep(self, name: str, select: str | None = None) -> None:
        """Define the kept view ``name`` the first time it is needed: as ``select``, or
        for the shared ones (``missed``, ``flow_deliveries``) as :mod:`.sql` says."""
        if name not in self._engine.names:
            shared = {"missed": lambda: sql.MISSED, "flow_deliveries": lambda: (
                sql.flow_deliveries(self.summary()["consumers"], self._engine.max_by))}
            self._engine.define(name, select if select is not None else shared[name]())

    @contextlib.contextmanager
    def _holding(self, count: str) -> Iterator[bool]:
        """Lend the engine :data:`HELD_BYTES_PER_ROW` for each of the rows an analysis is
        about to hold in pandas (``count``: a query giving them as ``n``); what it yields
        says whether all of that could be lent (the engine lends half its budget at most)."""
        n = self._engine.frame(count)["n"].iloc[0]
        held = 0 if pd.isna(n) else HELD_BYTES_PER_ROW * int(n)
        room = self._engine.room()
        with self._engine.lend(held):
            yield room is None or held <= room

    def by_consumers(self, query: Callable[[str], str], *, rows: str = "TRUE") -> pd.DataFrame:
        """``query(where)`` (a ``SELECT`` of percentiles per consumer over the deliveries
        ``where`` picks) for every consumer, so many consumers at a time that the values
        the percentiles hold (:data:`PERCENTILE_BYTES_PER_ROW` for each delivery ``rows``
        picks) fit in half the engine's budget: DuckDB's percentiles hold every value of
        their group in its budget and cannot spill them (at 100 M events, 300 M
        deliveries: ~10 GB). Nothing is lent: what they hold is DuckDB's own (lowering
        its limit by it ran DuckDB out of memory at 10 M events with 500 MB). The parts
        in the order of the consumers' names, as they would be at once. (A consumer with
        more deliveries than fit is a part of its own.)"""
        room = self._engine.room()
        total = int(self._engine.frame("SELECT count(*) AS n FROM __deliveries__")["n"].iloc[0])
        if room is None or PERCENTILE_BYTES_PER_ROW * total <= room:
            return self._engine.frame(query("TRUE"))
        counts = self._engine.frame(
            f"SELECT consumer, count(*) AS n FROM __deliveries__ WHERE consumer IS NOT NULL "
            f"AND ({rows}) GROUP BY consumer ORDER BY consumer")
        parts = []
        for names in _packed(counts, room // PERCENTILE_BYTES_PER_ROW):
            where, params = sql.one_of("consumer", names)
            parts.append(self._engine.frame(query(where), params))
        return pd.concat(parts, ignore_index=True) if parts else self._engine.frame(
            query("FALSE"))

    @property
    def _rare(self) -> Trace:
        """The rare rows (disconnects, JetStream samples and advisories), in memory."""
        if "rare" not in self._cache:
            self._cache["rare"] = self.trace(kinds=("disconnect", "reconnect",
                                                    "consumer_info", "advisory"))
        return cast("Trace", self._cache["rare"])

    def backlog(self, freq: str | pd.Timedelta | None = None) -> pd.DataFrame:
        """Lag over time per consumer and bin, as :meth:`Trace.backlog`."""
        from ..analysis.lag import backlog_frame

        series, ends = self._series(freq)
        return backlog_frame(series, ends)

    def lag(self, freq: str | pd.Timedelta | None = None) -> pd.DataFrame:
        """One row per consumer and queue group, as :meth:`Trace.lag`: deliveries,
        queue-time and processing percentiles, errors, drops, the backlog's peaks, and the
        status, status now and reason from :meth:`diagnose`."""
        from ..analysis.lag import LAG_COLUMNS, judged

        if "delivery_stats" not in self._cache:  # (the verdict may ask before describe())
            self._cache["delivery_stats"] = sql.expand_percentiles(self.by_consumers(
                lambda where: sql.delivery_stats(self._engine.percentiles, where)))
        stats = cast(pd.DataFrame, self._cache["delivery_stats"]).copy()
        series = self._series(freq)[0]
        if stats.empty:  # as the in-memory path: JetStream consumers known from samples only
            if not series:
                return pd.DataFrame(columns=LAG_COLUMNS)
            stats = pd.DataFrame(columns=LAG_COLUMNS[:11])
        for column in ("deliveries", "errors", "dropped"):
            stats[column] = stats[column].astype(np.int64)
        for column in stats.columns[3:-2]:
            stats[column] = stats[column].astype(float)
        return judged(stats, self.diagnose(), series).reset_index(drop=True)

    def diagnose(self, baseline: Trace | Dataset | None = None, *,
                 rules: Rules | None = None) -> pd.DataFrame:
        """What went wrong, worst first: the rules of :meth:`Trace.diagnose` run on the
        engine's answers, one consumer's deliveries in memory at a time (see
        :mod:`evtkit.engine.evidence`)."""
        from ..analysis.diagnose import diagnose
        from .evidence import EngineEvidence

        key = ("diagnose", id(baseline), rules)
        if key not in self._cache:
            base = EngineEvidence(baseline) if isinstance(baseline, Dataset) else baseline
            # What the rules read that an engine builds, built before they hold a
            # consumer's rows (building takes the engine's whole budget).
            self._keep("missed")
            self.problems()
            # The next consumer's rows are read ahead only where both fit what the engine
            # lends (at 10 M events with a 500 MB budget the diagnosis held 0.88 GB over
            # what it began with reading ahead, 0.48 GB not, and took 9.7 s, not 8.5).
            with self._holding("SELECT max(n) AS n FROM (SELECT count(*) AS n FROM "
                               "__deliveries__ WHERE consumer IS NOT NULL GROUP BY consumer) c"
                               ) as fits:
                self._cache[key] = diagnose(EngineEvidence(self, read_ahead=fits), base,
                                            rules=rules)
        return cast(pd.DataFrame, self._cache[key])

    def problems(self) -> pd.DataFrame:
        """Everything that looks wrong, as :meth:`Trace.problems` (explicit causation only:
        see :func:`evtkit.engine.evidence.problems`)."""
        from .evidence import problems

        if "problems" not in self._cache:  # diagnose() reads them too
            self._cache["problems"] = problems(self)
        return cast(pd.DataFrame, self._cache["problems"]).copy()

    def verdict(self) -> list[str]:
        """One sentence per critical finding of :meth:`diagnose`, or that nothing went
        wrong (as :meth:`Trace.verdict`)."""
        from ..analysis.finding import headlines

        return headlines(self.diagnose(), failed=self.lag)

    def fanout(self) -> pd.DataFrame:
        """One row per subject and type: ``subject, type, events, deliveries, consumers,
        consumer_names, mean_fanout, emitted_types`` (see the module docstring)."""
        frame = self._engine.frame(sql.fanout())
        keys = list(zip(frame["subject"], frame["type"], strict=True))
        for which, column in (("consumers", "consumer_names"), ("emitted", "emitted_types")):
            names = self._engine.frame(sql.fanout_names(which))
            grouped = names.groupby(["subject", "type"])
            joined = grouped["name"].agg(lambda x: ", ".join(sorted(map(str, x))))
            frame[column] = [joined.get(key, "") for key in keys]
            if which == "consumers":
                counts = grouped.agg(deliveries=("n", "sum"), consumers=("name", "count"))
                for total in ("deliveries", "consumers"):
                    frame[total] = [counts[total].get(key, 0) for key in keys]
        frame["mean_fanout"] = frame["deliveries"] / frame["events"]
        for column in ("events", "deliveries", "consumers"):
            frame[column] = frame[column].astype(np.int64)
        frame = frame.astype({c: "str" for c in ("subject", "type", "consumer_names",
                                                 "emitted_types")})
        return frame[["subject", "type", "events", "deliveries", "consumers", "consumer_names",
                      "mean_fanout", "emitted_types"]].reset_index(drop=True)

    def flows(self) -> pd.DataFrame:
        """One row per flow: ``correlation_id, events, deliveries, consumers, errors,
        started_at, ended_at, duration_s``, longest first."""
        self._keep("flow_deliveries")
        frame = self._engine.frame(sql.flows())
        started = frame["started_ns"].to_numpy(dtype=np.int64)
        ended = frame["ended_ns"].to_numpy(dtype=np.int64)
        out = pd.DataFrame({
            "correlation_id": frame["correlation_id"].astype("str"),
            **{c: frame[c].to_numpy(dtype=np.int64) for c in ("events", "deliveries",
                                                              "consumers", "errors")},
            "started_at": utc(started), "ended_at": utc(ended),
            "duration_s": (ended - started) / 1e9,
        })
        return out.sort_values(["duration_s", "correlation_id"],
                               ascending=[False, True]).reset_index(drop=True)

    def trace(self, *, correlation_id: str | None = None,
              kinds: tuple[str, ...] | None = None) -> Trace:
        """Load a selection into memory as a :class:`~evtkit.trace.Trace` (every column,
        payloads included): the observations of one flow, or of some kinds (e.g.
        ``("disconnect", "reconnect")``), or (no argument) everything."""
        from ..trace import Trace

        where = "TRUE"
        params: dict[str, Any] = {}
        if kinds is not None:
            where = "r.kind IN (" + ", ".join(f":k{i}" for i in range(len(kinds))) + ")"
            params.update({f"k{i}": kind for i, kind in enumerate(kinds)})
        if correlation_id is not None:
            where = ("r.event_id IN (SELECT event_id FROM __events__ WHERE correlation_id = :flow)"
                     " OR r.ref IN (SELECT seq FROM __deliveries__ WHERE correlation_id = :flow)")
            params["flow"] = correlation_id
        frame = self._engine.frame(
            f"SELECT * FROM __observations__ r WHERE {where} ORDER BY seq", params)
        return Trace(_observations(frame), dict(self.metadata))

    def chain(self, flow: str) -> Chain:
        """One flow's causal chain (see :meth:`Trace.chain`), from its rows alone."""
        return self.trace(correlation_id=flow).chain(flow)

    def critical_path(self, flow: str) -> pd.DataFrame:
        """The critical path of one flow (see :meth:`Trace.critical_path`)."""
        return self.trace(correlation_id=flow).critical_path(flow)

    def deliveries(self, sample: int | None = None, seed: int = 0) -> pd.DataFrame:
        """The columns of :attr:`Trace.deliveries` for ``sample`` deliveries drawn at random
        (the same ones on every engine for the same ``seed``), or for every one (``None``:
        mind your memory), in ``seq`` order; see :func:`evtkit.engine.flows.deliveries`."""
        from .flows import deliveries

        return deliveries(self, sample, seed)

    def chains(self) -> pd.DataFrame:
        """One row per flow with its root, depth and critical path, longest first, as
        ``Trace.chains(infer=False)``; see :func:`evtkit.engine.flows.chains`."""
        from .flows import chains

        return chains(self)

    def slowest_flows(self, top: int = 10) -> pd.DataFrame:
        """The slowest flows and their bottlenecks, as :meth:`Trace.slowest_flows`; see
        :func:`evtkit.engine.flows.slowest_flows`."""
        from .flows import slowest_flows

        key = ("slowest_flows", top)
        if key not in self._cache:
            self._cache[key] = slowest_flows(self, top)
        return cast(pd.DataFrame, self._cache[key])

    def flow_graph(self) -> pd.DataFrame:
        """The observed service graph as edges, as :meth:`Trace.flow_graph` (evtkit's own
        edges; see the module docstring); see :func:`evtkit.engine.flows.flow_graph`."""
        from .flows import flow_graph

        return flow_graph(self)


def _packed(counts: pd.DataFrame, most: int) -> Iterator[list[str]]:
    """``consumer, n`` rows (in order) as runs of consumers whose ``n`` add up to at most
    ``most`` (a consumer with more on its own)."""
    names: list[str] = []
    held = 0
    for name, n in zip(counts["consumer"].astype(str), counts["n"].astype(int), strict=True):
        if names and held + n > most:
            yield names
            names, held = [], 0
        names.append(name)
        held += n
    if names:
        yield names


def _observations(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows from the engine (times as ns) → an ``observations`` frame."""
    from ..schema import to_frame, with_missing

    table = pa.Table.from_pandas(frame, preserve_index=False)
    for name in sql.TIMES:
        column = table[name].cast(pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return to_frame(with_missing(table, OBSERVATIONS), OBSERVATIONS)
