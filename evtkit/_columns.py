"""Capture rows as Arrow columns: the first step of building observations.

Two paths give the same :class:`Columns`:

* the compiled one (``evtkit/_columnar.c``), which reads each row tuple once and splits its
  header block while the bytes are in the CPU's caches — about twice as fast in all;
* the reference one, numpy and Arrow over the whole batch (one list per field, one joined
  buffer per byte field, the bulk header parser of :mod:`evtkit._headers`), taken when the
  extension was not built (no C compiler at install), the rows are not shaped as capture
  makes them (the reference path then says what is wrong) or a byte column would pass 2 GiB
  (the reference path cuts it in chunks).

The tests build every frame both ways and compare them, hostile header blocks included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._arrow import cores
from ._attributes import TS, times, traceparent
from ._headers import CLOUDEVENTS, KNOWN, ParsedBlocks, decoded, joined, parse_joined

_columnar: ModuleType | None
try:
    from . import _columnar
except ImportError:  # pragma: no cover - installed without a C compiler
    _columnar = None

__all__ = ["ROWS_PER_THREAD", "Columns", "columns", "compiled"]

_NAMES = tuple(name.encode() for name in KNOWN)
_CLOUD = tuple(name in CLOUDEVENTS for name in KNOWN)
_TRACEPARENT, _TIME = KNOWN.index("traceparent"), KNOWN.index("ce-time")
_FIELDS = 10  # observation.ROW_FIELDS
ROWS_PER_THREAD = 10_000
"""Fewer rows than this per thread are split on fewer threads (starting one costs more)."""
_BINARY, _LARGE, _TEXT = pa.binary(), pa.large_binary(), pa.large_string()


@dataclass(slots=True)
class Columns:
    """The fields of ``n`` rows as Arrow arrays (text dictionary-encoded, bytes binary)."""

    kind: pa.DictionaryArray
    ts: np.ndarray
    observer: pa.DictionaryArray
    consumer: pa.DictionaryArray
    queue: pa.DictionaryArray
    subject: pa.Array
    reply: pa.Array
    payload: pa.Array
    block: pa.Array
    given: np.ndarray
    """Positions of the rows whose ``extra`` is not None."""
    parsed: ParsedBlocks
    """The header blocks split (a blank value is missing; no traceparent, see below)."""
    traceparent: tuple[pa.Array, pa.Array, pa.Array]
    """Trace id, parent span id and sampled flag (``parsed.known`` has no traceparent)."""
    event_time: pa.Array
    """``ce-time`` as UTC timestamps (null where absent or not a time a trace holds)."""

    def kind_in(self, names: Sequence[str]) -> np.ndarray:
        """Whether each row's kind is one of ``names``."""
        hit = np.isin(np.asarray(self.kind.dictionary.to_pylist(), object), list(names))
        codes = np.asarray(pc.fill_null(self.kind.indices, -1))
        return np.append(hit, False)[codes]


def compiled() -> bool:
    """True when the compiled path is installed."""
    return _columnar is not None


