"""Column schemas of evtkit's frames and trace files, defined once.

Three frames:

``observations``
    The raw capture, one row per thing an observer saw: a ``publish``, a ``receive`` by a
    named consumer, a ``tap`` (passive capture), a ``handled`` (handler outcome, pointing at
    its receive through ``ref``), a ``drop`` (messages lost, ``count``), a ``disconnect`` /
    ``reconnect`` of the connection, or an ``error`` reported by the client. What the server
    says becomes rows too: ``consumer_info`` (a JetStream consumer's counters, sampled),
    ``advisory`` (a JetStream advisory) and ``hop`` (one step of a server message trace:
    a connection that sent or received the message). This is what trace files store.
``events``
    One row per event (unique ``event_id``), derived from the observations.
``deliveries``
    One row per event × consumer delivery, with queue and processing times and outcome.

Timestamps are ``datetime64[ns, UTC]``; durations are float seconds with ``_s`` in the name.
Text with few distinct values (kinds, names of connections, consumers, subjects, types,
outcomes...) is ``category`` (categories sorted). Ids (``event_id``, ``correlation_id``,
``causation_id``, ``trace_id``, ``parent_id``, ``replay_of``) are ``category`` too, all id
columns of a frame sharing one set of categories (in order of first appearance), and the
frames derived from the observations sharing the observations' set: each id is held once,
a row holds a code, and ids compare and join across columns and frames by their codes
(``frame["event_id"] == "…"`` and the ``.str`` methods work as on text). Bytes stay in Arrow:
``payload`` and ``header_block`` are ``binary[pyarrow]`` (an element is ``bytes``, a missing
one ``<NA>``) and ``headers`` is ``map<string, string>[pyarrow]``, so a large trace holds no
Python object per row; :func:`as_bytes` and :func:`as_dicts` give plain Python values.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd
import pyarrow as pa

from ._arrow import TEXT as _TEXT
from ._arrow import arrow as _arrow
from ._arrow import categorical, dictionary, ids, ids_soon, masked, same_categories, share, text
from ._arrow import pandas_type as _pandas_type
from ._arrow import positions as positions  # (re-exported: the analyses use them)
from ._arrow import same as same

__all__ = ["DELIVERIES", "EVENTS", "KINDS", "OBSERVATIONS", "SCHEMA_VERSION", "Column", "Schema",
           "as_bytes", "as_dicts"]

SCHEMA_VERSION = 2
"""Version of the observation columns in trace files; bumped when columns change.

Files of an older version load with the newer columns empty."""

KINDS = ("publish", "receive", "tap", "handled", "drop", "disconnect", "reconnect", "error",
         "consumer_info", "advisory", "hop")

_TS = pa.timestamp("ns", tz="UTC")
_TS_PD = pd.DatetimeTZDtype("ns", "UTC")


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its name, Arrow type on disk, pandas dtype in memory and meaning."""

    name: str
    arrow: pa.DataType
    pandas: object
    doc: str
    since: int = 1
    is_id: bool = False
    """An id: a categorical sharing the one set of id categories of its frame."""


def _str(name: str, doc: str, since: int = 1) -> Column:
    return Column(name, pa.string(), pd.StringDtype(na_value=float("nan")), doc, since)


def _ts(name: str, doc: str, since: int = 1) -> Column:
    return Column(name, _TS, _TS_PD, doc, since)


def _int(name: str, doc: str, since: int = 1) -> Column:
    return Column(name, pa.int64(), pd.Int64Dtype(), doc, since)


def _bool(name: str, doc: str) -> Column:
    return Column(name, pa.bool_(), pd.BooleanDtype(), doc)


def _float(name: str, doc: str) -> Column:
    return Column(name, pa.float64(), "float64", doc)


def _cat(name: str, doc: str, since: int = 1) -> Column:
    """Text with few distinct values: a categorical (one small code per row)."""
    return Column(name, pa.string(), pd.CategoricalDtype(), doc, since)


