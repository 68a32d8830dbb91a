"""Observation rows: the tuples capture appends, and the frame built from them in bulk.

The hot path appends one plain tuple per observation (:data:`ROW_FIELDS`); nothing is
parsed there. :func:`build_observations` turns a list of rows into the ``observations``
frame (see :mod:`evtkit.schema`) in one go: header blocks are split with numpy/Arrow, ids and
causality are read with Arrow compute, and only rare rows (structured-mode CloudEvents,
messages without any id) take a per-row Python path. The results agree with
:func:`evtkit.event.decode_message`, which handlers use for one message at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ._headers import CLOUDEVENTS, header_name, joined, parse_block, parse_joined
from .event import (
    EARLIEST,
    LATEST,
    RFC3339,
    STRUCTURED,
    decode_message,
    js_position,
    parse_time,
    synthetic_id,
)
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

# version-trace-parent-flags, and for versions after 00 optionally "-" and more.
_TRACEPARENT = r"(?s)^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$"
_TS = pa.timestamp("ns", tz="UTC")
# Columns that describe the event carried by a message row, null on other rows.
_EVENT_COLUMNS = ("event_id", "correlation_id", "trace_id", "parent_id", "sampled",
                  "id_synthetic", "mode")


def build_observations(rows: Sequence[tuple[Any, ...]], first_seq: int = 0) -> pd.DataFrame:
    """Build the ``observations`` frame from captured rows (see :data:`ROW_FIELDS`).

    Args:
        rows: the tuples, in capture order.
        first_seq: ``seq`` of the first row (rows drained earlier keep their numbers).
    """
    if not rows:
        return OBSERVATIONS.empty()
    # One pass per field (zip(*rows) is several times slower on a million rows).
    kind, ts, observer, consumer, queue, subject, reply, payload, block, extra = (
        [row[i] for row in rows] for i in range(len(ROW_FIELDS))
    )
    n = len(rows)
    kinds = pa.array(kind, pa.string())
    is_message = pc.is_in(kinds, value_set=pa.array(MESSAGE_KINDS))
    blocks, raw, offsets = joined(block)
    parsed = parse_joined(raw, offsets)
    del raw, offsets
    known = {name: _blank_to_null(arr) for name, arr in parsed.known.items()}

    stored = pa.array([x if type(x) is str else None for x in extra], pa.large_string()) \
        if extra.count(None) < n else pa.nulls(n, pa.large_string())
    payloads, _, sizes = joined(payload)
    given_id = known["ce-id"]
    trace, parent, sampled = _traceparent(known["traceparent"])
    event_id = _fill_missing_ids(
        pc.coalesce(given_id, stored), np.asarray(is_message), subject, block, payload
    )
    binary = pc.or_kleene(pc.is_valid(given_id), pc.is_valid(known["ce-specversion"]))
    cols: dict[str, Any] = {
        "seq": pa.array(np.arange(first_seq, first_seq + n, dtype=np.int64)),
        "kind": kinds,
        "ts": pa.array(np.fromiter(ts, np.int64, n)).cast(_TS),
        "observer": pa.array(observer, pa.string()),
        "consumer": pa.array(consumer, pa.string()),
        "queue": pa.array(queue, pa.string()),
        "subject": _text(subject),
        "reply": _text(reply),
        "size": pa.array(np.diff(sizes), mask=np.asarray(payloads.is_null())),
        "payload": payloads,
        "header_block": blocks,
        "headers": _other_headers(block, parsed.extra),
        "event_id": event_id,
        "type": known["ce-type"],
        "source": known["ce-source"],
        "correlation_id": pc.coalesce(known["ce-correlationid"], trace, event_id),
        "causation_id": known["ce-causationid"],
        "trace_id": trace,
        "parent_id": parent,
        "sampled": sampled,
        "event_time": times(known["ce-time"]),
        "content_type": pc.coalesce(known["ce-datacontenttype"], known["content-type"]),
        "mode": pc.if_else(binary, "binary", "bare"),
        "id_synthetic": pc.is_null(given_id),
        "replay_of": known["evtkit-replay-of"],
        "malformed": pa.array(parsed.malformed, pa.int64()),
    }
    carries_event = pc.is_in(kinds, value_set=pa.array(_CARRIES_EVENT))
    for name in _EVENT_COLUMNS:
        cols[name] = pc.if_else(carries_event, cols[name], pa.scalar(None, cols[name].type))
    cols.update(_kind_details(kind, extra, cols["reply"]))
    _apply_structured(cols, known["content-type"], np.asarray(is_message), extra)
    table = pa.table({name: cols[name] for name in OBSERVATIONS.names})
    return to_frame(table, OBSERVATIONS)


def _other_headers(block: Sequence[bytes | None], extra: np.ndarray) -> pa.Array:
    """Headers beyond the CloudEvents/traceparent ones, as a map; only rows that have some
    are split in Python."""
    values: list[list[tuple[str, str]] | None] = [None] * len(block)
    for i in np.flatnonzero(extra).tolist():
        values[i] = [
            (k, v)
            for k, v in parse_block(block[i]).headers.items()
            if header_name(k) not in CLOUDEVENTS
        ]
    return pa.array(values, pa.map_(pa.string(), pa.string()))


def _blank_to_null(arr: pa.Array) -> pa.Array:
    """Empty strings mean 'absent' (a malformed attribute never raises, it is dropped)."""
    blank = pc.equal(pc.binary_length(arr), 0)
    if not pc.any(blank).as_py():  # the usual case: nothing to copy
        return arr
    return pc.if_else(blank, pa.scalar(None, arr.type), arr)


def _text(values: Sequence[bytes | None]) -> pa.Array:
    """bytes → string array; invalid UTF-8 replaced, as ``bytes.decode(errors='replace')``."""
    arr = pa.array(values, pa.binary())
    try:
        return arr.cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array(
            [None if v is None else v.decode("utf-8", "replace") for v in values], pa.string()
        )


def _fill_missing_ids(
    event_id: pa.Array,
    is_message: np.ndarray,
    subject: Sequence[bytes | None],
    block: Sequence[bytes | None],
    payload: Sequence[bytes | None],
) -> pa.Array:
    """Messages with neither an id nor a stored synthetic one get one from their bytes."""
    missing = np.flatnonzero(is_message & np.asarray(pc.is_null(event_id)))
    if not len(missing):
        return event_id
    values = event_id.to_pylist()
    for i in missing.tolist():
        values[i] = synthetic_id(subject[i] or b"", block[i], payload[i] or b"", 0)
    return pa.array(values, pa.large_string())


def _traceparent(values: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Trace id, parent id and sampled flag; null where the header is absent or malformed.

    The same rules as :func:`evtkit.event.parse_traceparent`, on whole columns: when
    every value has the usual 55 characters, fixed-position checks of the bytes with numpy;
    otherwise a regex match (no captures, which are slow) and fixed-position slices.
    """
    fast = _traceparent55(values)
    if fast is not None:
        return fast
    text = pc.fill_null(values, "")
    shaped = pc.match_substring_regex(text, pattern=_TRACEPARENT)
    version = pc.utf8_slice_codeunits(text, 0, 2)
    trace = pc.utf8_slice_codeunits(text, 3, 35)
    parent = pc.utf8_slice_codeunits(text, 36, 52)
    longer = pc.greater(pc.utf8_length(text), 55)
    valid = pc.and_(
        pc.and_(shaped, pc.not_equal(version, "ff")),
        pc.and_(
            pc.and_(pc.not_equal(trace, "0" * 32), pc.not_equal(parent, "0" * 16)),
            pc.invert(pc.and_(longer, pc.equal(version, "00"))),
        ),
    )
    sampled = pc.match_substring_regex(pc.utf8_slice_codeunits(text, 53, 55),
                                       pattern="[13579bdf]$")
    null_text = pa.scalar(None, trace.type)
    return (
        pc.if_else(valid, trace, null_text),
        pc.if_else(valid, parent, null_text),
        pc.if_else(valid, sampled, pa.scalar(None, pa.bool_())),
    )


