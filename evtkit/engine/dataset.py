"""A trace left on disk: ``ek.open(path)`` analyses Parquet traces larger than memory.

::

    ds = ek.open("capture.parquet")                # a file, or a directory of parts/shards
    ds.summary()                                   # counts and time span
    ds.lag(); ds.backlog("1s"); ds.fanout(); ds.flows()
    ds.chain(flow); ds.critical_path(flow)         # one flow, loaded into memory
    ds.trace(correlation_id=flow)                  # any selection as an in-memory Trace

    ek.open(path, engine="spark", spark=session)   # the same analyses on a Spark cluster

Every whole-trace analysis is one query of :mod:`evtkit.engine.sql`, run by the engine (DuckDB
in this process by default: all cores, spilling to disk; or Spark) and returning a small
pandas frame. Results equal :class:`~evtkit.trace.Trace`'s on the same file (the tests hold
them against each other) except where a column says otherwise:

- ``lag()`` has no ``status``/``reason`` (those come from ``diagnose()``, which needs the
  trace in memory) and ``backlog()``/``lag()`` count evtkit's own view of the backlog, not
  JetStream ConsumerInfo samples (``from_server`` is always False).
- ``fanout()``'s ``emitted_types`` follow explicit ``causation_id`` links only (the in-memory
  path also infers links for events that carry none) and it has no ``server_seen``.
- ``flows()`` is ``chains()`` without the causal columns (root, depth, critical path): those
  are per flow, from ``chain(flow)`` / ``critical_path(flow)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import store
from ..errors import TraceFormatError
from ..schema import OBSERVATIONS, utc
from . import sql
from .backends import DuckDBEngine, Engine, SparkEngine

if TYPE_CHECKING:
    from ..analysis.causal import Chain
    from ..trace import Trace

__all__ = ["ENGINES", "Dataset", "open"]

ENGINES = ("duckdb", "spark")
"""Engines :func:`open` can run the analyses on."""


def open(path: str | os.PathLike[str], engine: str = "duckdb", *, spark: Any = None,  # noqa: A001
         memory_limit: str | None = None, temp_directory: str | None = None,
         filesystem: Any = None) -> Dataset:
    """Open a Parquet trace (a file, or a directory of ``part-*.parquet`` written by
    ``evtkit record``, shards included) without loading it.

    Args:
        path: the trace; with ``filesystem`` (an fsspec filesystem) a path or URL on it.
        engine: ``"duckdb"`` (in this process) or ``"spark"`` (needs ``spark``).
        spark: a ``pyspark.sql.SparkSession`` for ``engine="spark"``.
        memory_limit: DuckDB's memory budget, e.g. ``"2GB"``; beyond it, it spills to disk.
        temp_directory: where DuckDB spills.
        filesystem: an fsspec filesystem the files are on (object stores).

    Raises:
        TraceFormatError: not a Parquet trace, or a trace without parts.
        ValueError: an unknown engine, or ``engine="spark"`` without a session.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    files, meta = _files(path, filesystem)
    if engine == "spark":
        if spark is None:
            raise ValueError("engine='spark' needs spark=SparkSession (local or a cluster)")
        runner: Engine = SparkEngine(files, spark)
    else:
        runner = DuckDBEngine(files, memory_limit=memory_limit, temp_directory=temp_directory,
                              filesystem=filesystem)
    return Dataset(runner, meta)


