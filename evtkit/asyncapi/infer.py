"""An AsyncAPI 3.0 document inferred from traffic: what a trace shows, written down as
event definitions to review, commit and check later traffic against.

::

    text = ek.asyncapi.infer(trace, title="Shop")      # YAML text
    doc = ek.asyncapi.infer_document(trace)            # the same document as a dict
    spec = ek.asyncapi.load(doc)                       # ...which load() reads back
    trace.conformance(spec).ok                         # True: the traffic it came from
                                                       #   conforms to it

From a shell: ``evtkit infer run.parquet --out api.yaml``.

What the document holds:

* **channels** — one per subject pattern; a subject token that varies like an id becomes
  a ``{parameter}`` (``orders.{orderId}.placed``); see :mod:`evtkit.asyncapi.infer_channels`
  for the rule. Each channel has ``x-evtkit`` figures: ``events``, ``subjects``,
  ``rate_per_s`` (events per second over the trace's span), ``producers``, ``consumers``,
  ``p95_latency_s`` (publish → handler start, else → receipt, over its deliveries),
  ``first_seen``, ``last_seen``.
* **messages** — per channel, one for its JSON payloads (a JSON Schema inferred from all of
  them: types, ``required`` = fields present in every payload, ``format`` when every value
  is a date-time, UUID or e-mail address; see :mod:`evtkit.asyncapi.infer_schema`) and one
  without a payload schema for payloads that are not JSON (empty, binary, text), when
  there were any. (A message without a payload schema accepts any payload, so on such a
  channel a JSON payload that drifted is found only when its headers tell it apart.)
  Headers get a schema too (every header is text; ``required`` = present on every
  message; the values of ``content-type`` and ``ce-datacontenttype`` listed); headers
  whose name or value looks like a credential (``Authorization``, ``*token*``,
  ``Bearer ...``) are left out of schemas and examples.
  Up to ``examples`` examples each: the first distinct payloads of at most
  :data:`MAX_EXAMPLE_BYTES` (larger or deeper ones, and those with ``$``-keys or
  credential-like fields, are not shown).
* **operations** — one per application, direction and channel: the sender of an event
  (its ``ce-source``, else the producer's connection name) ``send``\\ s, each consumer of
  the trace's deliveries ``receive``\\ s. AsyncAPI 3.0 describes one application per
  document; evtkit names the application of each operation with ``x-application`` (as
  :func:`~evtkit.asyncapi.load` reads it) and calls the operation
  ``<application>.<send|receive>.<channel>``. Operations have ``x-evtkit`` figures too.

Every payload and header set of the trace is valid under the document it gives (each
bound on size only loosens a schema).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from .._headers import parse_block
from ..event import decode_message
from ..schema import as_bytes, as_dicts
from .infer_channels import MIN_SHARE, MIN_VALUES, Address, addresses, unique_name
from .infer_message import MAX_EXAMPLE_BYTES, ObservedMessage
from .reference import escape
from .validator import Unreadable, is_json, read_payload

if TYPE_CHECKING:
    from ..trace import Trace

__all__ = ["MAX_EXAMPLE_BYTES", "infer", "infer_document", "to_yaml"]

ASYNCAPI_VERSION = "3.0.0"
_WORDS = re.compile(r"[A-Za-z0-9]+")

def infer(trace: Trace, *, title: str | None = None, examples: int = 3) -> str:
    """The AsyncAPI 3.0 document ``trace`` shows, as YAML text.

    Args:
        trace: the traffic.
        title: ``info.title`` (default ``Observed events``).
        examples: most examples per message (0 for none).

    Returns:
        The document (see :func:`infer_document` and the module's docstring).
    """
    return to_yaml(infer_document(trace, title=title, examples=examples))


def infer_document(trace: Trace, *, title: str | None = None, examples: int = 3
                   ) -> dict[str, Any]:
    """The AsyncAPI 3.0 document ``trace`` shows, as JSON data (what :func:`infer` writes
    as YAML; :func:`~evtkit.asyncapi.load` reads either).

    Args:
        trace: the traffic.
        title: ``info.title`` (default ``Observed events``).
        examples: most examples per message (0 for none).

    Raises:
        ValueError: ``examples`` is negative.
    """
    if examples < 0:
        raise ValueError(f"examples must be 0 or more, not {examples}")
    seen = _Events.of(trace)
    dv = _Deliveries.of(trace)
    counts = Counter(s for s in seen.subjects if s)
    for subject, n in Counter(s for s in dv.subjects if s and s not in counts).items():
        counts[subject] = n
    found = addresses(counts)
    channel_of = {s: k for k, a in enumerate(found) for s in a.subjects}
    seen.channels = _positions(seen.subjects, channel_of)
    dv.channels = _positions(dv.subjects, channel_of)
    span = _span(seen.times)
    names: set[str] = set()
    messages: list[dict[bool, ObservedMessage]] = [{} for _ in found]  # by "is JSON"
    message_of: list[ObservedMessage | None] = [None] * len(seen.subjects)
    for i, k in enumerate(seen.channels.tolist()):
        if k < 0:
            continue
        is_json, value, content_type = seen.payload(i)
        if is_json not in messages[k]:
            name = _pascal(found[k].address) + ("" if is_json else "Raw")
            messages[k][is_json] = ObservedMessage(unique_name(name, names), is_json)
        message = messages[k][is_json]
        message.add(seen.headers(i), seen.raw[i] or b"", bool(seen.structured[i]), value,
                    content_type, examples)
        message_of[i] = message
    channels: dict[str, Any] = {}
    for k, address in enumerate(found):
        # JSON first: a message without a payload schema accepts any payload
        mine = [messages[k][j] for j in (True, False) if j in messages[k]]
        channels[address.id] = _channel(k, address, mine, seen, dv, span)
    operations = _operations(found, seen, dv, message_of, span)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": _info(trace, title, seen, dv),
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
    }


class _Dumper(yaml.SafeDumper):
    """Writes each value in full (no ``&anchor``/``*alias`` for objects used twice), and
    text that YAML readers could change (line breaks such as U+0085 and U+2028, a byte
    order mark, control characters) in double quotes, escaped."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    if _SURROGATE.search(text):  # YAML cannot hold them (inference keeps them out)
        text = _SURROGATE.sub("\ufffd", text)
    style = '"' if any(not c.isprintable() or c in _FRAGILE for c in text) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_FRAGILE = frozenset("\x85\u2028\u2029\ufeff")
_SURROGATE = re.compile("[\ud800-\udfff]")
_Dumper.add_representer(str, _text)


def to_yaml(document: dict[str, Any]) -> str:
    """A document (:func:`infer_document`) as YAML text, keys in the order given."""
    head = ("# AsyncAPI document inferred from traffic by evtkit: review it before "
            "publishing it\n# as your event definitions.\n")
    return head + yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                            width=100, default_flow_style=False)


