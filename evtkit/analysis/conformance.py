"""Traffic held against its event definitions (an AsyncAPI document read by
:func:`evtkit.asyncapi.load`).

::

    result = trace.conformance(spec)
    result.events        # one row per event: channel, message, valid, violations
    result.violations    # one row per violation: part, JSON pointer path, message
    result.summary()     # findings: undeclared subjects, producers, consumers; declared
                         #   channels and operations never seen; violations per message
    result.ok            # True when nothing was undeclared or invalid

How an event is checked: its subject picks the channel (the most specific address that
matches, see :meth:`Spec.match <evtkit.asyncapi.Spec.match>`); its payload is read as the
message's content type says (JSON when none is declared; a structured-mode CloudEvent's
``data``), and checked with the message's payload schema; its NATS headers with the headers
schema. On a channel with several messages the event carries the first message whose
schemas accept it; when none does, it is reported against the *closest* one — the fewest
violations, the first declared on a tie.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .._headers import CLOUDEVENTS, header_name, parse_block
from ..asyncapi.spec import closest
from ..asyncapi.validator import (
    UNCHECKED,
    Unreadable,
    accepts_payloads,
    coerce_headers,
    content_type_mismatch,
    payload_violations,
    read_payload,
    relevant_names,
)
from ..event import decode_message
from .conformance_findings import FAILING, KINDS, SUMMARY, describe, findings

if TYPE_CHECKING:
    from ..asyncapi.spec import Channel, Message, Spec
    from ..trace import Trace

__all__ = ["COLUMNS", "FAILING", "KINDS", "SUMMARY", "Conformance", "conformance"]

COLUMNS = ["event_id", "subject", "published_at", "channel", "message", "valid", "violations"]
"""Columns of :attr:`Conformance.events`."""
VIOLATION_COLUMNS = ["event_id", "subject", "published_at", "channel", "message", "part",
                     "path", "detail"]
"""Columns of :attr:`Conformance.violations`."""

def conformance(trace: Trace, spec: Spec) -> Conformance:
    """Check every event of ``trace`` against ``spec``.

    Args:
        trace: the trace.
        spec: the event definitions (:func:`evtkit.asyncapi.load`).

    Returns:
        A :class:`Conformance`: ``.events`` has one row per event (columns
        :data:`COLUMNS`): the ``channel`` and ``message`` it matched (missing when its
        subject matches no channel), ``valid`` (missing then too), and ``violations``, a
        list of ``{"path": JSON pointer, "message": ..., "part": "payload" | "headers"}``.
    """
    return Conformance(trace, spec, _check_events(trace, spec))


class Conformance:
    """A trace checked against its event definitions (see :func:`conformance`).

    Attributes:
        events: one row per event of the trace, in its order; columns :data:`COLUMNS`.
        spec: the definitions.
        trace: the trace.
    """

    def __init__(self, trace: Trace, spec: Spec, events: pd.DataFrame) -> None:
        self.trace = trace
        self.spec = spec
        self.events = events
        self._summary: pd.DataFrame | None = None

    @cached_property
    def violations(self) -> pd.DataFrame:
        """One row per violation: ``event_id, subject, published_at, channel, message,
        part`` (payload or headers), ``path`` (JSON pointer), ``detail`` (what is wrong)."""
        ev = self.events
        rows = [(i, v["part"], v["path"], v["message"])
                for i, found in enumerate(ev["violations"]) for v in found]
        at = np.array([r[0] for r in rows], dtype=np.int64)
        out = ev.iloc[at][VIOLATION_COLUMNS[:5]].reset_index(drop=True)
        for k, name in enumerate(("part", "path", "detail"), start=1):
            out[name] = pd.Series([r[k] for r in rows], dtype="str")
        return out

    def summary(self) -> pd.DataFrame:
        """The findings, one row each: ``kind`` (:data:`KINDS`: violations,
        undeclared_subject, undeclared_producer, undeclared_consumer, unused_channel,
        unused_operation), ``channel, subject, message, application, count, first_seen,
        last_seen, event_id`` (an example) and ``evidence`` (one sentence, human units).
        Failing kinds first, then by count."""
        if self._summary is None:
            self._summary = findings(self)
        return self._summary.copy()

    @property
    def ok(self) -> bool:
        """True when no event broke its schema or was undeclared (subject, producer,
        consumer); channels and operations not seen do not count."""
        return not self.summary()["kind"].isin(FAILING).any()

    def describe(self, *, examples: int = 10) -> str:
        """A short text report (what ``evtkit check`` prints): the verdict, one line per
        finding, and up to ``examples`` violations."""
        return describe(self, examples=examples)

    def __repr__(self) -> str:
        valid = self.events["valid"]
        return (f"<Conformance of {len(self.events):,} events to {self.spec.title!r}: "
                f"{int(valid.eq(True).sum()):,} valid, {int(valid.eq(False).sum()):,} "
                f"invalid, {int(valid.isna().sum()):,} undeclared>")

    def _repr_html_(self) -> str:
        return str(self.summary()._repr_html_())


# -- per event -------------------------------------------------------------------------------
#
# Work is done per distinct value, not per event: each distinct subject is matched to a
# channel once (all at once, see Spec.match_all); on a channel, each distinct payload is
# decoded and given the fast check once per message, and each distinct set of the headers
# a headers schema can see is checked once. An event costs only numpy indexing unless no
# message accepts it; then its violations are listed exactly (jsonschema), once per
# distinct payload and headers.


def _check_events(trace: Trace, spec: Spec) -> pd.DataFrame:
    with _paused_gc():  # a million new lists would trigger a full collection again and again
        return _check(trace, spec)


@contextmanager
def _paused_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _check(trace: Trace, spec: Spec) -> pd.DataFrame:
    ev = trace.events
    n = len(ev)
    channels = list(spec.channels.values())
    names = list(dict.fromkeys(m.name for c in channels for m in c.messages.values()))
    out = _Verdicts(n, {name: k for k, name in enumerate(names)})
    subjects = ev["subject"]
    codes = subjects.cat.codes.to_numpy()
    of_subject = spec.match_all(subjects.cat.categories.tolist())
    channel_at = of_subject[np.maximum(codes, 0)] if len(of_subject) else np.full(n, -1)
    channel_at = np.where(codes >= 0, channel_at, -1)
    events = _Events(trace)
    structured = (ev["mode"] == "structured").fillna(False).to_numpy(dtype=bool)
    types = ev["content_type"]
    type_codes = types.cat.codes.to_numpy()
    order = np.argsort(channel_at, kind="stable")
    bounds = np.searchsorted(channel_at[order], np.arange(-1, len(channels) + 1))
    for k, channel in enumerate(channels):
        rows = order[bounds[k + 1]:bounds[k + 2]]
        if not len(rows):
            continue
        if not channel.messages:
            out.valid[rows] = 1  # the channel declares no messages: nothing to check
            continue
        for i in rows[structured[rows]].tolist():  # a CloudEvent in its JSON envelope
            event = decode_message(str(subjects.iat[i]), events.payload(i), events.block(i))
            out.set(i, *_closest(spec, channel, _Event(event.raw, event.content_type,
                                                       events, i)))
        rows = rows[~structured[rows]]
        for code in np.unique(type_codes[rows]).tolist():
            group = rows[type_codes[rows] == code]
            content_type = None if code < 0 else str(types.cat.categories[code])
            _check_group(spec, channel, group, content_type, events, out)
    valid = pd.arrays.BooleanArray(out.valid == 1, out.valid == 0)  # 0: no channel, no verdict
    return pd.DataFrame({
        "event_id": ev["event_id"].array,
        "subject": subjects.array,
        "published_at": ev["published_at"].array,
        "channel": _categorical(channel_at, [c.id for c in channels]),
        "message": _categorical(out.message, names),
        "valid": valid,
        "violations": out.column(),
    }, columns=COLUMNS)


class _Verdicts:
    """What the check found, per event: the message (a position in the names), the
    verdict (0 none, 1 valid, 2 invalid), and the violations of invalid events."""

    def __init__(self, n: int, names: dict[str, int]) -> None:
        self.names = names
        self.message = np.full(n, -1, np.int64)
        self.valid = np.zeros(n, np.int8)
        self.found: dict[int, list[dict[str, str]]] = {}

    def accept(self, rows: np.ndarray, message: Message) -> None:
        self.message[rows] = self.names[message.name]
        self.valid[rows] = 1

    def set(self, i: int, message: Message, violations: list[dict[str, str]]) -> None:
        self.message[i] = self.names[message.name]
        self.valid[i] = 2 if violations else 1
        if violations:
            self.found[i] = [dict(v) for v in violations]  # each event its own

    def column(self) -> Any:
        column: list[list[dict[str, str]]] = [[] for _ in range(len(self.valid))]
        for i, found in self.found.items():
            column[i] = found
        return pd.Series(column, dtype=object).array


def _categorical(codes: np.ndarray, labels: list[str]) -> pd.Categorical:
    """Labels by position (-1: missing) as a categorical of the labels used, sorted."""
    used = np.unique(codes[codes >= 0])
    names = sorted({labels[k] for k in used.tolist()})
    rank = {name: r for r, name in enumerate(names)}
    recode = np.array([rank.get(label, -1) for label in labels] + [-1], np.int64)
    return pd.Categorical.from_codes(recode[codes], categories=pd.Index(names, dtype="str"))


def _check_group(spec: Spec, channel: Channel, rows: np.ndarray, content_type: str | None,
                 events: _Events, out: _Verdicts) -> None:
    """The events at ``rows`` (positions in ``trace.events``): on ``channel``, stating
    ``content_type``, not structured."""
    payloads = events.payloads.take(pa.array(rows)).dictionary_encode()
    p_codes = payloads.indices.to_numpy(zero_copy_only=False)
    h_codes, h_first = events.header_codes(channel, rows)
    parts = _Parts(spec, content_type, payloads.dictionary, rows[h_first], events)
    left = np.arange(len(rows))
    for message in channel.messages.values():
        ok = parts.payload_ok(message, np.unique(p_codes[left]))[p_codes[left]]
        ok &= parts.headers_ok(message, np.unique(h_codes[left]))[h_codes[left]]
        out.accept(rows[left[ok]], message)
        left = left[~ok]
        if not len(left):
            return
    # No message accepts them: the closest, once per distinct payload and headers.
    key = p_codes[left].astype(np.int64) * (int(h_codes.max()) + 1) + h_codes[left]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    closest = [parts.closest(channel, int(p_codes[left[f]]), int(h_codes[left[f]]))
               for f in first.tolist()]
    for i, which in zip(rows[left].tolist(), inverse.tolist(), strict=True):
        out.set(i, *closest[which])


class _Parts:
    """Per message of one group of events: verdicts on its distinct payloads and header
    sets, computed when first needed, and their violations when they have some."""

    def __init__(self, spec: Spec, content_type: str | None, payloads: pa.Array,
                 header_rows: np.ndarray, events: _Events) -> None:
        self.spec, self.content_type, self.payloads = spec, content_type, payloads
        self.header_rows, self.events = header_rows, events
        self._ok: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
        self._found: dict[tuple[int, str, int], list[dict[str, str]]] = {}

    def payload_ok(self, message: Message, needed: np.ndarray) -> np.ndarray:
        """Per distinct payload: whether ``message``'s payload schema accepts it (exact
        for those in ``needed``)."""
        ok, done = self._state(message, "payload", len(self.payloads))
        needed = needed[~done[needed]]
        if not len(needed):
            return ok
        done[needed] = True
        check = self.spec.check(message, "payload")
        expected = message.content_type or self.content_type
        if check is None:
            ok[needed] = True
            return ok
        if content_type_mismatch(message.content_type, self.content_type) is None:
            raws = self.payloads.take(pa.array(needed)).to_pylist()
            ok[needed] = accepts_payloads(check, expected, raws)
            for p in needed[~ok[needed]].tolist():  # refused by the fast check: jsonschema
                instance = read_payload(self.payloads[p].as_py(), expected)
                ok[p] = instance is UNCHECKED or (not isinstance(instance, Unreadable)
                                                  and check.is_valid(instance))
        return ok

    def headers_ok(self, message: Message, needed: np.ndarray) -> np.ndarray:
        """Per distinct set of headers: whether ``message``'s headers schema accepts it."""
        ok, done = self._state(message, "headers", len(self.header_rows))
        needed = needed[~done[needed]]
        if not len(needed):
            return ok
        done[needed] = True
        if self.spec.check(message, "headers") is None:
            ok[needed] = True
        else:
            for h in needed.tolist():
                ok[h] = not self.headers_violations(message, h)
        return ok

    def payload_violations(self, message: Message, p: int) -> list[dict[str, str]]:
        key = (id(message), "payload", p)
        if key not in self._found:
            raw = self.payloads[p].as_py()
            self._found[key] = payload_violations(self.spec.check(message, "payload"),
                                                  message.content_type, self.content_type,
                                                  raw, {})
        return self._found[key]

    def headers_violations(self, message: Message, h: int) -> list[dict[str, str]]:
        key = (id(message), "headers", h)
        if key not in self._found:
            i = int(self.header_rows[h])
            self._found[key] = _headers_violations(self.spec, message, self.events, i)
        return self._found[key]

    def closest(self, channel: Channel, p: int, h: int
                ) -> tuple[Message, list[dict[str, str]]]:
        """As :func:`_closest`, from the cached parts."""
        return closest(channel.messages.values(), lambda m: self.payload_violations(m, p)
                       + self.headers_violations(m, h))

    def _state(self, message: Message, part: str, size: int) -> tuple[np.ndarray, np.ndarray]:
        key = (id(message), part)
        if key not in self._ok:
            self._ok[key] = (np.zeros(size, bool), np.zeros(size, bool))
        return self._ok[key]