def _files(path: str | os.PathLike[str], filesystem: Any) -> tuple[list[str], dict[str, Any]]:
    """The Parquet files of a trace and its metadata (the last part's, as loading does)."""
    import pyarrow.parquet as pq

    fs = filesystem
    name = os.fspath(path)
    if fs is None:
        target = Path(name)
        if not target.exists():
            raise TraceFormatError(target, "no such file or directory")
        files = sorted(str(p) for p in target.glob(store.PART_GLOB)) if target.is_dir() \
            else [name]
    else:
        files = sorted(fs.glob(f"{name.rstrip('/')}/{store.PART_GLOB}")) if fs.isdir(name) \
            else [name]
    if not files:
        raise TraceFormatError(name, "a directory without trace parts (part-*.parquet)")
    metas = []
    for file in files:
        try:
            schema = pq.read_schema(file, filesystem=fs)
        except (pa.ArrowException, OSError) as exc:
            raise TraceFormatError(file, f"not a readable Parquet file: {exc}") from exc
        metas.append(store.trace_metadata(file, schema))
    meta = store.merge_metadata(files, metas)
    meta["source_path"] = name
    return files, meta


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
        self._cache: dict[str, Any] = {}

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

    def query(self, text: str, **params: Any) -> pd.DataFrame:
        """Run your own SQL on the engine, with the views of :func:`evtkit.engine.sql.base`
        (``observations``, ``events``, ``deliveries``) in scope, e.g.
        ``ds.query("SELECT consumer, count(*) AS n FROM deliveries GROUP BY consumer")``.
        ``:name`` in the text is bound to the keyword argument ``name``."""
        return self._engine.frame(sql.base() + "\n" + text, params)

    def summary(self) -> dict[str, int]:
        """``observations, events, deliveries, errors, dropped, pending`` (counts) and
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

    def backlog(self, freq: str | pd.Timedelta | None = None) -> pd.DataFrame:
        """Lag over time per consumer and bin, as :meth:`Trace.backlog` (``from_server``
        is always False here: ConsumerInfo samples are not read)."""
        ends, step = self._grid(freq)
        start = int(ends[0]) - step
        frame = self._engine.frame(sql.backlog(start, step, len(ends)))
        out = pd.DataFrame({
            "time": utc(ends[frame["j"].to_numpy(dtype=np.int64)]),
            "consumer": frame["consumer"].astype("str"),
            **{c: frame[c].to_numpy(dtype=np.int64) for c in ("backlog", "arrivals", "received",
                                                              "handled", "errors", "missed")},
            "oldest_s": frame["oldest_s"].to_numpy(dtype=float),
            "from_server": np.zeros(len(frame), bool),
        })
        return out[["time", "consumer", "backlog", "oldest_s", "arrivals", "received",
                    "handled", "errors", "missed", "from_server"]]

    def lag(self, freq: str | pd.Timedelta | None = None) -> pd.DataFrame:
        """One row per consumer and queue group: deliveries, queue-time and processing
        percentiles, errors, drops, and the backlog's peak in messages and seconds — the
        columns of :meth:`Trace.lag` before ``status``."""
        stats = self._engine.frame(sql.delivery_stats())
        peaks = self.backlog(freq).groupby("consumer").agg(
            backlog_max=("backlog", "max"), oldest_max_s=("oldest_s", "max"))
        frame = stats.join(peaks, on="consumer")
        frame["queue"] = frame["queue"].replace("", None)
        for column in ("consumer", "queue"):
            frame[column] = frame[column].astype("str")
        for column in ("deliveries", "errors", "dropped", "backlog_max"):
            frame[column] = frame[column].astype(np.int64)
        return frame.reset_index(drop=True)

    def fanout(self) -> pd.DataFrame:
        """One row per subject and type: ``subject, type, events, deliveries, consumers,
        consumer_names, mean_fanout, emitted_types`` (see the module docstring)."""
        frame = self._engine.frame(sql.fanout())
        for which, column in (("consumers", "consumer_names"), ("emitted", "emitted_types")):
            names = self._engine.frame(sql.fanout_names(which))
            joined = names.groupby(["subject", "type"])["name"].agg(
                lambda x: ", ".join(sorted(map(str, x))))
            frame[column] = [joined.get((s, t), "") for s, t in
                             zip(frame["subject"], frame["type"], strict=True)]
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

    def trace(self, *, correlation_id: str | None = None) -> Trace:
        """Load a selection into memory as a :class:`~evtkit.trace.Trace` (every column,
        payloads included): the observations of one flow, or (no argument) everything."""
        from ..trace import Trace

        where = "TRUE"
        params: dict[str, Any] = {}
        if correlation_id is not None:
            where = ("r.event_id IN (SELECT event_id FROM events WHERE correlation_id = :flow) "
                     "OR r.ref IN (SELECT seq FROM deliveries WHERE correlation_id = :flow)")
            params["flow"] = correlation_id
        frame = self._engine.frame(
            sql.base() + f"\nSELECT * FROM observations r WHERE {where} ORDER BY seq", params)
        return Trace(_observations(frame), dict(self.metadata))

    def chain(self, flow: str) -> Chain:
        """One flow's causal chain (see :meth:`Trace.chain`), from its rows alone."""
        return self.trace(correlation_id=flow).chain(flow)

    def critical_path(self, flow: str) -> pd.DataFrame:
        """The critical path of one flow (see :meth:`Trace.critical_path`)."""
        return self.trace(correlation_id=flow).critical_path(flow)


def _observations(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows from the engine (times as ns) → an ``observations`` frame."""
    from ..schema import to_frame, with_missing

    table = pa.Table.from_pandas(frame, preserve_index=False)
    for name in sql.TIMES:
        column = table[name].cast(pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return to_frame(with_missing(table, OBSERVATIONS), OBSERVATIONS)
