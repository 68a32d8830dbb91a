"""Engines that run :mod:`evtkit.engine.sql` over trace files: what every engine offers
(:class:`Engine`) and DuckDB, in the process, the default (Apache Spark, on a cluster or
``local[*]``, is :mod:`evtkit.engine.spark`).

Each offers the same two things: a ``raw`` view of the Parquet files (the observation
columns the analyses read, times as BIGINT nanoseconds, plus the ``file`` each row came
from) and ``frame(sql, params)`` → a pandas frame. Queries carry ``:name`` parameters,
bound by the engine, never pasted into the text.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import pandas as pd

from .._arrow import filled, to_pandas
from ..errors import EngineError, TraceFormatError
from . import parts
from .kept import Kept
from .progress import shown
from .sql import COLUMNS, HANDLED_ONCE, deliveries, events, views

__all__ = ["BATCH_ROWS", "KEPT_BYTES_PER_ROW", "ON_DISK_BEYOND", "DuckDBEngine", "Engine",
           "keep_on_disk"]

_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


class Engine:
    """What every engine offers (see the module docstring)."""

    name = "engine"
    shifts: dict[str, int]
    """File name → how far its ``seq`` moves (shards); empty for one shard."""
    names: dict[str, str]
    """View name in :mod:`evtkit.engine.sql` → the engine's name for it."""

    def prepare(self) -> None:
        """Define the views of :func:`evtkit.engine.sql.views` once: ``observations`` over
        the files, ``events`` and ``deliveries`` kept (computed once, read by every
        analysis). Deliveries are first built as if every receive were handled once at
        most; if one was handled twice (it then shows twice), they are built again taking
        each receive's last handler row."""
        if "deliveries" in self.names:
            return
        if self.shifts:
            self._shifts()
        for name, select in views(sharded=bool(self.shifts)).items():
            if name == "observations":
                self._define(name, self.text(select), keep=False)
            elif name == "events":
                self._events()
            else:
                self._deliveries(handled_once=True)
        try:
            if not bool(self.frame(HANDLED_ONCE)["once"].iloc[0]):  # a receive handled twice
                self._deliveries(handled_once=False)
        except BaseException:  # (not prepared: the quick deliveries may be wrong)
            del self.names["deliveries"]
            raise

    def _events(self) -> None:
        """Keep ``events`` (:func:`evtkit.engine.sql.events`), in one query."""
        self._define("events", self.text(events()), keep=True)

    def _deliveries(self, handled_once: bool) -> None:
        """Keep ``deliveries`` (:func:`evtkit.engine.sql.deliveries`), in one query."""
        self._define("deliveries", self.text(deliveries(handled_once)), keep=True)

    def text(self, sql: str) -> str:
        """``sql`` with every ``__view__`` replaced by the engine's name for it."""
        for name, actual in self.names.items():
            sql = sql.replace(f"__{name}__", actual)
        return sql

    def define(self, name: str, select: str, *, keep: bool = True) -> None:
        """Define view ``name`` (``__name__`` in later queries) as ``select`` over the
        views: kept, i.e. computed once (DuckDB: a table of its private database; Spark:
        a cached view), or with ``keep=False`` computed wherever it is read."""
        self.prepare()
        self._define(name, self.text(select), keep=keep)

    def _define(self, name: str, select: str, *, keep: bool) -> None:
        raise NotImplementedError

    def _shifts(self) -> None:
        """Define ``shifts`` (``file, shift``) from :attr:`shifts`."""
        raise NotImplementedError

    def frame(self, sql: str, params: Mapping[str, Any] | None = None, *,
              categories: Sequence[str] = (), times: Sequence[str] = (),
              size: int | None = None) -> pd.DataFrame:
        """Run ``sql`` (with ``:name`` parameters) and return the result as pandas, the
        text columns named in ``categories`` as categoricals (few distinct values, many
        rows: a consumer's deliveries) and the nanosecond columns named in ``times`` as
        UTC timestamps; ``size``: how many rows it has, where the caller knows (a large
        result is then read into arrays of that size, never held twice; see
        :func:`evtkit._arrow.filled`)."""
        raise NotImplementedError

    reads_aside = False
    """Whether :meth:`frame_soon` runs beside the caller's own queries."""

    def frame_soon(self, sql: str, params: Mapping[str, Any] | None = None, *,
                   categories: Sequence[str] = (), times: Sequence[str] = (),
                   size: int | None = None) -> Future[pd.DataFrame]:
        """:meth:`frame` over the kept views only, started now and its result taken later
        (``.result()``), on another connection in a thread of its own, while the caller
        goes on (queries included) — where :attr:`reads_aside`; otherwise it runs at once
        (so who would read ahead on such an engine does not: it would only hold two
        results)."""
        done: Future[pd.DataFrame] = Future()
        try:
            done.set_result(self.frame(sql, params, categories=categories, times=times,
                                       size=size))
        except Exception as exc:  # noqa: BLE001 - not caught: raised by .result()
            done.set_exception(exc)
        return done

    @staticmethod
    def percentiles(column: str, qs: tuple[float, ...]) -> str:
        """An aggregate giving the percentiles ``qs`` of ``column`` (linear interpolation,
        NULLs ignored) as one array (this, :meth:`min_by` and :meth:`max_by` are the functions the
        dialects spell differently)."""
        raise NotImplementedError

    @staticmethod
    def min_by(value: str, key: str) -> str:
        """An aggregate giving ``value`` at the row of the smallest ``key`` (rows whose key
        is NULL skipped, a NULL value returned as NULL): no sort, where a window would."""
        raise NotImplementedError

    @staticmethod
    def max_by(value: str, key: str, tiebreak: str) -> str:
        """An aggregate giving ``value`` at the row of the largest ``key`` and, of rows
        that share it, the largest ``tiebreak`` (both BIGINT, ``tiebreak`` never NULL;
        rows whose key is NULL skipped): one pass, where finding the largest key first and
        its rows after would join the rows twice."""
        raise NotImplementedError

    def room(self) -> int | None:
        """How much more the engine can lend (:meth:`lend`), in bytes: half its budget less
        what is lent already; ``None`` where its memory is not the caller's (Spark's
        executors)."""
        return None

    @contextlib.contextmanager
    def lend(self, nbytes: int) -> Iterator[None]:
        """While inside, the engine keeps ``nbytes`` less memory than its budget (for what
        the caller holds in pandas meanwhile), at most half of it: DuckDB's limit lowered,
        spilling the rest (nested loans add up); other engines' memory is elsewhere
        (Spark's executors)."""
        yield

    def close(self) -> None:
        """Release what the engine holds (connections, views)."""


