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
    The directory may also be a URL (``s3://bucket/run.parquet``, ``gs://...``,
    ``file:///...``, ``memory://...``: see :mod:`evtkit._location`); on object stores a part
    is written under its final name (a PUT is atomic there).
``*.jsonl`` / ``*.jsonl.gz`` (local files only)
    A first line ``{"evtkit_trace": {...metadata...}}``, then one JSON object per
    observation (empty fields left out; ``payload`` as text when it is UTF-8, else
    ``payload_b64``; the same for ``header_block``), then optionally
    ``{"evtkit_end": {...}}`` with the final metadata. Appends are whole lines.

Loading checks everything it can and raises :class:`~evtkit.errors.TraceFormatError`
naming the file and the problem: missing, empty, corrupt or truncated, not a trace, a
schema version this evtkit does not read, wrong column types, unknown row kinds.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import _jsonl
from ._location import Location, is_url, local, public_url, resolve
from ._parquet import CATEGORIES, read_columns
from .errors import TraceFormatError
from .observation import MESSAGE_KINDS, build_observations
from .schema import (
    KINDS,
    OBSERVATIONS,
    SCHEMA_VERSION,
    concat,
    to_table,
)
from .trace import Trace

if TYPE_CHECKING:
    from .asyncapi import Spec

__all__ = ["SegmentWriter", "check_shard", "destination", "load", "merge_metadata", "save",
           "shard_of", "trace_format", "trace_metadata"]

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


def trace_format(path: str | os.PathLike[str]) -> str:
    """``parquet`` or ``jsonl`` for a path or URL, by its suffix.

    Raises:
        ValueError: the suffix is neither.
    """
    name = public_url(os.fspath(path)) if is_url(path) else os.fspath(path)  # no query
    if name.lower().endswith(".parquet"):
        return "parquet"
    if name.lower().endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return "jsonl"
    raise ValueError(f"{name}: unknown trace format; use a .parquet or .jsonl (.jsonl.gz) name")


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
        with _jsonl.open_write(tmp, gz=_jsonl.gzipped(target)) as fh:
            fh.write(_jsonl.header(meta))
            fh.write(_jsonl.rows(trace.observations))
            fh.write(orjson.dumps({"evtkit_end": meta}) + b"\n")
    os.replace(tmp, target)
    return os.fspath(target)


def _write_parquet(observations: pd.DataFrame, meta: dict[str, Any], path: Any) -> None:
    table = to_table(observations, OBSERVATIONS)
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, default=str).encode()})
    pq.write_table(table, path, compression="zstd")


def destination(path: str | os.PathLike[str]) -> Location | None:
    """Where :class:`SegmentWriter` writes a Parquet trace (a local path or a URL), checked:
    known, reachable, not a file; None for JSON Lines (local files only).

    Raises:
        ValueError: an unknown format or URL scheme, or a JSON Lines URL.
        OSError: the store cannot be reached; FileExistsError: a file is in the way.
    """
    if trace_format(path) == "jsonl":
        if is_url(path):
            raise ValueError(f"{public_url(os.fspath(path))}: JSON Lines traces are written "
                             "to local files only; give a local path or a .parquet URL")
        return None
    where = resolve(os.fspath(path)) if is_url(path) else local(os.fspath(path))
    with where.io("cannot write there"):
        kind = where.kind()
    if kind == "file":
        raise FileExistsError(f"{where.url} exists and is a file; choose another name")
    return where


class SegmentWriter:
    """Writes a growing trace in pieces, so a killed process loses at most one interval.

    Parquet paths become a directory of parts; JSON Lines paths get whole lines appended.

    Args:
        path: where the trace goes (format by suffix): a local path, or for Parquet a URL
            (see :func:`destination`).
        metadata: capture metadata, updated by :meth:`write` and :meth:`close`.
        shard: write this shard's parts of a directory other recorders write too: only
            its own earlier parts are cleared (Parquet directories only).
    """

    def __init__(self, path: str | os.PathLike[str], metadata: dict[str, Any],
                 shard: str | None = None) -> None:
        self.path = Path(path)  # a local path; a URL's location (credentials in it) is `where`
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
        where = destination(path)
        if where is not None:
            self.where = where
            with where.io("cannot write there"):
                where.make_directory()
                where.remove([old for old in where.parts(PART_GLOB)
                              if shard is None or shard_of(old) == shard])
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with _jsonl.open_write(self.path, gz=_jsonl.gzipped(self.path)) as fh:
                fh.write(_jsonl.header(self.metadata))
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
            meta = {**self.metadata, "part": self.parts}
            with self.where.io("cannot write a part there"):
                self.where.put(f"{self.prefix}{self.parts:06d}.parquet",
                               lambda out: _write_parquet(frame, meta, out))
        else:
            _jsonl.append_lines(self.path, _jsonl.rows(frame))
        self.parts += 1

    def close(self, metadata: dict[str, Any] | None = None) -> None:
        """Mark the trace complete (a last, empty part / an end line)."""
        self.metadata.update(metadata or {})
        self.metadata["complete"] = True
        if self.format == "parquet":
            self.write(0, [], None)
        else:
            end = orjson.dumps({"evtkit_end": self.metadata}, default=str) + b"\n"
            _jsonl.append_lines(self.path, end)


# -- reading -----------------------------------------------------------------------------------


