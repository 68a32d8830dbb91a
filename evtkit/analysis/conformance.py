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

import json
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd

from .._headers import parse_block
from ..asyncapi.validator import coerce_headers
from ..event import STRUCTURED, decode_message
from ..schema import as_bytes, as_dicts
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

_SKIP = object()  # a payload of a format JSON Schema cannot describe (Avro, Protobuf...)


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


def _check_events(trace: Trace, spec: Spec) -> pd.DataFrame:
    ev = trace.events
    n = len(ev)
    subjects = ev["subject"]
    codes = subjects.cat.codes.to_numpy()
    channel_of = [spec.match(str(s)) for s in subjects.cat.categories]
    payloads = as_bytes(ev["payload"])
    types = ev["content_type"].astype(object).where(ev["content_type"].notna(), None).tolist()
    structured = (ev["mode"] == "structured").fillna(False).to_numpy()
    blocks = _Blocks(trace)
    channels: list[str | None] = [None] * n
    messages: list[str | None] = [None] * n
    valid: list[bool | None] = [None] * n
    found: list[list[dict[str, str]]] = [[] for _ in range(n)]
    for i in range(n):
        channel = channel_of[codes[i]] if codes[i] >= 0 else None
        if channel is None:
            continue
        channels[i] = channel.id
        if not channel.messages:
            valid[i] = True  # the channel declares no messages: nothing to check
            continue
        raw, content_type = payloads[i] or b"", types[i]
        if structured[i]:
            event = decode_message(str(subjects.iat[i]), raw, blocks.block(i))
            raw, content_type = event.raw, event.content_type
        message, violations = _closest(spec, channel, raw, content_type, blocks, i)
        messages[i] = message.name
        valid[i] = not violations
        found[i] = violations
    return pd.DataFrame({
        "event_id": ev["event_id"].array,
        "subject": subjects.array,
        "published_at": ev["published_at"].array,
        "channel": pd.Categorical(channels),
        "message": pd.Categorical(messages),
        "valid": pd.array(valid, dtype="boolean"),
        "violations": pd.Series(found, dtype=object).array,
    }, columns=COLUMNS)


def _closest(spec: Spec, channel: Channel, raw: bytes, content_type: str | None,
             blocks: _Blocks, i: int) -> tuple[Message, list[dict[str, str]]]:
    """The first message of ``channel`` that accepts the event, else the one with the
    fewest violations (the first on a tie), with its violations."""
    best: tuple[Message, list[dict[str, str]]] | None = None
    decoded: dict[str | None, Any] = {}
    for message in channel.messages.values():
        violations = _violations(spec, message, raw, content_type, blocks, i, decoded)
        if not violations:
            return message, []
        if best is None or len(violations) < len(best[1]):
            best = (message, violations)
    assert best is not None  # the channel has messages
    return best


def _violations(spec: Spec, message: Message, raw: bytes, content_type: str | None,
                blocks: _Blocks, i: int, decoded: dict[str | None, Any]
                ) -> list[dict[str, str]]:
    out = []
    check = spec.check(message, "payload")
    if check is not None:
        expected = message.content_type or content_type
        problem = _mismatch(message.content_type, content_type)
        if problem is None:
            if expected not in decoded:
                decoded[expected] = _decode(raw, expected)
            instance = decoded[expected]
            if isinstance(instance, _Problem):
                problem = instance.text
            elif instance is not _SKIP:
                out += [{**v, "part": "payload"} for v in check.violations(instance)]
        if problem is not None:
            out.append({"path": "", "message": problem, "part": "payload"})
    check = spec.check(message, "headers")
    if check is not None:
        headers = coerce_headers(blocks.headers(i), message.headers)
        out += [{**v, "part": "headers"} for v in check.violations(headers)]
    return out


class _Problem:
    """Why a payload could not be read as its content type says."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip(" \t").lower()


def _is_json(content_type: str | None) -> bool:
    media = _media(content_type)
    return media == "application/json" or media.endswith("+json")


def _mismatch(declared: str | None, actual: str | None) -> str | None:
    """A violation when the event states a content type of another kind (JSON or not)
    than the message declares."""
    if declared is None or actual is None or _media(actual) == STRUCTURED:
        return None
    if _is_json(declared) != _is_json(actual):
        return f"content type {actual!r} where {declared!r} is declared"
    return None


def _decode(raw: bytes, content_type: str | None) -> Any:
    """The payload as the instance to check: JSON (the default), text for ``text/*``,
    :data:`_SKIP` for binary formats; a :class:`_Problem` when it is not what it should
    be."""
    if content_type is None or _is_json(content_type):
        if not raw:
            return _Problem("payload is empty, not JSON")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            try:  # numbers beyond 64 bits, NaN: valid for Python's reader
                return json.loads(raw)
            except (ValueError, RecursionError):
                return _Problem(f"payload is not JSON ({exc})")
    if _media(content_type).startswith("text/"):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return _Problem("payload is not UTF-8 text")
    return _SKIP


class _Blocks:
    """The events' NATS headers, read only when a check needs them."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self._blocks: list[bytes | None] | None = None
        self._dicts: list[dict[str, str] | None] | None = None

    def block(self, i: int) -> bytes | None:
        """The raw header block of event ``i``."""
        if self._blocks is None:
            rows = self.trace.event_rows
            column = self.trace.observations["header_block"]
            self._blocks = as_bytes(column.take(rows)) if len(rows) else []
        return self._blocks[i] if i < len(self._blocks) else None

    def headers(self, i: int) -> dict[str, str]:
        """Every NATS header of event ``i`` (CloudEvents ones included), as on the wire."""
        block = self.block(i)
        if block:
            return parse_block(block).headers
        if self._dicts is None:
            self._dicts = as_dicts(self.trace.events["headers"])
        return self._dicts[i] or {}
