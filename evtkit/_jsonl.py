"""The JSON Lines trace format (see :mod:`evtkit.store`): a first line
``{"evtkit_trace": {...metadata...}}``, one JSON object per observation (empty fields left
out; ``payload`` as text when it is UTF-8, else ``payload_b64``; the same for
``header_block``), then optionally ``{"evtkit_end": {...}}``. Appends are whole lines.
"""

from __future__ import annotations

import base64
import gzip
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from .errors import TraceFormatError
from .schema import OBSERVATIONS, as_bytes, as_dicts, to_frame

__all__ = ["append_lines", "gzipped", "header", "open_write", "read", "rows"]

_BYTES_COLUMNS = ("payload", "header_block")
_TIME_COLUMNS = tuple(c.name for c in OBSERVATIONS.columns
                      if c.pandas == OBSERVATIONS.by_name["ts"].pandas)


def gzipped(path: Path) -> bool:
    """Whether ``path`` is gzip-compressed, by its name."""
    return path.name.lower().endswith(".gz")


def open_write(path: Path, *, gz: bool, append: bool = False) -> BinaryIO:
    """``path`` opened to write (or append) bytes, through gzip when ``gz``."""
    mode = "ab" if append else "wb"
    if gz:
        return cast(BinaryIO, gzip.open(path, mode))
    return cast(BinaryIO, open(path, mode))  # noqa: SIM115 - returned to a with-block


def append_lines(path: Path, data: bytes) -> None:
    """Append whole lines in one write and push them to disk."""
    with open_write(path, gz=gzipped(path), append=True) as fh:
        fh.write(data)
    if not gzipped(path):
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())


def header(meta: dict[str, Any]) -> bytes:
    """The first line: the metadata."""
    return orjson.dumps({"evtkit_trace": meta}, default=str) + b"\n"


def rows(observations: pd.DataFrame) -> bytes:
    """Observation rows as JSON lines, leaving empty fields out."""
    if observations.empty:
        return b""
    columns: dict[str, list[Any]] = {}
    for name in OBSERVATIONS.names:
        series = observations[name]
        if name in _TIME_COLUMNS:
            text = np.datetime_as_string(
                series.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]"), unit="ns"
            )
            columns[name] = [None if t == "NaT" else t + "Z" for t in text]
        elif name in _BYTES_COLUMNS:
            columns[name] = as_bytes(series)
        elif name == "headers":
            columns[name] = as_dicts(series)
        else:
            columns[name] = series.astype(object).where(series.notna(), None).tolist()
    lines = []
    names = list(columns)
    for values in zip(*columns.values(), strict=True):
        row: dict[str, Any] = {}
        for name, value in zip(names, values, strict=True):
            if value is None:
                continue
            if name in _BYTES_COLUMNS:
                try:
                    row[name] = value.decode("utf-8")
                except UnicodeDecodeError:
                    row[name + "_b64"] = base64.b64encode(value).decode("ascii")
            else:
                row[name] = value
        lines.append(orjson.dumps(row))
    return b"\n".join(lines) + b"\n"


def read(path: Path, check: Callable[[Path, Any], dict[str, Any]]
         ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The observations and metadata of a JSON Lines trace; ``check(path, metadata)``
    vets the header's (and the end line's) metadata before the rows are read."""
    opener = gzip.open if _is_gzip(path) else open
    try:
        with opener(path, "rb") as fh:
            lines = fh.read().split(b"\n")
    except (OSError, EOFError) as exc:
        raise TraceFormatError(path, f"cannot read (corrupt or truncated?): {exc}") from exc
    records = _parse_lines(path, lines)
    if not records or not isinstance(records[0], dict) or "evtkit_trace" not in records[0]:
        raise TraceFormatError(
            path, "not an evtkit trace: the first line must be {\"evtkit_trace\": ...}"
        )
    meta = check(path, records[0]["evtkit_trace"])
    rows = records[1:]
    if rows and isinstance(rows[-1], dict) and "evtkit_end" in rows[-1]:
        meta = {**meta, **check(path, rows.pop()["evtkit_end"])}
    return _rows_to_frame(path, rows), meta


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _parse_lines(path: Path, lines: Iterable[bytes]) -> list[Any]:
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise TraceFormatError(
                path, f"line {number} is not valid JSON (corrupt or truncated?): {exc}"
            ) from exc
    return records


def _rows_to_frame(path: Path, rows: list[Any]) -> pd.DataFrame:
    if not rows:
        return OBSERVATIONS.empty()
    if not all(isinstance(r, dict) for r in rows):
        raise TraceFormatError(path, "every row must be a JSON object")
    frame = pd.DataFrame.from_records(rows)
    for name in _BYTES_COLUMNS:
        text = frame[name] if name in frame else pd.Series([None] * len(frame))
        b64 = frame[name + "_b64"] if name + "_b64" in frame else pd.Series([None] * len(frame))
        try:
            frame[name] = [
                base64.b64decode(b, validate=True) if isinstance(b, str)
                else t.encode("utf-8") if isinstance(t, str) else None
                for t, b in zip(text, b64, strict=True)
            ]
        except (ValueError, TypeError) as exc:
            raise TraceFormatError(path, f"column {name!r} holds bad base64: {exc}") from exc
    try:
        for name in _TIME_COLUMNS:
            if name in frame:
                frame[name] = pd.to_datetime(frame[name], utc=True, format="ISO8601")
        frame = frame.reindex(columns=OBSERVATIONS.names)
        for name in frame.columns:
            if frame[name].dtype == object or frame[name].isna().all():
                frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
        table = pa.Table.from_pandas(frame, schema=OBSERVATIONS.arrow, preserve_index=False)
        return to_frame(table, OBSERVATIONS)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise TraceFormatError(path, f"rows do not fit the trace columns: {exc}") from exc