def _id(name: str, doc: str) -> Column:
    """An id: one code per row into the categories every id column of the frame shares."""
    return Column(name, pa.string(), pd.CategoricalDtype(), doc, is_id=True)


def _bytes(name: str, doc: str) -> Column:
    return Column(name, pa.binary(), pd.ArrowDtype(pa.binary()), doc)


_HEADERS = pa.map_(pa.string(), pa.string())


def _headers(doc: str) -> Column:
    return Column("headers", _HEADERS, pd.ArrowDtype(_HEADERS), doc)


class Schema:
    """An ordered set of columns with a check that a frame conforms to it."""

    def __init__(self, name: str, columns: list[Column]) -> None:
        self.name = name
        self.columns = columns
        self.by_name: Mapping[str, Column] = {c.name: c for c in columns}

    @property
    def names(self) -> list[str]:
        """Column names in order."""
        return [c.name for c in self.columns]

    @property
    def ids(self) -> list[str]:
        """Names of the id columns (categoricals sharing one set of categories)."""
        return [c.name for c in self.columns if c.is_id]

    @property
    def arrow(self) -> pa.Schema:
        """The Arrow schema used on disk."""
        return pa.schema([pa.field(c.name, c.arrow) for c in self.columns])

    def empty(self) -> pd.DataFrame:
        """A frame with every column and no rows."""
        return pd.DataFrame({c.name: pd.Series([], dtype=_empty_dtype(c)) for c in self.columns})

    def problems(self, frame: pd.DataFrame) -> list[str]:
        """What is wrong with ``frame`` against this schema (empty list: conforms)."""
        found = []
        for column in self.columns:
            if column.name not in frame.columns:
                found.append(f"missing column {column.name!r}")
            elif str(frame[column.name].dtype) != _dtype_name(column):
                found.append(
                    f"column {column.name!r} has dtype {frame[column.name].dtype}, "
                    f"expected {column.pandas}"
                )
        return found

    def since(self, version: int) -> list[str]:
        """Names of the columns added after schema ``version`` (empty in older files)."""
        return [c.name for c in self.columns if c.since > version]

    def describe(self) -> str:
        """One line per column: name, dtype and meaning (used in docstrings and README)."""
        return "\n".join(f"{c.name:<15} {c.pandas!s:<22} {c.doc}" for c in self.columns)


