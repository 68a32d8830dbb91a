"""Observation rows: the tuples capture appends, and the frame built from them in bulk.

The hot path appends one plain tuple per observation (:data:`ROW_FIELDS`); nothing is
parsed there. :func:`build_observations` turns a list of rows into the ``observations``
frame (see :mod:`evtkit.schema`) in one go: :mod:`evtkit._columns` lays the rows out as
columns and splits their header blocks (in compiled code when it was built, else with
numpy and Arrow), ids and causality are read with Arrow compute, and only rare rows
(structured-mode CloudEvents, messages without any id) take a per-row Python path. The
results agree with :func:`evtkit.event.decode_message`, which handlers use for one message
at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ._arrow import ids_soon
from ._attributes import TS as _TS
from ._columns import columns
from ._headers import CLOUDEVENTS, decoded, header_name, parse_block
from .event import STRUCTURED, decode_message, js_position, synthetic_id
from .schema import OBSERVATIONS, to_frame

__all__ = ["CONSUMER_INFO_FIELDS", "MESSAGE_KINDS", "ROW_FIELDS", "Row", "build_observations",
           "check_rows"]

ROW_FIELDS = (
    "kind",  # str, one of schema.KINDS
    "ts",  # int, ns since the epoch (UTC)
    "observer",  # str, connection name
    "consumer",  # str | None
    "queue",  # str | None
    "subject",  # bytes | None
    "reply",  # bytes | None
    "payload",  # bytes | None
    "headers",  # bytes | None: the raw header block
    "extra",  # per kind: publish → seq of the receive whose handler published it | None,
    #           or (that seq, stream, stream_seq) after a JetStream publish;
    #           receive/tap → synthetic id | None; handled → (ref, started_ns, outcome,
    #           error[, ack]); drop → (count, detail); disconnect/reconnect/error → detail;
    #           consumer_info → CONSUMER_INFO_FIELDS; advisory → (type, stream, stream_seq,
    #           delivery_count); hop → (server, hop type, error)
)


class Row:
    """Positions of :data:`ROW_FIELDS` in a row tuple, so code reads ``row[Row.SUBJECT]``
    instead of ``row[5]``."""

    KIND, TS, OBSERVER, CONSUMER, QUEUE, SUBJECT, REPLY, PAYLOAD, HEADERS, EXTRA = range(10)


CONSUMER_INFO_FIELDS = ("stream", "pending", "ack_pending", "redelivered", "waiting",
                        "consumer_seq", "stream_seq", "ack_floor", "last_active", "server")
"""Layout of a ``consumer_info`` row's ``extra`` tuple (``last_active`` in ns or None)."""
_S, _I, _B, _N = str, int, bytes, type(None)
_ROW_TYPES = (_S, _I, _S, (_S, _N), (_S, _N), (_B, _N), (_B, _N), (_B, _N), (_B, _N))
# ROW_FIELDS as types, and what each kind keeps in ``extra``: one type, or a tuple shape
# given as one type per position. Rows from elsewhere (telemetry) are checked against them.
_EXTRA: dict[str, Any] = {
    "publish": ((_I, _N), [(_I, _N), (_S, _N), (_I, _N)]),
    "receive": ((_S, _N),), "tap": ((_S, _N),),
    "handled": ([(_I, _N), (_I, _N), (_S, _N), (_S, _N)],
                [(_I, _N), (_I, _N), (_S, _N), (_S, _N), (_S, _N)]),
    "drop": ([_I, (_S, _N)],), "disconnect": ((_S, _N),), "reconnect": ((_S, _N),),
    "error": ((_S, _N),),
    "consumer_info": ([(_S, _N) if f in ("stream", "server") else (_I, _N)
                       for f in CONSUMER_INFO_FIELDS],),
    "advisory": ([(_S, _N), (_S, _N), (_I, _N), (_I, _N)],),
    "hop": ([(_S, _N), (_S, _N), (_S, _N)],),
}


def _fits(value: Any, shape: Any) -> bool:
    if isinstance(shape, list):
        return (isinstance(value, tuple) and len(value) == len(shape)
                and all(_fits(v, t) for v, t in zip(value, shape, strict=True)))
    if isinstance(value, bool) or not isinstance(value, shape):
        return False
    return not isinstance(value, int) or -(2**63) <= value < 2**63  # fits an int64 column


