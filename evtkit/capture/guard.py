"""The guard: a bus given event definitions checks each event it publishes before sending it.

::

    bus = await ek.connect(spec="api.yaml")          # a Spec, or what ek.asyncapi.load reads
    await bus.publish("orders.42.placed", {"order": "42", "amount": 5, "currency": "EUR"},
                      headers={"x-tenant": "acme"})
    # ContractError: 'orders.42.placed' breaks message 'OrderPlaced' of channel
    # 'orderPlaced' (Shop 1.2.0, api.yaml): payload at /order: '42' is not of type
    # 'integer'; make the payload at /order match the schema of 'OrderPlaced' (or correct
    # the document); nothing was sent

What an outgoing event is held against: its subject picks the channel (:meth:`Spec.match
<evtkit.asyncapi.Spec.match>`, the most specific address); the candidates are the messages
the document's *send* operations on that channel name — those of the document's own
application when it has any, else of any application — or every message of the channel
when no operation sends on it. The event passes when one candidate accepts both its payload
and its NATS headers (the CloudEvents ones evtkit sets included); else
:class:`~evtkit.errors.ContractError` lists the violations of the closest candidate (the
fewest, the first declared on a tie), and nothing is sent. A channel that declares no
message accepts anything.

A subject no channel matches is allowed (the event is undeclared; ``trace.conformance``
reports it), unless the guard is ``strict``: then it is refused too. Who publishes is not
checked here (a bus may publish for several applications): ``trace.conformance`` reports
producers the document does not name.

The payload is read as ``trace.conformance`` reads it (one stricter difference: the guard
holds an event against the messages the channel's *send* operations name, where conformance
takes any message of the channel): as JSON when the message declares a JSON content type, or
declares none and the event is JSON; as text for ``text/*``; not at all for other formats
(Avro, Protobuf, bytes published without a declared content type). An event stating a
content type of another kind than the declared one (text or bytes where JSON is declared)
is refused. Schemas are compiled once per message (:meth:`Spec.check
<evtkit.asyncapi.Spec.check>`: a generated validator says yes fast, ``jsonschema`` lists
violations on a no); the candidates are looked up once per subject.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._headers import header_name, parse_block
from ..asyncapi.spec import closest
from ..asyncapi.validator import (
    UNCHECKED,
    Unreadable,
    coerce_headers,
    content_type_mismatch,
    payload_violations,
    read_payload,
    relevant_names,
)
from ..errors import ContractError
from ..event import STRUCTURED, decode_message
from .credentials import redact
from .envelope import MANAGED

if TYPE_CHECKING:
    from ..asyncapi.spec import Channel, Message, Spec
    from ..asyncapi.validator import SchemaCheck

__all__ = ["Guard", "MAX_SUBJECTS"]

MAX_SUBJECTS = 65_536
"""Subjects whose candidates the guard keeps; beyond (many distinct subjects, e.g. one per
order id) it forgets them all and looks them up again."""

_STRUCTURED = STRUCTURED.encode()
_EVTKIT_HEADERS = frozenset(MANAGED)
"""Headers evtkit sets on every publish (lower case)."""


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A message an event on a channel may be, with its compiled checks.

    ``declared`` is the message's content type (None: as the event states);
    ``own_headers``: whether
    only headers other than evtkit's CloudEvents ones can decide its headers check.
    """

    message: Message
    payload: SchemaCheck | None
    headers: SchemaCheck | None
    declared: str | None
    own_headers: bool

    @classmethod
    def of(cls, spec: Spec, message: Message) -> _Candidate:
        """``message`` with its checks compiled (once per message: :meth:`Spec.check`)."""
        names = relevant_names(message.headers)
        own = names is not None and not {header_name(n) for n in names} & _EVTKIT_HEADERS
        return cls(message, spec.check(message, "payload"), spec.check(message, "headers"),
                   message.content_type, own)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What events on one channel are held against."""

    channel: Channel
    candidates: tuple[_Candidate, ...]


class Guard:
    """Checks outgoing events against ``spec`` (see the module docstring).

    Args:
        spec: the event definitions.
        strict: refuse subjects no channel declares too.
    """

    def __init__(self, spec: Spec, *, strict: bool = False) -> None:
        self.spec = spec
        self.strict = strict
        self._subjects: dict[str, _Plan | None] = {}
        self._channels: dict[str, _Plan] = {}

    def check(self, subject: str, payload: bytes, content_type: str | None,
              block: bytes | None, own: Mapping[str, str] | None = None) -> None:
        """Return when the event may be sent; raise when it may not.

        Args:
            subject: where it goes.
            payload: its bytes.
            content_type: the content type it states (``ce-datacontenttype``).
            block: its NATS header block.
            own: the caller's own headers when ``block`` holds only these besides the
                CloudEvents and ``traceparent`` headers evtkit sets (what
                :func:`~evtkit.capture.envelope.envelope` builds); saves reading the
                block when a headers schema cannot see evtkit's headers.

        Raises:
            ContractError: it breaks the declared message(s) of its channel, or (strict) no
                channel declares its subject.
        """
        plan = self._plan(subject)
        if plan is None:
            if self.strict:
                raise self._undeclared(subject)
            return
        if not plan.candidates:
            return
        if (own is None and block and _STRUCTURED in block.lower()) or (
                own and any(header_name(k) == "content-type" for k in own)):
            event = decode_message(subject, payload, block)  # a structured CloudEvent?
            if event.mode == "structured":  # its data, as trace.conformance reads it
                payload, content_type = event.raw, event.content_type
        reader = _Reader(payload, content_type, block, own)
        for candidate in plan.candidates:
            if reader.accepts(candidate):
                return
        # (the reference validator has the last word)
        candidate, found = closest(plan.candidates, reader.violations)
        if found:
            raise self._refused(subject, plan.channel, candidate.message, found)

    def violations(self, subject: str, payload: bytes, content_type: str | None,
                   block: bytes | None, own: Mapping[str, str] | None = None
                   ) -> list[dict[str, str]]:
        """What :meth:`check` would refuse the event for (empty: it may be sent)."""
        try:
            self.check(subject, payload, content_type, block, own)
        except ContractError as exc:
            return exc.violations
        return []

    # -- lookups, once per subject ---------------------------------------------------------

    def _plan(self, subject: str) -> _Plan | None:
        try:
            return self._subjects[subject]
        except KeyError:
            pass
        if len(self._subjects) >= MAX_SUBJECTS:
            self._subjects.clear()
        channel = self.spec.match(subject)
        plan = None if channel is None else self._channel_plan(channel)
        self._subjects[subject] = plan
        return plan

    def _channel_plan(self, channel: Channel) -> _Plan:
        plan = self._channels.get(channel.id)
        if plan is None:
            plan = _Plan(channel, tuple(_Candidate.of(self.spec, m)
                                        for m in sent_messages(self.spec, channel)))
            self._channels[channel.id] = plan
        return plan

    # -- errors ----------------------------------------------------------------------------

    def _about(self) -> str:
        spec = self.spec
        where = "" if spec.source == "<dict>" else f", {redact(spec.source)}"
        return f"{spec.title} {spec.version}{where}"

    def _undeclared(self, subject: str) -> ContractError:
        problem = f"no channel of {self.spec.title} {self.spec.version} declares this subject"
        return ContractError(
            f"{subject!r}: {problem} ({self._about()}); declare a channel for it in the "
            "document, publish it on a declared subject, or connect without strict=True; "
            "nothing was sent",
            subject=subject, channel=None,
            violations=[{"path": "", "message": problem, "part": "subject"}])

    def _refused(self, subject: str, channel: Channel, message: Message,
                 violations: list[dict[str, str]]) -> ContractError:
        first = violations[0]
        part, path = first["part"], first["path"]
        at = f"at {path}" if path else "at its root"
        more = len(violations) - 1
        also = f" (and {more} more violation{'s' if more > 1 else ''})" if more else ""
        if part == "payload" and not path and first["message"].startswith(
                ("content type", "payload is")):
            fix = (f"send a payload of the declared content type "
                   f"({message.content_type or 'JSON'}): a dict or list is sent as JSON")
        else:
            fix = (f"make the {part} {at} match the schema of {message.name!r} (or correct "
                   "the document)")
        return ContractError(
            f"{subject!r} breaks message {message.name!r} of channel {channel.id!r} "
            f"({self._about()}): {part} {at}: {first['message']}{also}; {fix}; "
            "nothing was sent",
            subject=subject, channel=channel.id, violations=violations)


def sent_messages(spec: Spec, channel: Channel) -> list[Message]:
    """The messages an application may send on ``channel``: those its *send* operations
    name (the document's own application's when it has any there, else any
    application's; an operation naming none sends any of the channel's), else every
    message of the channel."""
    sends = [o for o in spec.operations.values()
             if o.channel == channel.id and o.action == "send"]
    own = [o for o in sends if o.application == spec.application] or sends
    if not own or any(not o.messages for o in own):
        return list(channel.messages.values())
    ids = dict.fromkeys(i for o in own for i in o.messages)
    return [channel.messages[i] for i in ids if i in channel.messages] or list(
        channel.messages.values())


class _Reader:
    """One outgoing event as the checks read it: the payload decoded once per content type
    it is read as (the rules of :func:`evtkit.asyncapi.validator.read_payload`, which
    ``trace.conformance`` follows too), the headers once."""

    __slots__ = ("block", "content_type", "decoded", "headers", "own", "raw")

    def __init__(self, raw: bytes, content_type: str | None, block: bytes | None,
                 own: Mapping[str, str] | None) -> None:
        self.raw, self.content_type, self.block, self.own = raw, content_type, block, own
        self.decoded: dict[str | None, Any] = {}
        self.headers: dict[str, str] | None = None

    def accepts(self, candidate: _Candidate) -> bool:
        """Whether ``candidate`` accepts the payload and the headers."""
        check = candidate.payload
        if check is not None:
            if content_type_mismatch(candidate.declared, self.content_type) is not None:
                return False
            expected = candidate.declared or self.content_type
            if expected not in self.decoded:
                self.decoded[expected] = read_payload(self.raw, expected)
            instance = self.decoded[expected]
            if isinstance(instance, Unreadable) or (
                    instance is not UNCHECKED and not check.is_valid(instance)):
                return False
        check = candidate.headers
        return check is None or check.is_valid(self._headers(candidate))

    def violations(self, candidate: _Candidate) -> list[dict[str, str]]:
        """What is wrong with the payload and the headers for ``candidate``."""
        out = payload_violations(candidate.payload, candidate.declared, self.content_type,
                                 self.raw, self.decoded)
        check = candidate.headers
        if check is not None:
            out += [{**v, "part": "headers"} for v in check.violations(self._headers(candidate))]
        return out

    def _headers(self, candidate: _Candidate) -> dict[str, Any]:
        schema = candidate.message.headers
        if self.own is not None and candidate.own_headers:
            # As they go on the wire: envelope() strips each value.
            return coerce_headers({k: v.strip() for k, v in self.own.items()}, schema)
        if self.headers is None:
            self.headers = parse_block(self.block).headers
        return coerce_headers(self.headers, schema)