_ODD = np.zeros(256, bool)
_ODD[np.frombuffer(b"13579bdf", np.uint8)] = True


def _traceparent55(values: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array] | None:
    """:func:`_traceparent` when every value present is 55 bytes long (version, ids and
    flags, nothing more): the values as rows of a byte matrix, checked column by column.
    None when some value is shorter or longer."""
    values = values.cast(pa.large_string())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    n = len(values)
    offsets = np.frombuffer(values.buffers()[1], np.int64, n + 1, values.offset * 8)
    length = np.diff(offsets)
    present = np.asarray(values.is_valid())
    if not (length[present] == 55).all() or (length[~present] != 0).any():
        return None
    rows = int(present.sum())
    data = values.buffers()[2]
    mat = np.frombuffer(data, np.uint8, rows * 55, int(offsets[0])).reshape(rows, 55)
    ok = ((mat - 48) < 10) | ((mat - 97) < 6)  # 0-9, a-f (uint8: the rest wraps above)
    ok[:, [2, 35, 52]] = mat[:, [2, 35, 52]] == 45  # the dashes
    good = (ok.all(axis=1) & ~((mat[:, 0] == 102) & (mat[:, 1] == 102))  # version ff
            & (mat[:, 3:35] != 48).any(axis=1) & (mat[:, 36:52] != 48).any(axis=1))
    valid = np.zeros(n, bool)
    valid[present] = good
    return (_fixed(mat[good, 3:35], valid), _fixed(mat[good, 36:52], valid),
            pa.array(_sampled(mat, good, valid), mask=~valid))