class _Event:
    """One event as :func:`_closest` reads it: its payload, content type and headers."""

    __slots__ = ("content_type", "events", "i", "raw")

    def __init__(self, raw: bytes, content_type: str | None, events: _Events, i: int):
        self.raw, self.content_type, self.events, self.i = raw, content_type, events, i


def _closest(spec: Spec, channel: Channel, event: _Event
             ) -> tuple[Message, list[dict[str, str]]]:
    """The first message of ``channel`` that accepts the event, else the one with the
    fewest violations (the first on a tie), with its violations
    (:func:`evtkit.asyncapi.spec.closest`)."""
    decoded: dict[str | None, Any] = {}
    return closest(channel.messages.values(), lambda message: payload_violations(
        spec.check(message, "payload"), message.content_type, event.content_type, event.raw,
        decoded) + _headers_violations(spec, message, event.events, event.i))


def _headers_violations(spec: Spec, message: Message, events: _Events, i: int
                        ) -> list[dict[str, str]]:
    check = spec.check(message, "headers")
    if check is None:
        return []
    headers = coerce_headers(events.headers(i), message.headers)
    return [{**v, "part": "headers"} for v in check.violations(headers)]


class _Events:
    """The events' payloads and NATS headers as Arrow arrays, and the header sets a
    channel's headers schemas can tell apart."""

    def __init__(self, trace: Trace) -> None:
        ev = trace.events
        payloads = _combined(ev["payload"])
        self.payloads = payloads.fill_null(b"") if payloads.null_count else payloads
        self.maps = _combined(ev["headers"])
        self._rows = trace.event_rows
        self._column = trace.observations["header_block"]

    @cached_property
    def blocks(self) -> pa.Array:
        """Every event's raw header block (null where it had none)."""
        if not len(self._rows):
            return pa.nulls(len(self.payloads), pa.binary())
        return _combined(self._column).take(pa.array(self._rows))

    def payload(self, i: int) -> bytes:
        return cast(bytes, self.payloads[i].as_py())

    def block(self, i: int) -> bytes | None:
        """The raw header block of event ``i``."""
        if i >= len(self._rows):
            return None
        block = self._column.iat[int(self._rows[i])]
        return block if isinstance(block, bytes) else None

    def headers(self, i: int) -> dict[str, str]:
        """Every NATS header of event ``i`` (CloudEvents ones included), as on the wire."""
        block = self.block(i)
        if block:
            return parse_block(block).headers
        return dict(self.maps[i].as_py() or [])

    def header_codes(self, channel: Channel, rows: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """For each event at ``rows``, a code for the headers ``channel``'s headers schemas
        can see (equal codes: equal verdicts), and for each code the position in ``rows``
        of its first event."""
        schemas = [m.headers for m in channel.messages.values() if m.headers is not None]
        if not schemas:
            return np.zeros(len(rows), np.int64), np.zeros(1, np.int64)
        names: set[str] | None = set()
        for schema in schemas:
            seen = relevant_names(schema)
            names = None if seen is None or names is None else names | seen
        take = pa.array(rows)
        maps = self.maps.take(take)
        if names is not None and not any(header_name(n) in CLOUDEVENTS for n in names):
            # What such a schema sees is in the headers beyond the CloudEvents ones.
            codes = _entry_codes(maps, {header_name(n) for n in names})
        else:  # it may see any header: each distinct header block
            blocks = self.blocks.take(take).dictionary_encode()
            codes = blocks.indices.to_numpy(zero_copy_only=False)
            missing = np.isnan(codes)
            if missing.any():
                codes[missing] = len(blocks.dictionary) + _entry_codes(
                    maps.filter(pa.array(missing)), None)
        _, first, dense = np.unique(codes, return_index=True, return_inverse=True)
        return dense.astype(np.int64), first.astype(np.int64)


def _combined(column: pd.Series) -> pa.Array:
    """A column as one Arrow array (bytes and text past 32-bit offsets: their large kind)."""
    array = column.array
    chunked = array._pa_array if hasattr(array, "_pa_array") else pa.chunked_array(
        [pa.array(np.asarray(column, dtype=object), from_pandas=True)])
    if not isinstance(chunked, pa.ChunkedArray):
        return chunked
    if chunked.nbytes >= 2**31 - 2**24:
        if pa.types.is_binary(chunked.type):
            chunked = chunked.cast(pa.large_binary())
        elif pa.types.is_string(chunked.type):
            chunked = chunked.cast(pa.large_string())
    return chunked.combine_chunks()


def _entry_codes(maps: pa.Array, names: set[str] | None) -> np.ndarray:
    """A code per map (equal codes: equal entries, in order) over the entries whose name,
    lower-cased, is in ``names`` (all when None; names that are not ASCII always count)."""
    kind = maps.type  # (list kernels refuse maps: read it as a list of entries)
    maps = maps.cast(pa.list_(pa.struct([kind.key_field, kind.item_field])))
    parents = pc.list_parent_indices(maps).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(maps)
    keys, values = flat.field(0), flat.field(1)
    if names is not None:
        keep = pc.or_(pc.is_in(pc.ascii_lower(keys), value_set=pa.array(sorted(names),
                                                                         pa.string())),
                      pc.invert(pc.string_is_ascii(keys)))
        keys, values = keys.filter(keep), values.filter(keep)
        parents = parents[keep.to_numpy(zero_copy_only=False)]
    # Each entry as "len:key" "len:value" (null: "N"): joined, unambiguous.
    entry = pc.binary_join_element_wise(
        pc.cast(pc.utf8_length(keys), pa.string()), ":", keys,
        pc.coalesce(pc.binary_join_element_wise(pc.cast(pc.utf8_length(values), pa.string()),
                                                ":", values, ""), "N"), "")
    counts = np.bincount(parents, minlength=len(maps)) if len(parents) else np.zeros(
        len(maps), np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, entry), "")
    return joined.dictionary_encode().indices.to_numpy(zero_copy_only=False).astype(np.int64)
