"""Reading a Parquet trace file's observation columns without a copy of the whole file in
memory: column by column, text with few values as Parquet stores it (dictionary-encoded),
and columns the file's statistics say are empty not read at all (see :mod:`evtkit.store`)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._memory import give_back
from .schema import OBSERVATIONS, Column, column, frame_of, ids

__all__ = ["CATEGORIES", "empty_columns", "read_columns"]

_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)
CATEGORIES = [c.name for c in OBSERVATIONS.columns if isinstance(c.pandas, pd.CategoricalDtype)]


def read_columns(file: pq.ParquetFile, schema: pa.Schema) -> pd.DataFrame:
    """The observation columns, read and converted one at a time, so the file's Arrow copy
    of one column is all that exists beside the frame; columns the file's statistics say are
    empty are not read at all. The id columns come first (while the frame is still small):
    read as Parquet stores them, dictionary-encoded, so only their dictionaries are hashed
    into the one set of id categories."""
    n = file.metadata.num_rows
    empty = empty_columns(file)

    def read(spec: Column) -> pa.ChunkedArray | pa.Array:
        if spec.name not in schema.names or spec.name in empty:
            return pa.nulls(n, spec.arrow)
        return file.read(columns=[spec.name], use_threads=False).column(0)

    def convert(spec: Column, values: pa.ChunkedArray | pa.Array) -> object:
        try:
            return column(values, spec)
        except _ARROW_ERRORS as exc:
            raise TypeError(f"column {spec.name!r} is {values.type}, not {spec.arrow}: "
                            f"{exc}") from exc

    found = {name: read(OBSERVATIONS.by_name[name]) for name in OBSERVATIONS.ids}
    try:
        out: dict[str, object] = dict(ids(found))
    except _ARROW_ERRORS as exc:
        types = ", ".join(f"{name} {values.type}" for name, values in found.items())
        raise TypeError(f"id columns are not text ({types}): {exc}") from exc
    del found
    for spec in OBSERVATIONS.columns:
        if not spec.is_id:
            out[spec.name] = convert(spec, read(spec))
    # (each column's Arrow copy is freed once converted, but kept by Arrow's allocator:
    # 0.15 GB at 1 M events that stayed resident into every analysis)
    give_back(n)
    return frame_of(out, OBSERVATIONS, n)


def empty_columns(file: pq.ParquetFile) -> set[str]:
    """Top-level columns that every row group's statistics say hold only nulls (for a
    nested column such as ``headers``: each of its leaves, one null per row)."""
    meta = file.metadata
    full: dict[str, bool] = {}
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            stats = chunk.statistics
            name = chunk.path_in_schema.split(".")[0]
            full[name] = full.get(name, True) and bool(
                stats is not None and stats.has_null_count
                and stats.null_count == chunk.num_values == group.num_rows)
    return {name for name, nothing in full.items() if nothing} if meta.num_rows else set()