def check_rows(rows: Any) -> None:
    """Raise ValueError unless ``rows`` (a tuple of rows) are shaped as :data:`ROW_FIELDS`
    says, with int values that fit int64 — for rows that come from elsewhere (telemetry
    batches arrive over the network), so a malformed one is refused before it can break a
    trace."""
    if not isinstance(rows, tuple):
        raise ValueError(f"rows must be a tuple of rows, not {type(rows).__name__}")
    for row in rows:
        if not (isinstance(row, tuple) and len(row) == len(ROW_FIELDS) and row[Row.KIND] in _EXTRA
                and all(_fits(v, t) for v, t in zip(row, _ROW_TYPES, strict=False))
                and any(_fits(row[Row.EXTRA], shape) for shape in _EXTRA[row[Row.KIND]])):
            raise ValueError(f"not a capture row: {str(row)[:80]}")


MESSAGE_KINDS = ("publish", "receive", "tap")
# Rows that carry a message's headers, so its ids: hops have the traced message's headers.
_CARRIES_EVENT = (*MESSAGE_KINDS, "hop")
_JS_ACK = b"$JS.ACK."
_MESSAGE_SET = frozenset(MESSAGE_KINDS)

# Columns that describe the event carried by a message row, null on other rows.
_EVENT_COLUMNS = ("event_id", "correlation_id", "trace_id", "parent_id", "sampled",
                  "id_synthetic", "mode")


def build_observations(rows: Sequence[tuple[Any, ...]], first_seq: int = 0, *,
                       native: bool = True) -> pd.DataFrame:
    """Build the ``observations`` frame from captured rows (see :data:`ROW_FIELDS`).

    Args:
        rows: the tuples, in capture order.
        first_seq: ``seq`` of the first row (rows drained earlier keep their numbers).
        native: read the rows with the compiled extension when it is installed (the
            numpy/Arrow path gives the same frame, about half as fast).
    """
    if not rows:
        return OBSERVATIONS.empty()
    n = len(rows)
    c = columns(rows, native=native)
    is_message = c.kind_in(MESSAGE_KINDS)
    known = c.parsed.known
    stored: list[str | None] = [None] * n if len(c.given) else []
    for i in c.given.tolist():
        x = rows[i][Row.EXTRA]
        if type(x) is str:
            stored[i] = x
    given_id = known["ce-id"]
    trace, parent, sampled = c.traceparent
    event_id = _fill_missing_ids(
        pc.coalesce(given_id, pa.array(stored, pa.large_string()) if stored else
                    pa.nulls(n, pa.large_string())), is_message, rows)
    binary = pc.or_kleene(pc.is_valid(given_id), pc.is_valid(known["ce-specversion"]))
    cols: dict[str, Any] = {
        "seq": pa.array(np.arange(first_seq, first_seq + n, dtype=np.int64)),
        "kind": c.kind,
        "ts": pa.array(c.ts).cast(_TS),
        "observer": c.observer,
        "consumer": c.consumer,
        "queue": c.queue,
        "subject": decoded(c.subject, pa.string()),
        "reply": decoded(c.reply, pa.string()),
        "size": pc.binary_length(c.payload).cast(pa.int64()),
        "payload": c.payload,
        "header_block": c.block,
        "event_id": event_id,
        "type": known["ce-type"],
        "source": known["ce-source"],
        "correlation_id": pc.coalesce(known["ce-correlationid"], trace, event_id),
        "causation_id": known["ce-causationid"],
        "trace_id": trace,
        "parent_id": parent,
        "sampled": sampled,
        "event_time": c.event_time,
        "content_type": pc.coalesce(known["ce-datacontenttype"], known["content-type"]),
        "mode": pc.if_else(binary, "binary", "bare"),
        "id_synthetic": pc.is_null(given_id),
        "replay_of": known["evtkit-replay-of"],
        "malformed": pa.array(c.parsed.malformed, pa.int64()),
    }
    carries_event = c.kind_in(_CARRIES_EVENT)
    if not carries_event.all():  # (a tap's rows all do)
        for name in _EVENT_COLUMNS:
            cols[name] = pc.if_else(pa.array(carries_event), cols[name],
                                    pa.scalar(None, cols[name].type))
    _apply_structured(cols, known["content-type"], is_message, rows)
    # The ids are final: their hashing (the frame's largest step) starts on a thread of its
    # own while the rest is built.
    made = ids_soon({name: cols.pop(name) for name in OBSERVATIONS.ids})
    cols["headers"] = _other_headers(rows, c.parsed.extra)
    cols.update(_kind_details(rows, c.given, cols["reply"]))
    return to_frame(pa.table(cols), OBSERVATIONS, made)


