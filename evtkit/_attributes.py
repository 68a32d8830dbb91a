"""Header values read a column at a time, by the rules handlers use for one message:
W3C ``traceparent`` (trace id, parent span id, sampled flag; the rules of
:func:`evtkit.event.parse_traceparent`) and RFC 3339 ``ce-time`` (those of
:func:`evtkit.event.parse_time`); null where absent or malformed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .event import EARLIEST, LATEST, RFC3339, parse_time

__all__ = ["TS", "times", "traceparent"]

TS = pa.timestamp("ns", tz="UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# version-trace-parent-flags, and for versions after 00 optionally "-" and more.
_TRACEPARENT = r"(?s)^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$"


def traceparent(values: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
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
    """the :func:`traceparent` rules when every value present is 55 bytes long (version, ids and
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


def times(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """RFC 3339 strings to UTC timestamps (ns); null where missing, malformed or out of
    range (the rule of :func:`evtkit.event.parse_time`, which handlers see)."""
    ok = pc.fill_null(pc.match_substring_regex(values, pattern=RFC3339), False)
    # RFC 3339 lets "T" and "Z" be written in lower case; Arrow's parser only takes upper.
    text = pc.utf8_upper(pc.if_else(ok, values, pa.scalar(None, values.type)))
    try:
        return _held(text.cast(TS))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Shaped like RFC 3339 but not a time a trace can hold (month 13, year 9999...):
        # decide row by row, as a handler's event does.
        usable = pa.array([parse_time(v) is not None for v in text.to_pylist()], pa.bool_())
        kept = pc.if_else(usable, text, pa.scalar(None, text.type))
        try:
            return kept.cast(TS)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # Arrow refuses what
            return pa.array([_one_time(v) for v in kept.to_pylist()], pa.int64()).cast(TS)


def _held(when: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Times outside the days parse_time takes (the first and last of what nanoseconds in
    an int64 reach) made null, as a handler's event has them."""
    # (Made here, not at import: a timestamp scalar made from a datetime when evtkit is
    # imported added 20 MB to the peak of analysing a million loaded events.)
    earliest, latest = (pa.scalar(_ns(day), TS) for day in (EARLIEST, LATEST))
    outside = pc.or_(pc.less(when, earliest), pc.greater_equal(when, latest))
    if not pc.any(outside).as_py():
        return when
    return pc.if_else(outside, pa.scalar(None, TS), when)


def _one_time(value: str | None) -> int | None:
    """One value as :func:`times` reads it: Arrow's nanoseconds where Arrow reads it, else
    what parse_time makes of it (microseconds)."""
    if value is None or (when := parse_time(value)) is None:
        return None
    try:
        return int(pa.array([value]).cast(TS)[0].value)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _ns(when)


def _ns(when: datetime) -> int:
    """An aware datetime as nanoseconds since the epoch (to the microsecond)."""
    return (when - _EPOCH) // _MICROSECOND * 1000
