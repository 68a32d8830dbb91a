"""Reading a Parquet trace file's observation columns without a copy of the whole file in
memory: column by column, text with few values as Parquet stores it (dictionary-encoded),
and columns the file's statistics say are empty not read at all (see :mod:`evtkit.store`)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .schema import OBSERVATIONS, column, frame_of

__all__ = ["CATEGORIES", "empty_columns", "read_columns"]

CATEGORIES = [c.name for c in OBSERVATIONS.columns if isinstance(c.pandas, pd.CategoricalDtype)]


def read_columns(file: pq.ParquetFile, schema: pa.Schema) -> pd.DataFrame:
    """The observation columns, read and converted one at a time, so the file's Arrow copy
    of one column is all that exists beside the frame; columns the file's statistics say are
    empty are not read at all."""
    n = file.metadata.num_rows
    empty = empty_columns(file)
    out: dict[str, object] = {}
    for spec in OBSERVATIONS.columns:
        if spec.name not in schema.names or spec.name in empty:
            values = pa.nulls(n, spec.arrow)
        else:
            values = file.read(columns=[spec.name], use_threads=False).column(0)
        try:
            out[spec.name] = column(values, spec)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise TypeError(f"column {spec.name!r} is {values.type}, not {spec.arrow}: "
                            f"{exc}") from exc
        del values
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