def load(path: str | os.PathLike[str], *,
         spec: Spec | str | os.PathLike[str] | dict[str, Any] | None = None) -> Trace:
    """Read a trace file (``.parquet`` file or directory, ``.jsonl``, ``.jsonl.gz``), or a
    Parquet trace at a URL (``s3://bucket/run.parquet``, ``file:///...``; see
    :func:`destination`).

    Args:
        path: the file, directory or URL.
        spec: event definitions to attach (:attr:`Trace.spec <evtkit.trace.Trace.spec>`):
            a :class:`~evtkit.asyncapi.Spec` or an AsyncAPI document to read (path, URL or
            dict); then ``problems()`` and ``diagnose()`` include what the traffic does
            against them.

    Raises:
        TraceFormatError: the path is missing, empty, corrupt, truncated, not a trace, or
            of a schema version this evtkit cannot read; the URL cannot be used or reached.
        SpecError: ``spec`` is a document that cannot be read (checked before the trace is).
    """
    if spec is not None:
        from .asyncapi import load as read_spec

        definitions = read_spec(spec)
        return _load_path(path).with_spec(definitions)
    return _load_path(path)


def _load_path(path: str | os.PathLike[str]) -> Trace:
    shown = None
    if is_url(path):
        where = resolve(os.fspath(path), fail=TraceFormatError)
        if not where.local:
            with where.io("cannot read it"):
                frame, meta = _read_url(where)
            return _trace(where.url, frame, meta)
        shown, path = where.url, where.path  # file://: a local path, JSON Lines included
    target = Path(path)
    try:
        return _load(target, shown)
    except OSError as exc:  # unreadable: permissions, a directory where a file was meant...
        raise TraceFormatError(target, f"cannot read it: {exc.strerror or exc}") from exc


def _read_url(where: Location) -> tuple[pd.DataFrame, dict[str, Any]]:
    kind = where.kind()
    if kind is None:
        raise TraceFormatError(where.url, "no such file or directory")
    if kind == "directory":
        return _read_parts(where.url, where.parts(PART_GLOB), where.fs)
    if trace_format(where.path) != "parquet":
        raise TraceFormatError(where.url, "a URL holds Parquet traces; JSON Lines traces are "
                                          "read from local files only")
    return _read_parquet(where.path, where.fs)


def _load(target: Path, shown: str | None) -> Trace:
    if not target.exists():
        raise TraceFormatError(target, "no such file or directory")
    if target.is_dir():
        frame, meta = _read_parts(target, sorted(str(p) for p in target.glob(PART_GLOB)))
    else:
        if target.stat().st_size == 0:
            raise TraceFormatError(target, "the file is empty")
        try:
            fmt = trace_format(target)
        except ValueError:
            fmt = _sniff(target)
        frame, meta = _read_parquet(target) if fmt == "parquet" \
            else _jsonl.read(target, _check_version)
    return _trace(shown or os.fspath(target), frame, meta)


def _trace(name: str, frame: pd.DataFrame, meta: dict[str, Any]) -> Trace:
    _check_rows(name, frame)
    meta["source_path"] = name
    if not frame["seq"].is_monotonic_increasing:  # as recorded, it is: no copy then
        frame = frame.sort_values("seq", kind="stable").reset_index(drop=True)
    return Trace(frame, meta)


def _read_parts(target: str | Path, parts: list[str], fs: Any = None
                ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A directory's ``parts`` (on ``fs``, else local), one trace: shards (``part-NAME-*``)
    follow one another, each shard's ``seq`` (and the ``ref`` pointing at it) shifted past
    the previous shard's."""
    if not parts:
        raise TraceFormatError(target, "a directory without trace parts (part-*.parquet)")
    shards: dict[str | None, list[str]] = {}
    for part in parts:
        shards.setdefault(shard_of(part), []).append(part)
    frames, metas, offset = [], [], 0
    for _, files in sorted(shards.items(), key=lambda item: item[0] or ""):
        loaded = [_read_parquet(p, fs) for p in files]
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


def _read_parquet(path: str | Path, fs: Any = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    try:
        file = pq.ParquetFile(path, filesystem=fs)
        # Text with few values is read as Parquet stores it: dictionary-encoded.
        text = [n for n in CATEGORIES if n in file.schema_arrow.names]
        file = pq.ParquetFile(path, read_dictionary=text, metadata=file.metadata,
                              filesystem=fs)
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


def _check_rows(path: str | Path, frame: pd.DataFrame) -> None:
    if frame["seq"].isna().any() or frame["ts"].isna().any() or frame["kind"].isna().any():
        raise TraceFormatError(path, "rows without seq, ts or kind")
    unknown = set(frame["kind"].unique()) - set(KINDS)
    if unknown:
        raise TraceFormatError(path, f"unknown row kinds {sorted(unknown)}")
    nameless = frame["kind"].isin(MESSAGE_KINDS) & frame["event_id"].isna()
    if nameless.any():
        raise TraceFormatError(path, f"{int(nameless.sum())} message rows without event_id "
                                     f"(the first has seq {frame['seq'][nameless].iloc[0]})")
    if not _distinct(frame["seq"]):
        raise TraceFormatError(path, "duplicate seq numbers (parts from different traces?)")


def _distinct(values: pd.Series) -> bool:
    """Whether an integer column without missing values holds no value twice; no hash table
    when the values increase (as a trace's ``seq`` does), which millions of rows would need."""
    ints = values.array.to_numpy(dtype=np.int64, copy=False) \
        if isinstance(values.dtype, pd.Int64Dtype) else np.asarray(values, dtype=np.int64)
    return bool((ints[1:] > ints[:-1]).all()) or not values.duplicated().any()