def _other_headers(rows: Sequence[tuple[Any, ...]], extra: np.ndarray) -> pa.Array:
    """Headers beyond the CloudEvents/traceparent ones, as a map; only rows that have some
    are split in Python."""
    values: list[list[tuple[str, str]] | None] = [None] * len(rows)
    for i in np.flatnonzero(extra).tolist():
        values[i] = [
            (k, v)
            for k, v in parse_block(rows[i][Row.HEADERS]).headers.items()
            if header_name(k) not in CLOUDEVENTS
        ]
    return pa.array(values, pa.map_(pa.string(), pa.string()))


def _fill_missing_ids(event_id: pa.Array, is_message: np.ndarray,
                      rows: Sequence[tuple[Any, ...]]) -> pa.Array:
    """Messages with neither an id nor a stored synthetic one get one from their bytes."""
    missing = np.flatnonzero(is_message & np.asarray(pc.is_null(event_id)))
    if not len(missing):
        return event_id
    values = event_id.to_pylist()
    for i in missing.tolist():
        row = rows[i]
        values[i] = synthetic_id(row[Row.SUBJECT] or b"", row[Row.HEADERS],
                                 row[Row.PAYLOAD] or b"", 0)
    return pa.array(values, pa.large_string())


def hop_event_ids(obs: pd.DataFrame) -> pd.Series:
    """The event id of each ``hop`` row of ``obs`` (in order), joined to the messages evtkit
    saw when the traced message carried no ``ce-id``.

    A server trace report quotes the message's headers but not its payload, so a message
    without ``ce-id`` cannot get the same synthetic id there as in a tap. Its
    ``traceparent`` can: the hop takes the id of the message row (publish, tap or receive)
    with the same trace id, parent span id and subject, nearest in time.
    """
    hop = (obs["kind"] == "hop").to_numpy()
    hops = obs.loc[hop, ["ts", "trace_id", "parent_id", "subject", "event_id"]]
    ids = hops["event_id"].copy()
    lost = ids.isna() & hops["trace_id"].notna() & hops["parent_id"].notna()
    if not lost.any():
        return ids.reset_index(drop=True)
    keys = ["trace_id", "parent_id", "subject"]
    seen = obs.loc[obs["kind"].isin(MESSAGE_KINDS).to_numpy(), ["ts", *keys, "event_id"]]
    seen = seen.dropna(subset=keys).sort_values("ts", kind="stable")
    wanted = hops.loc[lost, ["ts", *keys]].reset_index().sort_values("ts", kind="stable")
    found = pd.merge_asof(wanted, seen, on="ts", by=keys, direction="nearest")
    ids.loc[found["index"].to_numpy()] = found["event_id"].to_numpy()
    return ids.reset_index(drop=True)