OBSERVATIONS = Schema(
    "observations",
    [
        _int("seq", "capture order, unique within a trace"),
        _cat("kind", ", ".join(KINDS[:-1]) + " or " + KINDS[-1]),
        _ts("ts", "when it was observed (for handled: when the handler finished)"),
        _cat("observer", "name of the NATS connection that observed it"),
        _cat("consumer", "consumer (receive, handled, drop); for publish: whose handler"),
        _cat("queue", "queue group of the consumer, if any"),
        _cat("subject", "NATS subject"),
        _str("reply", "reply subject, if any"),
        _int("size", "payload size in bytes"),
        _bytes("payload", "payload bytes as on the wire"),
        _bytes("header_block", "raw NATS header block as on the wire"),
        _headers("headers other than the CloudEvents/traceparent ones (a map; "
                 "as_dicts() gives dicts), or missing"),
        _id("event_id", "CloudEvents id (syn-… when the message had none)"),
        _cat("type", "CloudEvents type"),
        _cat("source", "CloudEvents source: the producing service"),
        _id("correlation_id", "the flow the event belongs to"),
        _id("causation_id", "id of the event that caused it; empty for a root"),
        _id("trace_id", "W3C trace id from traceparent"),
        _id("parent_id", "W3C parent span id from traceparent"),
        _bool("sampled", "W3C sampled flag from traceparent"),
        _ts("event_time", "CloudEvents time, as the producer stated it"),
        _cat("content_type", "media type of the payload"),
        _cat("mode", "binary, structured or bare (no CloudEvents attributes)"),
        _bool("id_synthetic", "True when event_id was made up because none was sent"),
        _id("replay_of", "for a replayed message: the id of the event it replays"),
        _int("malformed", "header lines that could not be parsed"),
        _int("ref", "handled: seq of its receive; publish: seq of the receive being handled"),
        _ts("started_at", "for handled rows: when the handler started"),
        _cat("outcome", "for handled rows: ok, error or dropped"),
        _cat("error", "for handled/error rows: the exception text"),
        _int("count", "for drop rows: how many messages were lost"),
        _cat("detail", "drop/disconnect/reconnect/error rows: what happened; advisory: "
             "which (MAX_DELIVERIES, MSG_NAKED, MSG_TERMINATED...); hop: in, eg (egress to "
             "a client), rt, gw, leaf or js"),
        _cat("stream", "JetStream stream (JetStream publish/receive, consumer_info, advisory)",
             2),
        _int("stream_seq", "JetStream stream sequence (publish ack, delivery, advisory; "
             "consumer_info: last delivered)", 2),
        _int("consumer_seq", "JetStream consumer sequence (delivery; consumer_info: last "
             "delivered)", 2),
        _int("delivery_count", "JetStream deliveries of this message so far (1 = first)", 2),
        _cat("ack", "JetStream handled rows: ack, nak or term", 2),
        _int("pending", "messages the consumer has not been sent yet (consumer_info; "
             "JetStream receive: as stated in the delivery)", 2),
        _int("ack_pending", "consumer_info: sent but not acknowledged", 2),
        _int("redelivered", "consumer_info: messages redelivered at least once", 2),
        _int("waiting", "consumer_info: pull requests waiting", 2),
        _int("ack_floor", "consumer_info: stream sequence up to which all is acknowledged", 2),
        _ts("last_active", "consumer_info: when the consumer last delivered", 2),
        _cat("server", "nats-server name (hop, consumer_info)", 2),
    ],
)

EVENTS = Schema(
    "events",
    [
        _id("event_id", "CloudEvents id (syn-… when the message had none)"),
        _cat("type", "CloudEvents type"),
        _cat("subject", "NATS subject it was published on"),
        _cat("source", "CloudEvents source: the producing service"),
        _id("correlation_id", "the flow the event belongs to"),
        _id("causation_id", "id of the event that caused it; empty for a root"),
        _id("trace_id", "W3C trace id"),
        _ts("published_at", "when it was published (seen by evtkit), else first seen"),
        _ts("first_seen_at", "earliest observation of the event by anyone"),
        _ts("event_time", "CloudEvents time: when the producer says it happened"),
        _cat("producer", "connection that published it, when evtkit saw the publish"),
        _cat("emitted_by", "consumer whose handler published it (evtkit handlers only)"),
        _int("emitted_seq", "seq of that handler's receive (joins deliveries.seq)"),
        _int("size", "payload size in bytes"),
        _cat("content_type", "media type of the payload"),
        _cat("mode", "binary, structured or bare"),
        _bool("id_synthetic", "True when event_id was made up"),
        _id("replay_of", "for a replayed event: the id of the original event"),
        _int("deliveries", "receives by named consumers"),
        _bytes("payload", "payload bytes"),
        _headers("headers other than the CloudEvents/traceparent ones (a map; "
                 "as_dicts() gives dicts), or missing"),
    ],
)