# -- what the trace shows --------------------------------------------------------------------


@dataclass
class _Events:
    """The trace's events as plain lists, plus how to read each one's payload and headers
    (the way :mod:`evtkit.analysis.conformance` reads them)."""

    subjects: list[str | None]
    senders: list[str | None]
    times: np.ndarray  # int64 ns, NaT as the minimum
    raw: list[bytes | None]
    types: list[str | None]
    structured: np.ndarray
    blocks: list[bytes | None]
    trace: Trace
    channels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _dicts: list[dict[str, str] | None] | None = None

    @classmethod
    def of(cls, trace: Trace) -> _Events:
        ev = trace.events
        rows = trace.event_rows
        column = trace.observations["header_block"]
        at = ev["published_at"].fillna(ev["first_seen_at"])
        return cls(
            subjects=_texts(ev["subject"]),
            senders=[s or p for s, p in zip(_texts(ev["source"]), _texts(ev["producer"]),
                                            strict=True)],
            times=at.to_numpy(dtype="datetime64[ns]").view(np.int64),
            raw=as_bytes(ev["payload"]),
            types=_texts(ev["content_type"]),
            structured=(ev["mode"] == "structured").fillna(False).to_numpy(dtype=bool),
            blocks=as_bytes(column.take(rows)) if len(rows) else [None] * len(ev),
            trace=trace)

    def payload(self, i: int) -> tuple[bool, Any, str | None]:
        """Whether event ``i``'s payload is JSON, its value if so (else its bytes), and its
        content type."""
        raw, content_type = self.raw[i] or b"", self.types[i]
        if self.structured[i]:
            event = decode_message(self.subjects[i] or "", raw, self.blocks[i])
            raw, content_type = event.raw, event.content_type
        if content_type is None or is_json(content_type):
            ok, value = _json(raw)
            if ok:
                return True, value, content_type
        return False, raw, content_type

    def headers(self, i: int) -> dict[str, str]:
        """Every NATS header of event ``i`` (CloudEvents ones too), as on the wire."""
        block = self.blocks[i]
        if block:
            return parse_block(block).headers
        if self._dicts is None:
            self._dicts = as_dicts(self.trace.events["headers"])
        return self._dicts[i] or {}


