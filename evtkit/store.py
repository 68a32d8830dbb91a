"""Trace files: Parquet (native) and JSON Lines, written whole or in segments.

Formats, chosen by suffix:

``*.parquet`` (a file)
    One Parquet file (zstd) of the observation rows; the capture metadata, including
    ``schema_version``, is JSON under the ``evtkit.trace`` key of the file's key-value
    metadata. DuckDB, Polars and Spark read it as is.
``*.parquet`` (a directory)
    What ``evtkit record`` writes: ``part-000000.parquet``, ``part-000001.parquet``, ...
    each a complete trace file holding the rows of one flush interval. Each part is written
    to a temporary name and renamed, so a killed recorder leaves only whole parts. Recorders
    sharing one capture (``evtkit record --shard NAME``) write ``part-NAME-000000.parquet``
    ...; loading the directory joins the shards into one trace (each shard numbers its rows
    on its own, so their ``seq`` numbers are shifted to follow one another).
``*.jsonl`` / ``*.jsonl.gz``
    A first line ``{"evtkit_trace": {...metadata...}}``, then one JSON object per
    observation (empty fields left out; ``payload`` as text when it is UTF-8, else
    ``payload_b64``; the same for ``header_block``), then optionally
    ``{"evtkit_end": {...}}`` with the final metadata. Appends are whole lines.

Loading checks everything it can and raises :class:`~evtkit.errors.TraceFormatError`
naming the file and the problem: missing, empty, corrupt or truncated, not a trace, a
schema version this evtkit does not read, wrong column types, unknown row kinds.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._parquet import CATEGORIES, read_columns
from .errors import TraceFormatError
from .observation import MESSAGE_KINDS, build_observations
from .schema import (
    KINDS,
    OBSERVATIONS,
    SCHEMA_VERSION,
    as_bytes,
    as_dicts,
    concat,
    to_frame,
    to_table,
)
from .trace import Trace

__all__ = ["SegmentWriter", "check_shard", "load", "merge_metadata", "save", "shard_of",
           "trace_format", "trace_metadata"]

META_KEY = b"evtkit.trace"
PART_GLOB = "part-*.parquet"
_PART = re.compile(r"^part-(?:(?P<shard>[A-Za-z0-9_-]+)-)?(?P<n>[0-9]{6})\.parquet$")
_SHARD = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_shard(name: str) -> str:
    """``name`` if it can name a shard's parts (letters, digits, ``-``, ``_``; at most 64).

    Raises:
        ValueError: it cannot (it would end up in file names).
    """
    if not isinstance(name, str) or not _SHARD.match(name):
        raise ValueError(f"shard name {name!r} must be 1-64 letters, digits, '-' or '_'")
    return name


def shard_of(part: str | os.PathLike[str]) -> str | None:
    """The shard a part file belongs to (``part-NAME-000000.parquet`` → ``NAME``), or None."""
    match = _PART.match(os.path.basename(part))
    return match["shard"] if match else None
_BYTES_COLUMNS = ("payload", "header_block")
_TIME_COLUMNS = tuple(c.name for c in OBSERVATIONS.columns
                      if c.pandas == OBSERVATIONS.by_name["ts"].pandas)


def trace_format(path: str | os.PathLike[str]) -> str:
    """``parquet`` or ``jsonl`` for a path, by its suffix.

    Raises:
        ValueError: the suffix is neither.
    """
    name = os.fspath(path).lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return "jsonl"
    raise ValueError(
        f"{os.fspath(path)}: unknown trace format; use a .parquet or .jsonl (.jsonl.gz) name"
    )


# -- writing -----------------------------------------------------------------------------------


def save(trace: Trace, path: str | os.PathLike[str]) -> str:
    """Write ``trace`` to ``path`` (format by suffix; see the module docstring)."""
    fmt = trace_format(path)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    meta = {**trace.metadata, "schema_version": SCHEMA_VERSION, "complete": True}
    meta.pop("source_path", None)
    tmp = target.with_name(f".{target.name}.tmp")
    if fmt == "parquet":
        _write_parquet(trace.observations, meta, tmp)
    else:
        with _open_write(tmp, gz=_gz(target)) as fh:
            fh.write(_jsonl_header(meta))
            fh.write(_jsonl_rows(trace.observations))
            fh.write(orjson.dumps({"evtkit_end": meta}) + b"\n")
    os.replace(tmp, target)
    return os.fspath(target)


def _write_parquet(observations: pd.DataFrame, meta: dict[str, Any], path: Path) -> None:
    table = to_table(observations, OBSERVATIONS)
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, default=str).encode()})
    pq.write_table(table, path, compression="zstd")


def _gz(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _open_write(path: Path, *, gz: bool, append: bool = False) -> BinaryIO:
    mode = "ab" if append else "wb"
    if gz:
        return cast(BinaryIO, gzip.open(path, mode))
    return cast(BinaryIO, open(path, mode))  # noqa: SIM115 - returned to a with-block


def _append(path: Path, data: bytes) -> None:
    """Append whole lines in one write and push them to disk."""
    with _open_write(path, gz=_gz(path), append=True) as fh:
        fh.write(data)
    if not _gz(path):
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())


def _jsonl_header(meta: dict[str, Any]) -> bytes:
    return orjson.dumps({"evtkit_trace": meta}, default=str) + b"\n"


def _jsonl_rows(observations: pd.DataFrame) -> bytes:
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


class SegmentWriter:
    """Writes a growing trace in pieces, so a killed process loses at most one interval.

    Parquet paths become a directory of parts; JSON Lines paths get whole lines appended.

    Args:
        path: where the trace goes (format by suffix).
        metadata: capture metadata, updated by :meth:`write` and :meth:`close`.
        shard: write this shard's parts of a directory other recorders write too: only
            its own earlier parts are cleared (Parquet directories only).
    """

    def __init__(self, path: str | os.PathLike[str], metadata: dict[str, Any],
                 shard: str | None = None) -> None:
        self.path = Path(path)
        self.format = trace_format(path)
        self.metadata = {**metadata, "schema_version": SCHEMA_VERSION, "complete": False}
        self.shard = None if shard is None else check_shard(shard)
        self.prefix = f"part-{shard}-" if shard else "part-"
        self.parts = 0
        self.rows = 0
        if shard is not None:
            if self.format != "parquet":
                raise ValueError(f"shards write a Parquet directory, not {self.path.name!r}")
            self.metadata["shard"] = shard
        if self.format == "parquet":
            if self.path.is_file():
                raise FileExistsError(f"{self.path} exists and is a file; choose another name")
            self.path.mkdir(parents=True, exist_ok=True)
            for old in self.path.glob(PART_GLOB):
                if shard is None or shard_of(old) == shard:
                    old.unlink()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with _open_write(self.path, gz=_gz(self.path)) as fh:
                fh.write(_jsonl_header(self.metadata))
                fh.flush()

    def write(self, first_seq: int, rows: Sequence[tuple[Any, ...]],
              metadata: dict[str, Any] | None = None) -> None:
        """Append captured rows (see :mod:`evtkit.observation`) as one segment."""
        self.metadata.update(metadata or {})
        if not rows and self.format == "jsonl":
            return
        frame = build_observations(rows, first_seq)
        self.rows += len(frame)
        if self.format == "parquet":
            target = self.path / f"{self.prefix}{self.parts:06d}.parquet"
            tmp = self.path / f".{target.name}.tmp"
            _write_parquet(frame, {**self.metadata, "part": self.parts}, tmp)
            os.replace(tmp, target)
        else:
            _append(self.path, _jsonl_rows(frame))
        self.parts += 1

    def close(self, metadata: dict[str, Any] | None = None) -> None:
        """Mark the trace complete (a last, empty part / an end line)."""
        self.metadata.update(metadata or {})
        self.metadata["complete"] = True
        if self.format == "parquet":
            self.write(0, [], None)
        else:
            _append(self.path, orjson.dumps({"evtkit_end": self.metadata}, default=str) + b"\n")


# -- reading -----------------------------------------------------------------------------------


def load(path: str | os.PathLike[str]) -> Trace:
    """Read a trace file (``.parquet`` file or directory, ``.jsonl``, ``.jsonl.gz``).

    Raises:
        TraceFormatError: the path is missing, empty, corrupt, truncated, not a trace, or
            of a schema version this evtkit cannot read.
    """
    target = Path(path)
    try:
        return _load(target)
    except OSError as exc:  # unreadable: permissions, a directory where a file was meant...
        raise TraceFormatError(target, f"cannot read it: {exc.strerror or exc}") from exc


def _load(target: Path) -> Trace:
    if not target.exists():
        raise TraceFormatError(target, "no such file or directory")
    if target.is_dir():
        frame, meta = _read_parts(target)
    else:
        if target.stat().st_size == 0:
            raise TraceFormatError(target, "the file is empty")
        try:
            fmt = trace_format(target)
        except ValueError:
            fmt = _sniff(target)
        frame, meta = _read_parquet(target) if fmt == "parquet" else _read_jsonl(target)
    _check_rows(target, frame)
    meta["source_path"] = os.fspath(target)
    if not frame["seq"].is_monotonic_increasing:  # as recorded, it is: no copy then
        frame = frame.sort_values("seq", kind="stable").reset_index(drop=True)
    return Trace(frame, meta)


def _read_parts(target: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A directory of parts, one trace: shards (``part-NAME-*``) follow one another, each
    shard's ``seq`` (and the ``ref`` pointing at it) shifted past the previous shard's."""
    parts = sorted(target.glob(PART_GLOB))
    if not parts:
        raise TraceFormatError(target, "a directory without trace parts (part-*.parquet)")
    shards: dict[str | None, list[Path]] = {}
    for part in parts:
        shards.setdefault(shard_of(part), []).append(part)
    frames, metas, offset = [], [], 0
    for _, files in sorted(shards.items(), key=lambda item: item[0] or ""):
        loaded = [_read_parquet(p) for p in files]
        frame = concat([f for f, _ in loaded])
        if len(shards) > 1 and len(frame):
            frame["seq"] = frame["seq"] + offset
            frame["ref"] = frame["ref"] + offset
            offset = int(frame["seq"].max()) + 1
        frames.append(frame)
        metas += [m for _, m in loaded]
    return concat(frames), merge_metadata(
        [str(p) for files in shards.values() for p in files], metas)