DELIVERIES = Schema(
    "deliveries",
    [
        _id("event_id", "the delivered event"),
        _cat("consumer", "consumer name"),
        _cat("queue", "queue group, if any"),
        _cat("observer", "connection that received it (tells queue-group members apart)"),
        _cat("subject", "subject it arrived on"),
        _cat("type", "event type"),
        _id("correlation_id", "flow of the event"),
        _ts("published_at", "when the event was published"),
        _ts("received_at", "when the consumer's connection read it from the socket"),
        _ts("started_at", "when the handler started"),
        _ts("done_at", "when the handler finished"),
        _float("queue_s", "published → handler start: time waiting (broker and client)"),
        _float("processing_s", "handler start → finish: time working"),
        _cat("outcome", "ok, error, dropped (lost before the handler) or pending"),
        _cat("error", "exception text when the handler failed"),
        _int("delivery_count", "JetStream: which delivery of the message this was (1 = first)",
             2),
        _cat("ack", "JetStream: how the handler settled it: ack, nak or term", 2),
        _int("seq", "seq of the receive observation"),
    ],
)


_ID_NAMES = frozenset(OBSERVATIONS.ids + EVENTS.ids + DELIVERIES.ids)


def utc(ns: np.ndarray) -> pd.Series:
    """int64 nanoseconds since the epoch → a ``datetime64[ns, UTC]`` Series (no parsing).

    The minimum int64 is NaT, as in pandas."""
    return pd.Series(np.asarray(ns, dtype=np.int64).view("M8[ns]")).dt.tz_localize("UTC")


