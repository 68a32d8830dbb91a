"""What an AsyncAPI document declares, as value objects: channels (with their NATS subject
patterns), messages, operations (who sends and who receives) and servers.

::

    spec = ek.asyncapi.load("api.yaml")
    spec.channels["orderPlaced"].subject        # 'orders.*.placed'
    spec.match("orders.42.placed")              # that channel (the most specific match)
    spec.match_all(subjects)                    # the same for many, vectorised
    spec.producers("orderPlaced")               # ('shop',)

Schemas are plain JSON data (``dict``/``bool``), ``$ref``s already resolved.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .validator import SchemaCheck

__all__ = ["Channel", "Message", "Operation", "Server", "Spec", "closest", "subject_pattern"]

_PARAM = re.compile(r"\{[^{}]*\}")


_M = TypeVar("_M")


def closest(messages: Iterable[_M], violations: Callable[[_M], list[dict[str, str]]]
            ) -> tuple[_M, list[dict[str, str]]]:
    """Which declared message an event is: the first of ``messages`` it breaks nothing of,
    else the one it breaks least (the first on a tie), with what it breaks. The one rule
    for conformance and the guard."""
    best: tuple[_M, list[dict[str, str]]] | None = None
    for message in messages:
        found = violations(message)
        if not found:
            return message, []
        if best is None or len(found) < len(best[1]):
            best = (message, found)
    if best is None:
        raise ValueError("no messages to choose from")
    return best


def subject_pattern(address: str) -> str:
    """The NATS subscription pattern of a channel address: a token holding a
    ``{parameter}`` becomes ``*``; the address's own ``*`` and ``>`` stay.

    >>> subject_pattern("orders.{orderId}.placed")
    'orders.*.placed'
    """
    return ".".join("*" if _PARAM.search(t) else t for t in address.split("."))


def _re2(text: str) -> str:
    """``text`` as a literal in an RE2 pattern (every character but ASCII letters and
    digits written as ``\\x{hex}``)."""
    return "".join(c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):x}}}" for c in text)


def _token_matcher(token: str) -> str | re.Pattern[str]:
    """A literal token, ``*``, ``>``, or a regex for a token with a parameter inside it
    (``v{version}`` matches ``v2`` but not ``x2``)."""
    if not _PARAM.search(token) or _PARAM.fullmatch(token):
        return "*" if _PARAM.fullmatch(token) else token
    parts = _PARAM.split(token)
    return re.compile(".+".join(re.escape(p) for p in parts))


@dataclass(frozen=True, slots=True, eq=False)
class Message:
    """A message a channel may carry.

    Attributes:
        id: its key in the channel (3.0) or its ``messageId`` / component name (2.x).
        name: its ``name``, else :attr:`id`.
        channel: the id of its channel.
        payload: the payload's JSON Schema, or None (not declared, or in a format that is
            not JSON Schema: see :attr:`schema_format`).
        headers: the headers' JSON Schema, or None.
        content_type: its ``contentType``, else the document's ``defaultContentType``.
        correlation_id: where its correlation id is (``$message.header#/correlationId``).
        schema_format: the payload's schema format when it is not JSON Schema (Avro,
            Protobuf, RAML...): such payloads are not checked.
        title: its ``title`` or ``summary``.
    """

    id: str
    name: str
    channel: str
    payload: Any = None
    headers: Any = None
    content_type: str | None = None
    correlation_id: str | None = None
    schema_format: str | None = None
    title: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Channel:
    """A channel: an address (NATS subject, maybe with ``{parameters}``) and its messages.

    Attributes:
        id: its key in ``channels`` (3.0) — in 2.x, its address.
        address: as written; None when the document leaves it unknown (3.0 allows that).
        subject: the NATS subject pattern (``{param}`` → ``*``), or None.
        messages: the messages it may carry, by id, in document order.
        parameters: the names of its parameters.
        description: its description, if any.
    """

    id: str
    address: str | None
    subject: str | None
    messages: dict[str, Message]
    parameters: tuple[str, ...] = ()
    description: str | None = None
    _tokens: tuple[str | re.Pattern[str], ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, id: str, address: str | None, messages: dict[str, Message],
           parameters: tuple[str, ...] = (), description: str | None = None) -> Channel:
        """A channel whose subject pattern is derived from ``address``."""
        subject = subject_pattern(address) if address else None
        tokens = tuple(_token_matcher(t) for t in address.split(".")) if address else ()
        return cls(id, address, subject, messages, parameters, description, tokens)

    def matches(self, subject: str) -> bool:
        """Whether a message on ``subject`` belongs to this channel."""
        if not self._tokens:
            return False
        have = subject.split(".")
        for i, want in enumerate(self._tokens):
            if want == ">":
                return i == len(self._tokens) - 1 and len(have) > i
            if i >= len(have):
                return False
            if isinstance(want, re.Pattern):
                if not want.fullmatch(have[i]):
                    return False
            elif want != "*" and want != have[i]:
                return False
        return len(have) == len(self._tokens)

    @property
    def regex(self) -> str | None:
        """:meth:`matches` as one RE2 pattern over a whole subject (the dialect of Arrow's
        ``match_substring_regex``), or None when no subject can match."""
        if not self._tokens or ">" in self._tokens[:-1] or self.address is None:
            return None
        parts = []
        for token, want in zip(self.address.split("."), self._tokens, strict=True):
            if want == "*":
                parts.append("[^.]*")  # any token, an empty one too
            elif want == ">":
                parts.append("(?s:.*)")  # one token or more
            elif isinstance(want, re.Pattern):  # Python's ``.`` stops at a newline
                parts.append("[^.\\n]+".join(_re2(p) for p in _PARAM.split(token)))
            else:
                parts.append(_re2(want))
        return "^" + "\\.".join(parts) + "$"

    @property
    def specificity(self) -> tuple[int, int, int, int]:
        """Sort key, larger is more specific: literal tokens, tokens with a parameter
        inside, no ``>``, token count."""
        literal = sum(isinstance(t, str) and t not in ("*", ">") for t in self._tokens)
        partial = sum(isinstance(t, re.Pattern) for t in self._tokens)
        return literal, partial, int(">" not in self._tokens), len(self._tokens)


@dataclass(frozen=True, slots=True)
class Operation:
    """What one application does on one channel.

    Attributes:
        id: its key in ``operations`` (3.0) or ``operationId`` (2.x).
        action: ``send`` (the application produces) or ``receive`` (it consumes). In 2.x
            ``subscribe`` is ``send`` and ``publish`` is ``receive``: 2.x names what
            *other* applications may do.
        channel: the id of its channel.
        application: who does it: ``x-application`` of the operation, else of ``info``,
            else the document's title.
        messages: ids of the messages it sends or receives (all of the channel's when
            the document names none).
    """

    id: str
    action: str
    channel: str
    application: str
    messages: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Server:
    """A server the document names (``host`` is 2.x's ``url``)."""

    name: str
    host: str
    protocol: str
    pathname: str | None = None
    protocol_version: str | None = None
    description: str | None = None


MAX_MATCHED = 65_536
"""Subjects :meth:`Spec.match` remembers; beyond, it forgets them all (subjects with ids in
them are endless)."""


@dataclass(frozen=True, slots=True, eq=False)
class Spec:
    """An AsyncAPI document as evtkit uses it (see :func:`evtkit.asyncapi.load`).

    Attributes:
        title: ``info.title``.
        version: ``info.version`` (the API's version).
        asyncapi: the AsyncAPI version of the document (``3.0.0``, ``2.6.0``).
        application: the application the document describes (``x-application`` of
            ``info``, else its title).
        channels: by id, in document order.
        operations: by id.
        servers: by name.
        source: where it was read from.
        default_content_type: ``defaultContentType``, if given.
    """

    title: str
    version: str
    asyncapi: str
    application: str
    channels: dict[str, Channel]
    operations: dict[str, Operation]
    servers: dict[str, Server]
    source: str = "<dict>"
    default_content_type: str | None = None
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)
    _matched: dict[str, Channel | None] = field(default_factory=dict, repr=False)

    @property
    def messages(self) -> list[Message]:
        """Every message of every channel."""
        return [m for c in self.channels.values() for m in c.messages.values()]

    def match(self, subject: str) -> Channel | None:
        """The channel a message on ``subject`` belongs to: the most specific of those
        whose address matches (literal tokens beat parameters, parameters beat ``>``),
        the first in the document on a tie; None when no channel matches."""
        if subject not in self._matched:
            if len(self._matched) >= MAX_MATCHED:  # one subject per order id: start over
                self._matched.clear()
            found = [c for c in self.channels.values() if c.matches(subject)]
            # (the first on ties)
            self._matched[subject] = max(found, key=lambda c: c.specificity, default=None)
        return self._matched[subject]

    def match_all(self, subjects: Sequence[str | None]) -> np.ndarray:
        """:meth:`match` for many subjects at once: for each, the position in
        :attr:`channels` of its channel, -1 for none (or a missing subject).

        Each channel's address is tried on all the subjects in one pass (Arrow's RE2),
        the most specific channels first, each on the subjects still unmatched; literal
        addresses, which beat any other, are looked up all at once."""
        out = np.full(len(subjects), -1, np.int64)
        channels = list(self.channels.values())
        if not len(subjects) or not channels:
            return out
        try:
            array = pa.array(subjects, pa.string())
        except (pa.ArrowException, UnicodeError):  # e.g. a lone surrogate: one at a time
            found = [self.match(s) if isinstance(s, str) else None for s in subjects]
            position = {id(c): k for k, c in enumerate(channels)}
            return np.array([-1 if c is None else position[id(c)] for c in found], np.int64)
        literal: dict[str, int] = {}
        for k, c in enumerate(channels):
            if c.address is not None and c._tokens and all(
                    isinstance(t, str) and t not in ("*", ">") for t in c._tokens):
                literal.setdefault(c.address, k)
        if literal:
            at = pc.index_in(array, value_set=pa.array(list(literal), pa.string()))
            at = at.to_numpy(zero_copy_only=False)
            hit = ~np.isnan(at)
            out[hit] = np.array(list(literal.values()), np.int64)[at[hit].astype(np.int64)]
        # Stable: on equal specificity the first in the document wins, as in match().
        for k in sorted(range(len(channels)), key=lambda k: channels[k].specificity,
                        reverse=True):
            c = channels[k]
            if c.address in literal or c.regex is None:
                continue
            rest = np.flatnonzero(out == -1)
            if not len(rest):
                break
            try:
                hit = pc.match_substring_regex(array.take(pa.array(rest)), c.regex)
                mask = hit.fill_null(False).to_numpy(zero_copy_only=False)
            except pa.ArrowException:  # a pattern RE2 refuses: Python's matcher
                mask = np.array([isinstance(s := subjects[i], str) and c.matches(s)
                                 for i in rest.tolist()], dtype=bool)
            out[rest[mask]] = k
        return out

    def producers(self, channel: str) -> tuple[str, ...]:
        """Applications declared to send on ``channel`` (its id)."""
        return self._who(channel, "send")

    def consumers(self, channel: str) -> tuple[str, ...]:
        """Applications declared to receive from ``channel`` (its id)."""
        return self._who(channel, "receive")

    def _who(self, channel: str, action: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(o.application for o in self.operations.values()
                                   if o.channel == channel and o.action == action))

    def check(self, message: Message, part: str) -> SchemaCheck | None:
        """The compiled check of ``message``'s ``part`` (``payload`` or ``headers``),
        compiled on first use and kept; None when that part has no JSON Schema."""
        key = ("check", id(message), part)
        if key not in self._cache:
            schema = message.payload if part == "payload" else message.headers
            self._cache[key] = (message, None if schema is None else SchemaCheck(schema))
        return self._cache[key][1]

    def __iter__(self) -> Iterator[Channel]:
        return iter(self.channels.values())

    def __repr__(self) -> str:
        return (f"<Spec {self.title!r} {self.version} (AsyncAPI {self.asyncapi}): "
                f"{len(self.channels)} channels, {len(self.messages)} messages, "
                f"{len(self.operations)} operations, {len(self.servers)} servers>")
