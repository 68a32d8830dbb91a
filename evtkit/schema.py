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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["DELIVERIES", "EVENTS", "KINDS", "OBSERVATIONS", "SCHEMA_VERSION", "Column", "Schema"]

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


def _bytes(name: str, doc: str) -> Column:
    return Column(name, pa.binary(), "object", doc)


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
    def arrow(self) -> pa.Schema:
        """The Arrow schema used on disk."""
        return pa.schema([pa.field(c.name, c.arrow) for c in self.columns])

    def empty(self) -> pd.DataFrame:
        """A frame with every column and no rows."""
        return pd.DataFrame({c.name: pd.Series([], dtype=c.pandas) for c in self.columns})

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
        _str("kind", ", ".join(KINDS[:-1]) + " or " + KINDS[-1]),
        _ts("ts", "when it was observed (for handled: when the handler finished)"),
        _str("observer", "name of the NATS connection that observed it"),
        _str("consumer", "consumer (receive, handled, drop); for publish: whose handler"),
        _str("queue", "queue group of the consumer, if any"),
        _str("subject", "NATS subject"),
        _str("reply", "reply subject, if any"),
        _int("size", "payload size in bytes"),
        _bytes("payload", "payload bytes as on the wire"),
        _bytes("header_block", "raw NATS header block as on the wire"),
        Column("headers", pa.map_(pa.string(), pa.string()), "object",
               "headers other than the CloudEvents/traceparent ones (dict), or None"),
        _str("event_id", "CloudEvents id (syn-… when the message had none)"),
        _str("type", "CloudEvents type"),
        _str("source", "CloudEvents source: the producing service"),
        _str("correlation_id", "the flow the event belongs to"),
        _str("causation_id", "id of the event that caused it; empty for a root"),
        _str("trace_id", "W3C trace id from traceparent"),
        _str("parent_id", "W3C parent span id from traceparent"),
        _bool("sampled", "W3C sampled flag from traceparent"),
        _ts("event_time", "CloudEvents time, as the producer stated it"),
        _str("content_type", "media type of the payload"),
        _str("mode", "binary, structured or bare (no CloudEvents attributes)"),
        _bool("id_synthetic", "True when event_id was made up because none was sent"),
        _str("replay_of", "for a replayed message: the id of the event it replays"),
        _int("malformed", "header lines that could not be parsed"),
        _int("ref", "handled: seq of its receive; publish: seq of the receive being handled"),
        _ts("started_at", "for handled rows: when the handler started"),
        _str("outcome", "for handled rows: ok, error or dropped"),
        _str("error", "for handled/error rows: the exception text"),
        _int("count", "for drop rows: how many messages were lost"),
        _str("detail", "drop/disconnect/reconnect/error rows: what happened; advisory: "
             "which (MAX_DELIVERIES, MSG_NAKED, MSG_TERMINATED...); hop: in, eg (egress to "
             "a client), rt, gw, leaf or js"),
        _str("stream", "JetStream stream (JetStream publish/receive, consumer_info, advisory)",
             2),
        _int("stream_seq", "JetStream stream sequence (publish ack, delivery, advisory; "
             "consumer_info: last delivered)", 2),
        _int("consumer_seq", "JetStream consumer sequence (delivery; consumer_info: last "
             "delivered)", 2),
        _int("delivery_count", "JetStream deliveries of this message so far (1 = first)", 2),
        _str("ack", "JetStream handled rows: ack, nak or term", 2),
        _int("pending", "messages the consumer has not been sent yet (consumer_info; "
             "JetStream receive: as stated in the delivery)", 2),
        _int("ack_pending", "consumer_info: sent but not acknowledged", 2),
        _int("redelivered", "consumer_info: messages redelivered at least once", 2),
        _int("waiting", "consumer_info: pull requests waiting", 2),
        _int("ack_floor", "consumer_info: stream sequence up to which all is acknowledged", 2),
        _ts("last_active", "consumer_info: when the consumer last delivered", 2),
        _str("server", "nats-server name (hop, consumer_info)", 2),
    ],
)

EVENTS = Schema(
    "events",
    [
        _str("event_id", "CloudEvents id (syn-… when the message had none)"),
        _str("type", "CloudEvents type"),
        _str("subject", "NATS subject it was published on"),
        _str("source", "CloudEvents source: the producing service"),
        _str("correlation_id", "the flow the event belongs to"),
        _str("causation_id", "id of the event that caused it; empty for a root"),
        _str("trace_id", "W3C trace id"),
        _ts("published_at", "when it was published (seen by evtkit), else first seen"),
        _ts("first_seen_at", "earliest observation of the event by anyone"),
        _ts("event_time", "CloudEvents time: when the producer says it happened"),
        _str("producer", "connection that published it, when evtkit saw the publish"),
        _str("emitted_by", "consumer whose handler published it (evtkit handlers only)"),
        _int("emitted_seq", "seq of that handler's receive (joins deliveries.seq)"),
        _int("size", "payload size in bytes"),
        _str("content_type", "media type of the payload"),
        _str("mode", "binary, structured or bare"),
        _bool("id_synthetic", "True when event_id was made up"),
        _str("replay_of", "for a replayed event: the id of the original event"),
        _int("deliveries", "receives by named consumers"),
        _bytes("payload", "payload bytes"),
        Column("headers", pa.map_(pa.string(), pa.string()), "object",
               "headers other than the CloudEvents/traceparent ones (dict), or None"),
    ],
)