def _sampled(mat: np.ndarray, good: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.zeros(len(valid), bool)
    out[valid] = _ODD[mat[good, 54]]
    return out


def _fixed(chars: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Rows of a byte matrix as a string array, one per ``valid`` place (null elsewhere)."""
    width = chars.shape[1]
    offsets = np.zeros(len(valid) + 1, np.int64)
    np.cumsum(valid * width, out=offsets[1:])
    mask = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.large_string(), len(valid), [
        mask, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars))],
        null_count=int(len(valid) - valid.sum()))


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


def times(values: pa.Array) -> pa.Array:
    """RFC 3339 strings to UTC timestamps; null where missing, malformed or out of range
    (the rule of :func:`evtkit.event.parse_time`, which handlers see)."""
    ok = pc.fill_null(pc.match_substring_regex(values, pattern=RFC3339), False)
    # RFC 3339 lets "T" and "Z" be written in lower case; Arrow's parser only takes upper.
    text = pc.utf8_upper(pc.if_else(ok, values, pa.scalar(None, values.type)))
    try:
        return _held(text.cast(_TS))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Shaped like RFC 3339 but not a time a trace can hold (month 13, year 9999...):
        # decide row by row, as a handler's event does.
        usable = pa.array([parse_time(v) is not None for v in text.to_pylist()], pa.bool_())
        return pc.if_else(usable, text, pa.scalar(None, text.type)).cast(_TS)


def _held(when: pa.Array) -> pa.Array:
    """Times outside the days parse_time takes (the first and last of what nanoseconds in
    an int64 reach) made null, as a handler's event has them."""
    outside = pc.or_(pc.less(when, _EARLIEST), pc.greater_equal(when, _LATEST))
    if not pc.any(outside).as_py():
        return when
    return pc.if_else(outside, pa.scalar(None, _TS), when)


_EARLIEST, _LATEST = pa.scalar(EARLIEST, _TS), pa.scalar(LATEST, _TS)


def _kind_details(kind: Sequence[str], extra: Sequence[Any], reply: pa.Array
                  ) -> dict[str, pa.Array]:
    """Columns that only some kinds fill, from each row's ``extra`` slot (and, for JetStream
    deliveries, from the ``$JS.ACK...`` reply subject, which states where the message is).

    Most rows are plain messages: a column no row fills is made all-null in one step, and
    Python only visits the rows that have details."""
    n = len(kind)
    col: dict[str, list[Any]] = {}

    def put(name: str, i: int, value: Any) -> None:
        if value is not None:
            col.setdefault(name, [None] * n)[i] = value

    given = [i for i, x in enumerate(extra) if x is not None]  # (a tap's usually are not)
    if given:
        col["ref"] = [x if type(x) is int else None for x in extra]
    for i in [i for i in given if type(extra[i]) is tuple or kind[i] not in _MESSAGE_SET]:
        k, x = kind[i], extra[i]
        if k == "handled":
            col["ref"][i] = x[0]
            put("started_at", i, x[1])
            put("outcome", i, x[2])
            put("error", i, x[3])
            put("ack", i, x[4] if len(x) > 4 else None)
        elif k == "publish":
            col["ref"][i] = x[0]
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
        if position is not None and kind[i] in _MESSAGE_SET:
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
    cols: dict[str, Any], content_type: pa.Array, is_message: np.ndarray, extra: Sequence[Any]
) -> None:
    """Read the attributes of structured-mode CloudEvents from their JSON, row by row."""
    media = pc.utf8_lower(pc.utf8_trim(pc.fill_null(content_type, ""), " \t"))
    rows = np.flatnonzero(np.asarray(pc.starts_with(media, pattern=STRUCTURED)) & is_message)
    if not len(rows):
        return
    fields = ("event_id", "type", "source", "correlation_id", "causation_id", "trace_id",
              "parent_id", "sampled", "event_time", "mode", "id_synthetic")
    patched = {name: cols[name].to_pylist() for name in fields}
    for i in rows.tolist():
        subject = cols["subject"][i].as_py() or ""
        event = decode_message(
            subject,
            cols["payload"][i].as_py() or b"",
            cols["header_block"][i].as_py(),
            synthetic=extra[i] if isinstance(extra[i], str) else None,
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