def _nulls(column: Column, n: int) -> object:
    """An all-missing column of ``column``'s dtype whose memory is not touched: zero pages
    from ``np.zeros``, stride-0 masks and a stride-0 NaT for timestamps (most server and
    JetStream columns of a trace are empty, and a trace can have millions of rows)."""
    dtype = column.pandas
    if isinstance(dtype, pd.CategoricalDtype):
        return pd.Categorical.from_codes(np.broadcast_to(np.int8(-1), n),
                                         dtype=pd.CategoricalDtype(pd.Index([], dtype=_TEXT)))
    if isinstance(dtype, pd.Int64Dtype):
        return pd.arrays.IntegerArray(np.zeros(n, np.int64), np.broadcast_to(True, n))
    if isinstance(dtype, pd.BooleanDtype):
        return pd.arrays.BooleanArray(np.zeros(n, bool), np.broadcast_to(True, n))
    if dtype == "float64":
        return np.broadcast_to(np.nan, n)
    if isinstance(dtype, pd.DatetimeTZDtype):  # NaT at every row, from one value
        return pd.arrays.DatetimeArray._simple_new(
            np.broadcast_to(np.datetime64("NaT", dtype.unit), n), dtype=dtype)
    kind = column.arrow
    if pa.types.is_string(kind):
        return text(pa.Array.from_buffers(pa.large_string(), n, [
            _zeros(n // 8 + 1), _zeros(8 * n + 8), pa.py_buffer(b"")], null_count=n))
    if pa.types.is_binary(kind):
        empty = pa.Array.from_buffers(kind, n, [_zeros(n // 8 + 1), _zeros(4 * n + 4),
                                                pa.py_buffer(b"")], null_count=n)
    elif pa.types.is_map(kind):  # (no entries: an empty struct of keys and items)
        entries = pa.StructArray.from_arrays(
            [pa.array([], kind.key_type), pa.array([], kind.item_type)],
            fields=[kind.key_field, kind.item_field])
        empty = pa.Array.from_buffers(kind, n, [_zeros(n // 8 + 1), _zeros(4 * n + 4)],
                                      null_count=n, children=[entries])
    else:
        return None  # (no other types in the schemas)
    return pd.arrays.ArrowExtensionArray(pa.chunked_array([empty]))


def _zeros(size: int) -> pa.Buffer:
    return pa.py_buffer(np.zeros(size, np.uint8))  # calloc: pages untouched until written


def column(values: pa.Array | pa.ChunkedArray, spec: Column) -> object:
    """One Arrow column → the pandas array of ``spec``'s dtype (the conversion used by
    :func:`to_frame`; bytes and maps stay in Arrow, text with few values becomes codes)."""
    n = len(values)
    if values.null_count == n and n:
        empty = _nulls(spec, n)
        if empty is not None:
            return empty
    if spec.is_id:
        return ids({spec.name: values})[spec.name]
    if isinstance(spec.pandas, pd.CategoricalDtype):
        return categorical(values)
    if str(values.type) != str(spec.arrow):  # (str: tells map field names apart too)
        values = values.cast(spec.arrow)
    if isinstance(spec.pandas, pd.ArrowDtype):
        chunked = values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])
        return pd.arrays.ArrowExtensionArray(chunked)
    if isinstance(spec.pandas, pd.Int64Dtype | pd.BooleanDtype):
        return masked(values, ints=isinstance(spec.pandas, pd.Int64Dtype))
    return pa.table({"x": values}).to_pandas(types_mapper=_pandas_type)["x"].array


def frame_of(columns: dict[str, object], schema: Schema, n: int) -> pd.DataFrame:
    """A frame of already converted columns, in the schema's order, without copying them."""
    frame = pd.DataFrame({name: columns[name] for name in schema.names}, copy=False)
    if frame.empty and n == 0:
        return schema.empty()
    return frame


def to_frame(table: pa.Table, schema: Schema,
             made: Future[dict[str, pd.Categorical]] | None = None) -> pd.DataFrame:
    """Arrow table → pandas frame with the schema's dtypes (the one conversion path used by
    capture and by trace files alike). Each converted column is released from ``table``'s
    copy as soon as it is converted; the ids (a hash of every distinct id, the largest step)
    are converted on a second thread meanwhile — or were started already: ``made``, from
    :func:`ids_soon` (then ``table`` need not have the id columns)."""
    if made is None:
        made = ids_soon({name: table.column(name) for name in schema.ids})
    table = table.select([name for name in schema.names if name not in _ID_NAMES])
    out: dict[str, object] = {}
    for spec in schema.columns:
        if not spec.is_id:
            out[spec.name] = column(table.column(spec.name), spec)
            table = table.drop_columns([spec.name])
    out.update(made.result())
    return frame_of(out, schema, table.num_rows)


def as_bytes(values: pd.Series) -> list[bytes | None]:
    """A ``payload`` / ``header_block`` column as Python ``bytes`` (``None`` where missing).

    ``series.iloc[i]`` already gives ``bytes``; this converts a whole column at once."""
    return cast(list, _arrow_of(values).to_pylist())


def as_dicts(values: pd.Series) -> list[dict[str, str] | None]:
    """A ``headers`` column as Python dicts (``None`` where missing), e.g.
    ``as_dicts(trace.events["headers"])``."""
    return cast(list, _arrow_of(values).to_pylist(maps_as_pydicts="strict"))


def _arrow_of(values: pd.Series) -> pa.ChunkedArray:
    array = values.array
    if hasattr(array, "_pa_array"):
        return cast(pa.ChunkedArray, array._pa_array)
    return pa.chunked_array([pa.array(np.asarray(values, dtype=object), from_pandas=True)])


def fill(values: pd.Series, value: str | pd.Series) -> pd.Series:
    """Missing text filled with ``value`` (text, or a Series of it aligned with ``values``);
    a categorical stays one, the new values joining its categories in sorted order
    (``fillna`` alone refuses a value that is not a category)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        more = (value.dropna().unique() if isinstance(value, pd.Series) else [value])
        new = [v for v in more if v not in values.cat.categories]
        if new:
            categories = sorted({*values.cat.categories, *map(str, new)})
            values = values.cat.set_categories(pd.Index(categories, dtype=_TEXT))
        if isinstance(value, pd.Series) and isinstance(value.dtype, pd.CategoricalDtype):
            value = value.astype(values.dtype)
    return values.fillna(value)


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """``pd.concat`` of frames of one schema that keeps categoricals categorical (pandas
    falls back to Python strings when their categories differ): the categories become the
    sorted union first; the id columns, which share one set of categories in each frame,
    share the union of those sets."""
    if len(frames) == 1:
        return frames[0]
    frames = list(frames)
    columns = list(frames[0].columns)
    names = [n for n in columns if n in _ID_NAMES]
    joined: dict[str, pd.Categorical] = {}
    if names and not all(same_categories(f[n].dtype, frames[0][names[0]].dtype)
                         for f in frames for n in names):
        joined = ids({n: pa.chunked_array([dictionary(f[n]) for f in frames]) for n in names})
        frames = [f.drop(columns=names) for f in frames]
    for name in frames[0].columns:
        dtypes = [f[name].dtype for f in frames]
        if all(isinstance(d, pd.CategoricalDtype) for d in dtypes) and name not in names:
            union = sorted(set().union(*(d.categories for d in dtypes)))
            dtype = pd.CategoricalDtype(pd.Index(union, dtype=_TEXT))
            frames = [f.assign(**{name: f[name].cat.set_categories(dtype.categories)})
                      if f[name].dtype != dtype else f for f in frames]
    out = pd.concat(frames, ignore_index=True)
    return out.assign(**joined)[columns] if joined else out


def with_missing(table: pa.Table, schema: Schema) -> pa.Table:
    """``table`` with an all-null column added for every schema column it lacks."""
    for field in schema.arrow:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(len(table), field.type))
    return table


def to_table(frame: pd.DataFrame, schema: Schema) -> pa.Table:
    """pandas frame → Arrow table with the schema's on-disk types (categoricals decoded by
    Arrow from their codes: ``from_pandas`` would be many times slower)."""
    cats = {n for n in schema.names if isinstance(frame[n].dtype, pd.CategoricalDtype)}
    rest = [f for f in schema.arrow if f.name not in cats]
    table = pa.Table.from_pandas(frame[[f.name for f in rest]], schema=pa.schema(rest),
                                 preserve_index=False)
    columns = {name: table.column(name) for name in table.column_names}
    columns.update({n: _arrow(frame[n]).cast(schema.by_name[n].arrow) for n in cats})
    return pa.table([columns[n] for n in schema.names], schema=schema.arrow)


def conform(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Return ``frame`` with exactly the schema's columns, in order, cast to its dtypes
    (missing columns are added empty; the id columns made to share one set of categories,
    which they keep if they already do)."""
    out: dict[str, object] = dict(share({
        name: frame[name] if name in frame.columns else np.full(len(frame), None, object)
        for name in schema.ids}))
    for column in schema.columns:
        if column.is_id:
            continue
        if column.name not in frame.columns:
            out[column.name] = pd.Series([None] * len(frame), dtype=column.pandas,
                                         index=frame.index)
            continue
        values = frame[column.name]
        if str(values.dtype) != _dtype_name(column):
            values = values.astype(column.pandas)
        if isinstance(values.dtype, pd.CategoricalDtype) and _unused(values.array):
            values = values.cat.remove_unused_categories()  # as if loaded: the values' own
        out[column.name] = values
    return pd.DataFrame({c.name: out[c.name] for c in schema.columns}, index=frame.index,
                        copy=False)


def _unused(values: pd.Categorical) -> bool:
    """Whether some category has no value (counted on the codes: removing none would
    still copy them, and a frame's columns are millions of rows)."""
    codes = np.asarray(values.codes)
    used = np.zeros(len(values.categories) + 1, bool)  # (the last: missing values, -1)
    for start in range(0, len(codes), 1 << 20):  # (indices become 8 bytes each: in slices)
        used[codes[start:start + (1 << 20)]] = True
    return not used[:-1].all()


def _dtype_name(column: Column) -> str:
    return str(pd.Series([], dtype=column.pandas).dtype)


def _empty_dtype(column: Column) -> object:
    if isinstance(column.pandas, pd.CategoricalDtype):  # text categories, as when loaded
        return pd.CategoricalDtype(pd.Index([], dtype=_TEXT))
    return column.pandas
