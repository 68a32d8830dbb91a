"""One message of an inferred channel: what was seen of its payloads and headers, as an
AsyncAPI Message Object (for :func:`evtkit.asyncapi.infer`).

Payload and headers schemas come from :class:`~evtkit.asyncapi.infer_schema.Shape`.
Headers whose name or value looks like a credential (``Authorization``, ``Cookie``,
``*token*``, ``X-Api-Key``, ``Bearer ...``) are left out of schemas and examples (evtkit
traces keep headers as sent). Examples are the first distinct payloads of at most
:data:`MAX_EXAMPLE_BYTES` as compact JSON, nested at most
:data:`~evtkit.asyncapi.infer_schema.MAX_DEPTH` levels, holding no ``$`` keys (a
reference resolver would follow ``$ref``), no credential-like field and no lone
surrogate (YAML cannot hold one); others are left out, never cut.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from .infer_schema import MAX_DEPTH, Shape, depth
from .reference import escape
from .secrets import contains_secret, secret_name, secret_text

__all__ = ["MAX_EXAMPLE_BYTES", "ObservedMessage", "is_secret"]

MAX_EXAMPLE_BYTES = 1024
"""Largest payload (as compact JSON) shown as an example; larger ones are left out."""

# Headers stating the payload's content type: their values seen are listed (enum), so a
# message tells its payloads apart from another's by them.
_STATED = frozenset({"content-type", "ce-datacontenttype"})
_MAX_STATED = 5


@dataclass
class ObservedMessage:
    """What was seen of one message of one channel: its JSON payloads, or its other
    payloads (:attr:`is_json` False), their headers and a few examples."""

    name: str
    is_json: bool
    count: int = 0
    payload: Shape = field(default_factory=Shape)
    headers: Shape = field(default_factory=Shape)
    content_types: Counter[str | None] = field(default_factory=Counter)
    correlation: str | None = None
    correlated: bool = True
    stated: dict[str, set[str]] = field(default_factory=dict)  # content-type headers
    examples: list[dict[str, Any]] = field(default_factory=list)
    _seen: set[bytes] = field(default_factory=set)

    def add(self, wire: dict[str, str], raw: bytes, structured: bool, value: Any,
            content_type: str | None, examples: int) -> None:
        """One more event.

        Args:
            wire: its NATS headers, as on the wire.
            raw: its payload bytes (for a structured CloudEvent: the whole envelope).
            structured: whether it is a structured CloudEvent.
            value: its payload as JSON data (JSON messages), else as bytes.
            content_type: the content type it states, if any.
            examples: most examples to keep.
        """
        self.count += 1
        self.content_types[content_type] += 1
        headers = {k: v for k, v in wire.items() if not is_secret(k, v)}
        self.headers.add(headers)
        for key, text in headers.items():
            if key.lower() in _STATED:
                self.stated.setdefault(key, set()).add(text)
        name = next((k for k in wire if k.lower() == "ce-correlationid"), None)
        if name is None:
            self.correlated = False
        elif self.correlation is None:
            self.correlation = name
        # the same bytes read the same way are the same value
        digest = hashlib.blake2b(raw, digest_size=16,
                                 person=b"s" if structured else b"").digest()
        if digest in self._seen:
            return  # the schema depends only on the distinct payloads
        self._seen.add(digest)
        if self.is_json:
            self.payload.add(value)
        if len(self.examples) < examples:
            self._example(_json_example(value) if self.is_json else _text_example(value),
                          headers)

    def _example(self, payload: Any, headers: dict[str, str]) -> None:
        example: dict[str, Any] = {}
        shown = {k: v for k, v in headers.items() if len(k) + len(v) <= 200}
        if shown and len(orjson.dumps(shown)) <= MAX_EXAMPLE_BYTES and not any(
                k.startswith("$") for k in shown):
            example["headers"] = shown
        if payload is not _NONE:
            example["payload"] = payload
        if "payload" in example and example not in self.examples:
            self.examples.append(example)

    def document(self, address: str) -> dict[str, Any]:
        """The Message Object (AsyncAPI 3.0) of what was seen on ``address``."""
        types = {t for t in self.content_types if t is not None}
        out: dict[str, Any] = {"name": self.name, "title": (
            f"{'JSON' if self.is_json else 'Non-JSON'} messages on {address}")}
        if self.is_json:
            if len(types) == 1:
                out["contentType"] = types.pop()
            elif types:
                out["contentType"] = "application/json"
        else:
            out["contentType"] = types.pop() if len(types) == 1 else "application/octet-stream"
            out["summary"] = ("Payloads that are not JSON (empty, text or binary): not "
                              "described by a schema")
        if self.correlated and self.correlation is not None:
            out["correlationId"] = {"location": f"$message.header#/{escape(self.correlation)}"}
        headers = self.headers.schema()
        if headers != {"type": "object"}:
            out["headers"] = headers
            for key, values in self.stated.items():
                if len(values) <= _MAX_STATED and key in headers.get("properties", {}):
                    headers["properties"][key]["enum"] = sorted(values)
        if self.is_json:
            out["payload"] = self.payload.schema()
        if self.examples:
            out["examples"] = self.examples
        out["x-evtkit"] = {"events": self.count}
        return out


_NONE = object()  # an example without a payload


def _json_example(value: Any) -> Any:
    """``value`` as an example payload, or :data:`_NONE` when it should not be shown."""
    if depth(value) > MAX_DEPTH:
        return _NONE
    try:
        text = orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return _NONE  # numbers beyond 64 bits, lone surrogates: not plain JSON
    if len(text) > MAX_EXAMPLE_BYTES or orjson.loads(text) != value or _risky(value):
        return _NONE  # (NaN is written as null: not equal)
    return value


def _text_example(raw: Any) -> Any:
    if not isinstance(raw, bytes) or not raw or len(raw) > MAX_EXAMPLE_BYTES:
        return _NONE
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _NONE
    printable = all(c.isprintable() or c in "\n\t" for c in text)
    return text if printable and not secret_text(text) else _NONE


def _risky(value: Any) -> bool:
    """Whether a payload has keys that a reference resolver would follow (``$ref``) or
    anything that looks like a credential: such payloads are not shown as examples."""
    todo = [value]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if any(isinstance(key, str) and key.startswith("$") for key in node):
                return True
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return contains_secret(value)


def is_secret(name: str, value: str) -> bool:
    """Whether a header looks like a credential (by name or value)."""
    return secret_name(name) or secret_text(value)