def columns(rows: Sequence[tuple[Any, ...]], *, native: bool = True,
            threads: int | None = None) -> Columns:
    """The rows' fields as columns; ``native=False`` takes the reference path.

    The compiled path splits header blocks on ``threads`` threads: by default one per core
    (up to 4), each with at least :data:`ROWS_PER_THREAD` rows."""
    if native and _columnar is not None:
        if threads is None:
            threads = min(cores(), 4, len(rows) // ROWS_PER_THREAD)
        try:
            out = _columnar.split(rows, _NAMES, _CLOUD, _TRACEPARENT, _TIME,
                                  max(1, min(threads, 8)))
        except (TypeError, OverflowError):  # rows not as capture makes them, or a byte
            return _reference(rows)  # column over 2 GiB: this says why, or cuts it in chunks
        return _split(out, len(rows))
    return _reference(rows)


def _split(out: tuple[Any, ...], n: int) -> Columns:
    ts, texts, given, binaries, known, counts, (trace, parent, sampled, state), when = out
    kind, observer, consumer, queue = (_dictionary(codes, values, n) for codes, values in texts)
    subject, reply, payload, block = (_binary(c) for c in binaries)
    count = np.frombuffer(counts, np.int64, 3 * n).reshape(n, 3)
    values = {name: decoded(_binary(c, _LARGE)) for name, c in zip(KNOWN, known, strict=True)}
    # The traceparent of the usual length came split (trace id, parent id, sampled; null
    # where invalid); any other one came whole, for the general rule.
    other = values.pop("traceparent")
    states = np.frombuffer(state, np.uint8, n)
    tp = (_binary(trace, _TEXT), _binary(parent, _TEXT),
          pa.array(np.frombuffer(sampled, bool, n), mask=states != 1))
    if other.null_count < n:
        tp = tuple(pc.coalesce(usual, general)
                   for usual, general in zip(tp, traceparent(other), strict=True))
    parsed = ParsedBlocks(values, np.ascontiguousarray(count[:, 0]), count[:, 0] - count[:, 1],
                          np.ascontiguousarray(count[:, 2]))
    # ce-time: read where every field was in range; any other RFC 3339 shape is left to
    # the general rule (times()), for the whole column.
    time_states = np.frombuffer(when[1], np.uint8, n)
    event_time = times(values["ce-time"]) if (time_states == 2).any() else \
        pa.Array.from_buffers(TS, n, [_mask(time_states == 1), pa.py_buffer(when[0])])
    return Columns(kind, np.frombuffer(ts, np.int64, n), observer, consumer, queue, subject,
                   reply, payload, block, np.frombuffer(given, np.int64), parsed, tp, event_time)


def _dictionary(codes: Any, values: list[str], n: int) -> pa.DictionaryArray:
    indices = np.frombuffer(codes, np.int32, n)
    missing = indices < 0
    return pa.DictionaryArray.from_arrays(
        pa.array(indices, mask=missing if missing.any() else None), pa.array(values, pa.string()))


_Col = tuple[Any, Any, Any, int, int]


def _binary(col: _Col, kind: pa.DataType = _BINARY) -> pa.Array:
    """A column the compiled path wrote: values, int64 offsets, a validity byte per row."""
    data, offsets, valid, nulls, n = col
    at = np.frombuffer(offsets, np.int64, n + 1)
    if kind == _BINARY:
        at = at.astype(np.int32)
    mask = _mask(np.frombuffer(valid, bool, n)) if nulls else None
    return pa.Array.from_buffers(kind, n, [mask, pa.py_buffer(at), pa.py_buffer(data)],
                                 null_count=nulls)


def _mask(valid: np.ndarray) -> pa.Buffer:
    """An Arrow validity bitmap."""
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


def _blank_to_null(arr: pa.Array) -> pa.Array:
    """Empty strings mean 'absent' (a malformed attribute never raises, it is dropped)."""
    blank = pc.equal(pc.binary_length(arr), 0)
    if not pc.any(blank).as_py():  # the usual case: nothing to copy
        return arr
    return pc.if_else(blank, pa.scalar(None, arr.type), arr)


def _reference(rows: Sequence[tuple[Any, ...]]) -> Columns:
    # One pass per field (zip(*rows) is several times slower on a million rows).
    kind, ts, observer, consumer, queue, subject, reply, payload, block, extra = (
        [row[i] for row in rows] for i in range(_FIELDS)
    )
    n = len(rows)
    blocks, raw, offsets = joined(block)
    parsed = parse_joined(raw, offsets)
    del raw, offsets
    parsed.known = {name: _blank_to_null(arr) for name, arr in parsed.known.items()}
    tp = traceparent(parsed.known.pop("traceparent"))
    event_time = times(parsed.known["ce-time"])
    payloads, _, _ = joined(payload)
    kinds, observers, consumers, queues = (
        pc.dictionary_encode(pa.array(v, pa.string())) for v in (kind, observer, consumer, queue))
    return Columns(kinds, np.fromiter(ts, np.int64, n), observers, consumers, queues,
                   pa.array(subject, pa.binary()), pa.array(reply, pa.binary()), payloads,
                   blocks, np.flatnonzero(np.fromiter((x is not None for x in extra), bool, n)),
                   parsed, tp, event_time)