@dataclass
class _Deliveries:
    subjects: list[str | None]
    consumers: list[str | None]
    times: np.ndarray  # int64 ns: received (else published)
    latency: np.ndarray  # seconds, publish → handler start (else receipt); NaN unknown
    events: np.ndarray  # position of the event in trace.events, -1 unknown
    channels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def of(cls, trace: Trace) -> _Deliveries:
        dv = trace.deliveries
        start = dv["started_at"].fillna(dv["received_at"])
        latency = (start - dv["published_at"]).dt.total_seconds()
        at = dv["received_at"].fillna(dv["published_at"])
        return cls(_texts(dv["subject"]), _texts(dv["consumer"]),
                   at.to_numpy(dtype="datetime64[ns]").view(np.int64),
                   latency.to_numpy(dtype=float, na_value=np.nan),
                   np.asarray(trace.delivery_events, dtype=np.int64))


# -- parts of the document -------------------------------------------------------------------


def _channel(k: int, address: Address, messages: list[ObservedMessage], seen: _Events,
             dv: _Deliveries, span: float | None) -> dict[str, Any]:
    mine, got = seen.channels == k, dv.channels == k
    producers = sorted({s for s, m in zip(seen.senders, mine, strict=True) if m and s})
    consumers = sorted({c for c, m in zip(dv.consumers, got, strict=True) if m and c})
    out: dict[str, Any] = {"address": address.address}
    if address.parameters:
        out["parameters"] = {
            name: {"description": f"token {position + 1} of the subject: {distinct:,} "
                                  f"distinct value{'' if distinct == 1 else 's'} seen",
                   "examples": list(values)}
            for name, (position, values, distinct) in address.parameters.items()}
    if messages:
        out["messages"] = {m.name: m.document(address.address) for m in messages}
    out["x-evtkit"] = _figures(seen.times[mine], span, subjects=len(address.subjects),
                               producers=producers, consumers=consumers,
                               latency=dv.latency[got])
    return out