class DuckDBEngine(Engine):
    """DuckDB in this process: all cores, spilling to ``temp_directory`` beyond
    ``memory_limit`` (DuckDB's default: 80 % of the machine's memory).

    The kept tables (events, deliveries) live in memory, spilling as they are (~64 bytes
    per observation row, stored small: :mod:`evtkit.engine.kept`), unless more than
    :data:`ON_DISK_BEYOND` times the budget: then in a database file in ``temp_directory``,
    compressed by DuckDB's quicker methods (:data:`evtkit.engine.kept.SLOW`; uncompressed,
    the tables of 100 M events would be ~45 GB of spill). (Building the events spills its
    aggregate as well: at 100 M events, 32 GB of disk; the rest of their building is done
    in parts that fit where one query would spill: :mod:`evtkit.engine.parts`.)

    Args:
        files: Parquet files (local paths or URLs of a registered fsspec filesystem).
        memory_limit: e.g. ``"2GB"``.
        temp_directory: where DuckDB spills (default: a private temporary directory).
        filesystem: an fsspec filesystem for URL paths (``s3://``, ``gs://``, ``memory://``).
        storage: ``"memory"``, ``"disk"`` or ``"auto"`` (by size, as above).
        spill_limit: how much DuckDB may spill, e.g. ``"20GB"`` (default: half the free
            space of ``temp_directory``'s disk at start; DuckDB's, 90 %, let 100 M events
            fill a disk): reaching it is an :class:`~evtkit.errors.EngineError`.
    """

    name = "duckdb"

    def __init__(self, files: list[str], shifts: dict[str, int], *,
                 memory_limit: str | None = None, temp_directory: str | None = None,
                 filesystem: Any = None, storage: str = "auto",
                 spill_limit: str | None = None) -> None:
        import duckdb

        self.shifts = shifts
        # A private spill directory, removed on close or when the engine is collected
        # (a dataset nobody closed must not leave files behind, nor warn).
        spill = temp_directory or tempfile.mkdtemp(prefix="evtkit-duckdb-")
        self._spill = None if temp_directory else weakref.finalize(
            self, shutil.rmtree, spill, ignore_errors=True)
        self._kept: weakref.finalize[Any, Any] | None = None
        # No query here relies on insertion order (each says ORDER BY): keeping it ran
        # the tables of 100 M events out of a 3 GB budget. A name no table has is an
        # error, never a scan of a Python variable so called (replacement scans). Memory
        # a DuckDB thread freed goes back even when that thread idles (frame_soon's
        # connection: at 10 M events the process kept ~0.3 GB more otherwise: 4.2 GB).
        config: dict[str, str | bool | int | float | list[str]] = {
            "temp_directory": spill, "preserve_insertion_order": False,
            "python_enable_replacements": False, "allocator_background_threads": True,
            "allocator_bulk_deallocation_flush_threshold": "128MB"}
        if memory_limit:
            config["memory_limit"] = memory_limit
        self.spill_limit = spill_limit or _decimal(_free_space(spill) // 2)
        config["max_temp_directory_size"] = self.spill_limit
        self._limit = memory_limit or None
        self._lent, self._full = 0, 0
        self.memory_limit = memory_limit or "DuckDB's default, 80% of memory"
        self.con = duckdb.connect(config=config)
        # DuckDB tracks how far a query is (for :meth:`_shown`), printing nothing itself.
        self.con.execute("SET enable_progress_bar = true")
        self.con.execute("SET enable_progress_bar_print = false")
        self.progress = False
        self._soon: ThreadPoolExecutor | None = None  # frame_soon's thread and connection
        self._other: Any = None
        self._reading: set[Future[pd.DataFrame]] = set()
        self._stop: weakref.finalize[Any, Any] | None = None
        self.names = {"raw": "raw"}
        self.kept = Kept()  # (how the kept tables are stored)
        if filesystem is not None:
            self.con.register_filesystem(filesystem)
        self.files = files
        present = self._columns()
        if storage not in ("auto", "memory", "disk"):
            raise ValueError(f"storage: 'auto', 'memory' or 'disk', not {storage!r}")
        self.on_disk = storage == "disk" or storage == "auto" and keep_on_disk(
            self._rows(), self._budget())
        if self.on_disk:  # (a fresh file of this engine's own, in its private directory)
            kept = os.path.join(spill, f"kept-{os.getpid()}-{id(self)}.duckdb")
            self.con.execute(f"ATTACH '{kept.replace(chr(39), chr(39) * 2)}' AS kept")
            self.con.execute("USE kept")
            self.kept.on_disk(self.con)
            if temp_directory:  # (a private directory goes as a whole)
                self._kept = weakref.finalize(self, _remove, kept, kept + ".wal")
        select = []
        for name, sql_type in COLUMNS.items():
            kind = present.get(name)
            if kind is None:
                select.append(f"CAST(NULL AS {_duck(sql_type)}) AS {name}")
            elif kind.startswith("TIMESTAMP"):
                select.append(f"epoch_ns({name}) AS {name}")
            else:
                select.append(f"CAST({name} AS {_duck(sql_type)}) AS {name}")
        # A view cannot take parameters: the file names go in as quoted literals.
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        self.con.execute(f"CREATE VIEW raw AS SELECT {', '.join(select)}, "
                         "parse_filename(filename) AS file "
                         f"FROM read_parquet([{listed}], union_by_name = true, filename = true)")

    def _columns(self) -> dict[str, str]:
        try:
            rows = self.con.execute("DESCRIBE SELECT * FROM read_parquet($files, "
                                    "union_by_name = true)", {"files": self.files}).fetchall()
        except Exception as exc:  # duckdb raises its own IOException / InvalidInputException
            raise TraceFormatError(self.files[0], f"DuckDB cannot read it: {exc}") from exc
        return {str(r[0]): str(r[1]) for r in rows}

    def _rows(self) -> int:
        """Observation rows in the files (from their footers)."""
        got = self.con.execute("SELECT sum(num_rows) FROM parquet_file_metadata($files)",
                               {"files": self.files}).fetchall()  # (all: the result done)
        return int(got[0][0] or 0) if got else 0

    def _budget(self) -> int:
        """DuckDB's memory limit in bytes (it reports it as ``2.7 GiB``)."""
        # (every row fetched: a result left open makes the next query refuse to run)
        got = self.con.execute("SELECT current_setting('memory_limit')").fetchall()
        number, _, unit = str(got[0][0] if got else "0 B").partition(" ")
        scale = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KiB": 2**10,
                 "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}.get(unit.strip(), 1)
        return int(float(number) * scale)

    def room(self) -> int:  # noqa: D102 - see Engine
        return max(0, self._full // 2 - self._lent) if self._lent else self._budget() // 2

    @contextlib.contextmanager
    def lend(self, nbytes: int) -> Iterator[None]:  # noqa: D102 - see Engine
        if not self._lent:
            self._full = self._budget()
        self._lent += nbytes
        try:
            self._set_limit()
            if nbytes:
                self._hand_back()
            yield
        finally:
            self._lent -= nbytes
            self._set_limit()

    def _hand_back(self) -> None:
        """Have DuckDB's allocator return its free pages to the system, so a loan frees
        memory indeed: jemalloc keeps what DuckDB evicts to meet a lowered limit, and what
        its queries freed, for reuse (at 10 M events with a 500 MB budget, 0.3 GB beyond
        what DuckDB counted after building the tables: 0.67 GB resident, 0.37 GB once
        flushed). DuckDB flushes its allocator when it relaunches its
        threads and has no statement for the flush itself: one thread more, then as many
        as before (milliseconds)."""
        threads = int(self.con.sql("SELECT current_setting('threads') AS n").fetchall()[0][0])
        for n in (threads + 1, threads):
            self.con.execute(f"SET threads = {n}")

    def _set_limit(self) -> None:
        """DuckDB's limit: its budget less what is lent (at most half of it: its own
        queries still need room), or as it was given when nothing is (DuckDB reports it
        rounded)."""
        if self._lent:
            limit = f"{max(self._full - self._lent, self._full // 2)}B"
        elif self._limit is None:
            limit = ""
        else:
            limit = self._limit.replace("'", "''")
        with self._within_budget():
            self.con.execute(f"SET memory_limit = '{limit}'" if limit else
                             "RESET memory_limit")

    def _define(self, name: str, select: str, *, keep: bool) -> None:
        # Kept tables in the database, not the connection's temporary schema: frame_soon's
        # connection reads them too (each connection sees only its own temporary tables).
        what = "TABLE" if keep else "TEMP VIEW"
        with self._within_budget(), self._shown(f"building {name}"):
            self.con.execute(f"CREATE OR REPLACE {what} {name} AS "
                             f"{self.kept.rows(name, select) if keep else select}")
        self.names[name] = name

    def _events(self) -> None:
        with self._within_budget(), self._shown("listing words"):
            self.kept.make(self.con, self.names["observations"])
        if not parts.events(self):
            super()._events()

    def _deliveries(self, handled_once: bool) -> None:
        if not parts.deliveries(self, handled_once):
            super()._deliveries(handled_once)
        self.names["deliveries"] = self.kept.deliveries(self.con)  # (with their durations)

    def _shifts(self) -> None:
        self.con.execute("CREATE OR REPLACE TEMP TABLE shifts (file VARCHAR, shift BIGINT)")
        self.con.executemany("INSERT INTO shifts VALUES (?, ?)", list(self.shifts.items()))
        self.names["shifts"] = "shifts"

    def frame(self, sql: str, params: Mapping[str, Any] | None = None, *,
              categories: Sequence[str] = (), times: Sequence[str] = (),
              size: int | None = None) -> pd.DataFrame:
        """Run ``sql`` (with ``:name`` parameters) and return the result as pandas."""
        self.prepare()
        with self._shown("querying"):
            return self._run(self.con, self._query(sql), params, categories, times, size)

    SHOWN_AFTER = 1.0
    """Seconds a query runs before :attr:`progress` shows it."""

    def _shown(self, label: str) -> contextlib.AbstractContextManager[None]:
        """Where :attr:`progress` is on, the main connection's query shown as it runs, once
        it has run :data:`SHOWN_AFTER` seconds (:func:`evtkit.engine.progress.shown`: at
        100 M events building the events table alone takes minutes)."""
        if not self.progress:
            return contextlib.nullcontext()
        return shown(label, self.con.query_progress, self.SHOWN_AFTER)

    reads_aside = True  # (the kept tables only: the views are the main connection's)

    def frame_soon(self, sql: str, params: Mapping[str, Any] | None = None, *,  # noqa: D102
                   categories: Sequence[str] = (), times: Sequence[str] = (),
                   size: int | None = None) -> Future[pd.DataFrame]:
        self.prepare()
        if self._soon is None:
            self._other = self.con.cursor()  # (a connection to the same database)
            if self.on_disk:
                self._other.execute("USE kept")
            self._soon = ThreadPoolExecutor(1, thread_name_prefix="evtkit-duckdb")
            # (a dataset nobody closed stops its reading when it is collected)
            self._stop = weakref.finalize(self, _stop_reading, self._soon, self._other,
                                          self._reading)
        reading = self._soon.submit(self._run, self._other, self._query(sql), params,
                                    categories, times, size)  # (text made here: names change)
        self._reading.add(reading)
        reading.add_done_callback(self._reading.discard)
        return reading

    def _query(self, sql: str) -> str:
        return _PARAM.sub(r"$\1", self.text(sql))

    def _run(self, con: Any, query: str, params: Mapping[str, Any] | None,
             categories: Sequence[str], times: Sequence[str], size: int | None
             ) -> pd.DataFrame:
        with self._within_budget():
            result = con.sql(query, params=dict(params or {}))
            if size is None:
                return to_pandas(result.to_arrow_table(), categories, times)
            # (DuckDB streams it; closed even when reading fails part way, else the
            # connection refuses every query while the exception's traceback lives)
            with result.to_arrow_reader(BATCH_ROWS) as batches:
                return filled(batches, batches.schema, size, categories=categories,
                              times=times)

    @contextlib.contextmanager
    def _within_budget(self) -> Iterator[None]:
        """DuckDB running out of its budget, said as an :class:`EngineError`."""
        import duckdb

        try:
            yield
        except duckdb.OutOfMemoryException as exc:
            if "max_temp_directory_size" in str(exc):
                raise EngineError(
                    f"DuckDB spilled as much to disk as it may ({self.spill_limit}): give it "
                    "more memory (memory_limit=, --memory-budget) or more room to spill "
                    "(spill_limit=, or a temp_directory on a larger disk)") from exc
            raise EngineError(f"DuckDB ran out of its memory budget ({self.memory_limit}) "
                              "and could not spill enough to disk: give it more "
                              f"(memory_limit=, --memory-budget): {exc}".splitlines()[0]
                              ) from exc

    @staticmethod
    def percentiles(column: str, qs: tuple[float, ...]) -> str:  # noqa: D102 - see Engine
        return f"quantile_cont({column}, [{', '.join(map(str, qs))}])"

    @staticmethod
    def min_by(value: str, key: str) -> str:  # noqa: D102 - see Engine
        return f"arg_min_null({value}, {key})"  # (arg_min skips NULL values too)

    @staticmethod
    def max_by(value: str, key: str, tiebreak: str) -> str:  # noqa: D102 - see Engine
        # Both keys as one 128-bit integer, key × 2⁶⁴ + tiebreak + 2⁶³ (exact for every
        # pair of BIGINTs; a struct of them orders a third slower).
        return (f"arg_max_null({value}, CAST({key} AS HUGEINT) * 18446744073709551616 "
                f"+ (CAST({tiebreak} AS HUGEINT) + 9223372036854775808))")

    def close(self) -> None:
        """Close the connections (a query under way on the other one is interrupted) and
        remove the spill directory (or the database file)."""
        if self._stop is not None:
            self._stop()
        self.con.close()
        for cleanup in (self._spill, self._kept):
            if cleanup is not None:
                cleanup()


def _stop_reading(soon: ThreadPoolExecutor, other: Any, reading: set[Future[Any]]) -> None:
    """Stop frame_soon's thread: reads not begun cancelled, the one under way interrupted
    (again until it stops: it may be just starting), its connection closed."""
    soon.shutdown(wait=False, cancel_futures=True)
    while reading:
        other.interrupt()
        wait(list(reading), timeout=0.05)
    other.close()


def _free_space(path: str) -> int:
    """Free bytes on the disk of ``path`` or its nearest existing parent (DuckDB makes a
    ``temp_directory`` it is given when it first spills)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def _decimal(nbytes: int) -> str:
    """``nbytes`` as DuckDB and people read a size, rounded down (``34.6GB``, ``512MB``)."""
    return f"{nbytes // 10**8 / 10:.1f}GB" if nbytes >= 10**9 else f"{nbytes // 10**6}MB"


def _remove(*paths: str) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


BATCH_ROWS = 1 << 20
"""Rows per batch of a large result read into pandas (see :meth:`Engine.frame`)."""
KEPT_BYTES_PER_ROW = 64
"""What the kept events and deliveries tables take in DuckDB's memory per observation row
(measured: 4.5 GB for the 70 M rows of 10 M events; 7.4 GB before :mod:`.kept`)."""
ON_DISK_BEYOND = 4
"""Kept tables more than this many times DuckDB's memory budget go to a database file."""


def keep_on_disk(rows: int, budget: int) -> bool:
    """Whether the kept tables of ``rows`` observation rows go to a database file, with
    DuckDB's memory budget at ``budget`` bytes (``storage="auto"``)."""
    return rows * KEPT_BYTES_PER_ROW > ON_DISK_BEYOND * budget


def _duck(sql_type: str) -> str:
    return {"STRING": "VARCHAR", "BINARY": "BLOB", "MAP": "MAP(VARCHAR, VARCHAR)"}.get(
        sql_type, sql_type)