def merge_metadata(parts: Sequence[str], metas: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The metadata of a directory of parts (``parts`` names them, ``metas`` are theirs, in
    the same order): each shard's last part speaks for it; shards are listed, complete when
    all are, and their drops add up."""
    last: dict[str | None, dict[str, Any]] = {}
    for part, meta in zip(parts, metas, strict=True):
        last[shard_of(Path(part))] = meta
    shards = [last[k] for k in sorted(last, key=lambda k: k or "")]
    meta = {**shards[-1], "parts": len(parts)}
    meta.pop("part", None)
    if len(shards) > 1:
        meta.pop("shard", None)
        meta["shards"] = sorted(str(m.get("shard")) for m in shards)
        meta["complete"] = all(m.get("complete", False) for m in shards)
        meta["drops"] = sum(int(m.get("drops") or 0) for m in shards)
    return meta


def _sniff(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == b"PAR1":
        return "parquet"
    if head[:2] == b"\x1f\x8b" or head[:1] == b"{":
        return "jsonl"
    raise TraceFormatError(path, "not a trace file (neither Parquet nor JSON Lines)")


def _check_version(path: str | os.PathLike[str], meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise TraceFormatError(path, "trace metadata is not a JSON object")
    found = meta.get("schema_version")
    if isinstance(found, int) and 1 <= found <= SCHEMA_VERSION:
        return meta  # older files load with the newer columns empty
    if isinstance(found, int) and found > SCHEMA_VERSION:
        raise TraceFormatError(
            path, f"written with trace schema version {found}; this evtkit reads version "
            f"{SCHEMA_VERSION}: upgrade evtkit to read it"
        )
    raise TraceFormatError(
        path, f"trace schema version {found!r} is not supported (this evtkit reads "
        f"version {SCHEMA_VERSION})"
    )


def _read_parquet(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    try:
        file = pq.ParquetFile(path)
        # Text with few values is read as Parquet stores it: dictionary-encoded.
        text = [n for n in CATEGORIES if n in file.schema_arrow.names]
        file = pq.ParquetFile(path, read_dictionary=text, metadata=file.metadata)
        schema = file.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise TraceFormatError(
            path, f"not a readable Parquet file (corrupt or truncated?): {exc}"
        ) from exc
    meta = trace_metadata(path, schema)
    missing = [n for n in OBSERVATIONS.names if n not in schema.names]
    newer = set(OBSERVATIONS.since(meta["schema_version"]))
    if set(missing) - newer:
        raise TraceFormatError(path, f"missing trace columns {sorted(set(missing) - newer)}")
    try:
        return read_columns(file, schema), meta
    except (pa.ArrowException, OSError) as exc:
        raise TraceFormatError(
            path, f"not a readable Parquet file (corrupt or truncated?): {exc}"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise TraceFormatError(path, f"columns have the wrong types: {exc}") from exc


def trace_metadata(path: str | os.PathLike[str], schema: pa.Schema) -> dict[str, Any]:
    """The capture metadata of a Parquet trace file, from its Arrow ``schema``.

    Raises:
        TraceFormatError: not an evtkit trace, or of a schema version this evtkit cannot read.
    """
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise TraceFormatError(
            path, "a Parquet file but not an evtkit trace (no evtkit.trace metadata); "
            f"its columns are {schema.names[:8]}"
        )
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise TraceFormatError(path, f"trace metadata is not valid JSON: {exc}") from exc
    return _check_version(path, meta)


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
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
    meta = _check_version(path, records[0]["evtkit_trace"])
    rows = records[1:]
    if rows and isinstance(rows[-1], dict) and "evtkit_end" in rows[-1]:
        meta = {**meta, **_check_version(path, rows.pop()["evtkit_end"])}
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


def _check_rows(path: Path, frame: pd.DataFrame) -> None:
    if frame["seq"].isna().any() or frame["ts"].isna().any() or frame["kind"].isna().any():
        raise TraceFormatError(path, "rows without seq, ts or kind")
    unknown = set(frame["kind"].unique()) - set(KINDS)
    if unknown:
        raise TraceFormatError(path, f"unknown row kinds {sorted(unknown)}")
    nameless = frame["kind"].isin(MESSAGE_KINDS) & frame["event_id"].isna()
    if nameless.any():
        raise TraceFormatError(path, f"{int(nameless.sum())} message rows without event_id "
                                     f"(the first has seq {frame['seq'][nameless].iloc[0]})")
    if frame["seq"].duplicated().any():
        raise TraceFormatError(path, "duplicate seq numbers (parts from different traces?)")