def _operations(found: list[Address], seen: _Events, dv: _Deliveries,
                message_of: list[ObservedMessage | None], span: float | None) -> dict[str, Any]:
    """One operation per application, direction and channel."""
    groups: dict[tuple[str, str, int], list[int]] = {}
    for i, (k, sender) in enumerate(zip(seen.channels.tolist(), seen.senders, strict=True)):
        if k >= 0 and sender:
            groups.setdefault((sender, "send", k), []).append(i)
    for j, (k, consumer) in enumerate(zip(dv.channels.tolist(), dv.consumers, strict=True)):
        if k >= 0 and consumer:
            groups.setdefault((consumer, "receive", k), []).append(j)
    out: dict[str, Any] = {}
    ids: set[str] = set()
    for (app, action, k), rows in sorted(groups.items(), key=lambda g: (g[0][0], g[0][2],
                                                                         g[0][1])):
        cid = found[k].id
        if action == "send":
            used = [message_of[i] for i in rows]
            figures = _figures(seen.times[rows], span)
        else:
            at = dv.events[rows]
            used = [message_of[e] if e >= 0 else None for e in at]
            figures = _figures(dv.times[rows], span, latency=dv.latency[rows],
                               what="deliveries")
        names = list(dict.fromkeys(m.name for m in used if m is not None))
        oid = unique_name(re.sub(r"[^A-Za-z0-9._-]", "_", f"{app}.{action}.{cid}"), ids)
        op: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{escape(cid)}"},
            "summary": f"{app} {action}s on {found[k].address}",
            "x-application": app,
        }
        if names:
            op["messages"] = [{"$ref": f"#/channels/{escape(cid)}/messages/{escape(n)}"}
                              for n in names]
        op["x-evtkit"] = figures
        out[oid] = op
    return out


def _info(trace: Trace, title: str | None, seen: _Events, dv: _Deliveries
          ) -> dict[str, Any]:
    from .. import __version__

    source = trace.metadata.get("source_path")
    where = f" in {source}" if isinstance(source, str) else ""
    return {
        "title": title or "Observed events",
        "version": "0.1.0",
        "description": (
            f"Inferred by evtkit {__version__} from {len(seen.subjects):,} events and "
            f"{len(dv.subjects):,} deliveries{where}: channels, message schemas and who "
            "sends and receives what, as observed. Review before publishing."),
        "x-evtkit": {
            "generator": f"evtkit {__version__}",
            **_figures(seen.times, _span(seen.times)),
            "deliveries": len(dv.subjects),
            "parameter_rule": {"min_values": MIN_VALUES, "min_share": MIN_SHARE},
        },
    }


def _figures(times: np.ndarray, span: float | None, *, what: str = "events",
             latency: np.ndarray | None = None, **more: Any) -> dict[str, Any]:
    """``x-evtkit``: count, rate, more, p95 latency, first and last seen."""
    known = times[times != np.iinfo(np.int64).min]
    out: dict[str, Any] = {what: len(times)}
    if span:
        out["rate_per_s"] = _round(len(times) / span)
    out.update(more)
    if latency is not None:
        values = latency[~np.isnan(latency)]
        if len(values):
            out["p95_latency_s"] = _round(float(np.percentile(values, 95)))
    if len(known):
        out["first_seen"] = _iso(int(known.min()))
        out["last_seen"] = _iso(int(known.max()))
    return out


# -- helpers -----------------------------------------------------------------------------


def _json(raw: bytes) -> tuple[bool, Any]:
    """Whether ``raw`` is JSON, and its value — read exactly as conformance reads it."""
    value = read_payload(raw, None)
    return (False, None) if isinstance(value, Unreadable) else (True, value)


def _positions(subjects: list[str | None], channel_of: dict[str, int]) -> np.ndarray:
    """The channel of each subject (-1 for none)."""
    return np.array([channel_of.get(s, -1) if s else -1 for s in subjects], dtype=np.int64)


def _texts(column: pd.Series) -> list[str | None]:
    return [v if isinstance(v, str) else None for v in column.astype(object)]


def _pascal(address: str) -> str:
    """``orders.{orderId}.placed`` → ``OrdersPlaced`` (literal tokens only)."""
    words = [w for token in address.split(".") if "{" not in token
             for w in _WORDS.findall(token)]
    name = "".join(w[:1].upper() + w[1:] for w in words)
    return name if name[:1].isalpha() else f"Message{name}"


def _span(times: np.ndarray) -> float | None:
    known = times[times != np.iinfo(np.int64).min]
    if len(known) < 2:
        return None
    seconds = (int(known.max()) - int(known.min())) / 1e9
    return seconds or None


def _iso(ns: int) -> str:
    return pd.Timestamp(ns, tz="UTC").isoformat().replace("+00:00", "Z")


def _round(value: float) -> float:
    return float(f"{value:.6g}")