def _kind_details(rows: Sequence[tuple[Any, ...]], given: np.ndarray, reply: pa.Array
                  ) -> dict[str, pa.Array]:
    """Columns that only some kinds fill, from each row's ``extra`` slot (``given``: the rows
    that have one) and, for JetStream deliveries, from the ``$JS.ACK...`` reply subject,
    which states where the message is.

    Most rows are plain messages: a column no row fills is made all-null in one step, and
    Python only visits the rows that have details."""
    n = len(rows)
    col: dict[str, list[Any]] = {}

    def put(name: str, i: int, value: Any) -> None:
        if value is not None:
            col.setdefault(name, [None] * n)[i] = value

    for i in given.tolist():  # (a tap's rows usually have no extra)
        k, x = rows[i][Row.KIND], rows[i][Row.EXTRA]
        if type(x) is int:
            put("ref", i, x)
        if type(x) is not tuple and k in _MESSAGE_SET:
            continue
        if k == "handled":
            put("ref", i, x[0])
            put("started_at", i, x[1])
            put("outcome", i, x[2])
            put("error", i, x[3])
            put("ack", i, x[4] if len(x) > 4 else None)
        elif k == "publish":
            put("ref", i, x[0])
            put("stream", i, x[1])
            put("stream_seq", i, x[2])
        elif k == "drop":
            put("count", i, x[0])
            put("detail", i, x[1])
        elif k in ("disconnect", "reconnect"):
            put("detail", i, x)
        elif k == "error":
            put("error", i, x)
            put("detail", i, x)
        elif k == "consumer_info":
            for name, value in zip(CONSUMER_INFO_FIELDS, x, strict=True):
                put(name, i, value)
        elif k == "advisory":
            for name, value in zip(("detail", "stream", "stream_seq", "delivery_count"), x,
                                   strict=True):
                put(name, i, value)
        elif k == "hop":
            for name, value in zip(("server", "detail", "error"), x, strict=True):
                put(name, i, value)
    acks = pc.fill_null(pc.starts_with(reply, pattern="$JS.ACK."), False)
    for i in np.flatnonzero(np.asarray(acks)).tolist():
        position = js_position(reply[i].as_py().encode())
        if position is not None and rows[i][Row.KIND] in _MESSAGE_SET:
            for name, value in (("stream", position.stream),
                                ("stream_seq", position.stream_seq),
                                ("consumer_seq", position.consumer_seq),
                                ("delivery_count", position.delivery_count),
                                ("pending", position.pending)):
                put(name, int(i), value)
    # (a column no row fills: Arrow's null type, which has no buffers to fill — the frame
    # gets its dtype's all-missing column without touching memory)
    return {name: pa.array(col[name], kind_type) if name in col else pa.nulls(n)
            for name, kind_type in _DETAIL_COLUMNS.items()}


_DETAIL_COLUMNS = {
    "ref": pa.int64(), "started_at": _TS, "outcome": pa.string(), "error": pa.string(),
    "count": pa.int64(), "detail": pa.string(), "stream": pa.string(),
    "stream_seq": pa.int64(), "consumer_seq": pa.int64(), "delivery_count": pa.int64(),
    "ack": pa.string(), "pending": pa.int64(), "ack_pending": pa.int64(),
    "redelivered": pa.int64(), "waiting": pa.int64(), "ack_floor": pa.int64(),
    "last_active": _TS, "server": pa.string(),
}


def _apply_structured(
    cols: dict[str, Any], content_type: pa.Array, is_message: np.ndarray,
    rows: Sequence[tuple[Any, ...]]
) -> None:
    """Read the attributes of structured-mode CloudEvents from their JSON, row by row."""
    kinds = pc.drop_null(pc.unique(content_type))  # few media types: each looked at once
    media = pc.utf8_lower(pc.utf8_trim(kinds, " \t"))
    structured = kinds.filter(pc.starts_with(media, pattern=STRUCTURED))
    if not len(structured):
        return
    which = np.flatnonzero(np.asarray(pc.is_in(content_type, value_set=structured)) & is_message)
    if not len(which):
        return
    fields = ("event_id", "type", "source", "correlation_id", "causation_id", "trace_id",
              "parent_id", "sampled", "event_time", "mode", "id_synthetic")
    patched = {name: cols[name].to_pylist() for name in fields}
    for i in which.tolist():
        subject = cols["subject"][i].as_py() or ""
        event = decode_message(
            subject,
            cols["payload"][i].as_py() or b"",
            cols["header_block"][i].as_py(),
            synthetic=synthetic if isinstance(synthetic := rows[i][Row.EXTRA], str) else None,
        )
        if event.mode != "structured":
            continue
        for name, value in (
            ("event_id", event.id), ("type", event.type), ("source", event.source),
            ("correlation_id", event.correlation_id), ("causation_id", event.causation_id),
            ("trace_id", event.trace_id), ("parent_id", event.parent_id),
            ("sampled", event.sampled), ("event_time", event.time), ("mode", "structured"),
            ("id_synthetic", event.synthetic_id),
        ):
            patched[name][i] = value
    for name in fields:
        cols[name] = pa.array(patched[name], cols[name].type)
