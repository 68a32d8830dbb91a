"""The Parquet files of a trace on disk: which they are (a file, a directory of parts and
shards, local or on any fsspec filesystem), their merged metadata and how far each shard's
``seq`` moves, and how many rows they hold (from the footers, without reading the data) —
which :func:`choose_engine` weighs against a memory budget."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import store
from .._location import is_url, resolve
from ..errors import TraceFormatError
from .sql import SEQ_LIMIT

__all__ = ["BYTES_PER_ROW", "choose_engine", "rows_on_disk", "trace_files"]

BYTES_PER_ROW = 300
"""What one observation row costs in memory on the in-memory path (measured: about 215
bytes per row at 1 M events through load and the analyses), with a margin."""


def rows_on_disk(path: str | os.PathLike[str]) -> int | None:
    """Observation rows of a Parquet trace (a file or a directory of parts), from the
    footers without reading the data; None for other formats.

    Raises:
        TraceFormatError: a Parquet trace at a URL cannot be reached or read (said here
            once, rather than met again when loading it).
    """
    import pyarrow.parquet as pq

    if is_url(path) and os.fspath(path).split("?")[0].lower().endswith(".parquet"):
        names, _, _, fs = trace_files(path, None)
        return sum(pq.ParquetFile(fs.open(f, "rb") if fs else f).metadata.num_rows
                   for f in names)
    target = Path(path)
    files = sorted(target.glob(store.PART_GLOB)) if target.is_dir() else [target]
    try:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except (pa.ArrowException, OSError):
        return None


def choose_engine(path: str | os.PathLike[str], budget_bytes: int) -> str:
    """``"memory"`` when the trace would fit ``budget_bytes`` in memory
    (:data:`BYTES_PER_ROW` per row), else ``"duckdb"`` (JSON Lines: always memory)."""
    rows = rows_on_disk(path)
    return "duckdb" if rows is not None and rows * BYTES_PER_ROW > budget_bytes else "memory"


def trace_files(path: str | os.PathLike[str], filesystem: Any
           ) -> tuple[list[str], dict[str, Any], dict[str, int], Any]:
    """The Parquet files of a trace, its metadata (merged as loading merges it), for a
    directory of several shards how far each file's ``seq`` must shift (by file name) so
    the shards follow one another as :func:`evtkit.load` joins them, and the fsspec
    filesystem the files are on (None: local). A URL without ``filesystem`` names its own:
    ``file://`` is read as local files, other stores through their filesystem."""
    import pyarrow.parquet as pq

    fs, name = filesystem, os.fspath(path)
    shown = name
    guard: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if fs is None and is_url(name):
        where = resolve(name, fail=TraceFormatError)
        shown, guard = where.url, where.io("cannot read it")
        if where.local:
            name = where.path
        else:
            fs = where.fsspec()
            name = fs.unstrip_protocol(where.path)
    with guard:
        if fs is None:
            target = Path(name)
            if not target.exists():
                raise TraceFormatError(shown, "no such file or directory")
            files = sorted(str(p) for p in target.glob(store.PART_GLOB)) if target.is_dir() \
                else [name]
        elif not fs.exists(name):
            raise TraceFormatError(shown, "no such file or directory")
        else:  # names with their protocol: what DuckDB routes to the registered filesystem
            files = [fs.unstrip_protocol(f) for f in sorted(
                fs.glob(f"{name.rstrip('/')}/{store.PART_GLOB}"))] if fs.isdir(name) else [name]
        if not files:
            raise TraceFormatError(shown, "a directory without trace parts (part-*.parquet)")
        metas, sizes = [], {}
        for file in files:
            try:
                footer = pq.ParquetFile(fs.open(file, "rb") if fs else file)
                metas.append(store.trace_metadata(file, footer.schema_arrow))
                low, sizes[file] = _seq_range(footer)
            except TraceFormatError:
                raise
            except (pa.ArrowException, OSError) as exc:
                raise TraceFormatError(file, f"not a readable Parquet file: {exc}") from exc
            except ValueError as exc:  # (the seq column's)
                raise TraceFormatError(file, str(exc)) from exc
            if low < 0 or sizes[file] > SEQ_LIMIT:
                raise TraceFormatError(file, f"its rows are numbered (seq) from {low} to "
                                             f"{sizes[file] - 1}: {_NUMBERED}")
    meta = store.merge_metadata(files, metas)
    meta["source_path"] = shown
    shards: dict[str, int] = {}
    for file in files:
        shard = store.shard_of(file) or ""
        shards[shard] = max(shards.get(shard, 0), sizes[file])
    if len(shards) < 2:
        return files, meta, {}, fs
    shift, before = {}, 0
    for shard in sorted(shards):
        shift[shard] = before
        before += shards[shard]
    if before > SEQ_LIMIT:
        raise TraceFormatError(shown, f"its shards number {before} rows (seq) in all: "
                                      f"{_NUMBERED}")
    return files, meta, {os.path.basename(f): shift[store.shard_of(f) or ""] for f in files}, fs


_NUMBERED = "a trace's run from 0 up, below 10^18"  # (SEQ_LIMIT, said as people read it)


def _seq_range(footer: Any) -> tuple[int, int]:
    """The smallest ``seq`` of a Parquet trace file and one past its largest ((0, 0) when
    it has no rows), from the footer's statistics where they exist; ValueError where some
    row has none, or the column is not of integers (loading refuses those files too)."""
    column = footer.schema_arrow.get_field_index("seq")
    if column < 0 or not pa.types.is_integer(footer.schema_arrow.field(column).type):
        raise ValueError("its rows are not numbered (no integer seq column)")
    low, end = None, 0
    for i in range(footer.metadata.num_row_groups):
        stats = footer.metadata.row_group(i).column(column).statistics
        if stats is None or not stats.has_min_max or not stats.has_null_count:
            seq = footer.read_row_group(i, columns=["seq"])["seq"]
            bounds, nulls = pa.compute.min_max(seq), seq.null_count
            least, top = bounds["min"].as_py(), bounds["max"].as_py()
        else:
            least, top, nulls = stats.min, stats.max, stats.null_count
        if nulls:
            raise ValueError("it has rows without seq")
        if top is not None:
            low = least if low is None else min(low, least)
            end = max(end, top + 1)
    return low or 0, end