DELIVERIES = Schema(
    "deliveries",
    [
        _str("event_id", "the delivered event"),
        _str("consumer", "consumer name"),
        _str("queue", "queue group, if any"),
        _str("observer", "connection that received it (tells queue-group members apart)"),
        _str("subject", "subject it arrived on"),
        _str("type", "event type"),
        _str("correlation_id", "flow of the event"),
        _ts("published_at", "when the event was published"),
        _ts("received_at", "when the consumer's connection read it from the socket"),
        _ts("started_at", "when the handler started"),
        _ts("done_at", "when the handler finished"),
        _float("queue_s", "published → handler start: time waiting (broker and client)"),
        _float("processing_s", "handler start → finish: time working"),
        _str("outcome", "ok, error, dropped (lost before the handler) or pending"),
        _str("error", "exception text when the handler failed"),
        _int("delivery_count", "JetStream: which delivery of the message this was (1 = first)",
             2),
        _str("ack", "JetStream: how the handler settled it: ack, nak or term", 2),
        _int("seq", "seq of the receive observation"),
    ],
)


def utc(ns: np.ndarray) -> pd.Series:
    """int64 nanoseconds since the epoch → a ``datetime64[ns, UTC]`` Series (no parsing).

    The minimum int64 is NaT, as in pandas."""
    return pd.Series(np.asarray(ns, dtype=np.int64).view("M8[ns]")).dt.tz_localize("UTC")


def positions(values: pd.Series | pd.Index, keys: pd.Series | pd.Index) -> np.ndarray:
    """Where each of ``values`` is in ``keys`` (int64, -1 when absent or missing).

    An Arrow hash lookup: several times faster than ``Index.get_indexer`` on strings.
    """
    found = pc.index_in(_arrow(values), value_set=_arrow(keys), skip_nulls=True)
    return np.asarray(pc.fill_null(found, -1)).astype(np.int64)


def text(values: pa.Array | pa.ChunkedArray) -> pd.api.extensions.ExtensionArray:
    """An Arrow string (or dictionary-of-string) array as a pandas ``str`` array, without
    Python objects in between."""
    if pa.types.is_dictionary(values.type):
        values = values.cast(pa.large_string())
    return pa.table({"x": values}).to_pandas(types_mapper=_pandas_type)["x"].array


def _arrow(values: pd.Series | pd.Index) -> pa.Array:
    array = values.array if hasattr(values, "array") else values
    if hasattr(array, "_pa_array"):
        return pa.chunked_array(array._pa_array).combine_chunks()
    # from_pandas: NaN / None / NA in object columns are missing values, not text
    return pa.array(np.asarray(values, dtype=object), pa.large_string(), from_pandas=True)


def _pandas_type(arrow_type: pa.DataType) -> object | None:
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype(na_value=float("nan"))
    if pa.types.is_int64(arrow_type):
        return pd.Int64Dtype()
    if pa.types.is_boolean(arrow_type):
        return pd.BooleanDtype()
    return None


def to_frame(table: pa.Table, schema: Schema) -> pd.DataFrame:
    """Arrow table → pandas frame with the schema's dtypes (the one conversion path used by
    capture and by trace files alike)."""
    frame = table.select(schema.names).cast(schema.arrow).to_pandas(
        types_mapper=_pandas_type, maps_as_pydicts="strict"
    )
    return frame


def with_missing(table: pa.Table, schema: Schema) -> pa.Table:
    """``table`` with an all-null column added for every schema column it lacks."""
    for field in schema.arrow:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(len(table), field.type))
    return table


def to_table(frame: pd.DataFrame, schema: Schema) -> pa.Table:
    """pandas frame → Arrow table with the schema's on-disk types."""
    return pa.Table.from_pandas(frame[schema.names], schema=schema.arrow, preserve_index=False)


def conform(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Return ``frame`` with exactly the schema's columns, in order, cast to its dtypes
    (missing columns are added empty)."""
    out = {}
    for column in schema.columns:
        if column.name not in frame.columns:
            out[column.name] = pd.Series([None] * len(frame), dtype=column.pandas,
                                         index=frame.index)
            continue
        values = frame[column.name]
        if str(values.dtype) != _dtype_name(column):
            values = values.astype(column.pandas)
        out[column.name] = values
    return pd.DataFrame(out, index=frame.index)


def _dtype_name(column: Column) -> str:
    return str(pd.Series([], dtype=column.pandas).dtype)
