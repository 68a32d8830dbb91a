"""JSON Schemas inferred from observed values (payloads, headers), for
:func:`evtkit.asyncapi.infer`.

::

    shape = Shape()
    shape.add({"order": 1, "at": "2030-03-17T17:46:41Z"})
    shape.add({"order": 2, "at": "2030-03-17T17:46:42Z", "note": "gift"})
    shape.schema()   # {'type': 'object', 'properties': {'order': {'type': 'integer'},
                     #  'at': {'type': 'string', 'format': 'date-time'}, 'note': {...}},
                     #  'required': ['at', 'order']}

`genson <https://pypi.org/project/genson/>`_ builds the schema: types per place (integer
becomes number once a fraction is seen), ``required`` = the fields present in every
object, arrays' items merged. evtkit adds:

* ``format`` on strings when *every* value seen there is one: ``date-time`` (RFC 3339),
  ``uuid``, ``email``;
* bounds, because payloads are untrusted: values nested deeper than :data:`MAX_DEPTH`
  levels are described as anything (``{}``); an object with more than
  :data:`MAX_PROPERTIES` property names (keys that are ids, a hostile payload) is described
  by its values (``additionalProperties``) instead of by name; a schema with more than
  :data:`MAX_NODES` subschemas is cut shallower until it fits. Each bound only loosens the
  schema, so every value added stays valid under it;
* property names starting with ``$`` (``$ref``, ``$id``) are declared through
  ``patternProperties`` so that no reference resolver mistakes them for a reference; so
  are names holding lone surrogates (``"\\ud800"`` in JSON), which YAML cannot hold
  (written as ``\\ud800`` escapes in the pattern; such names are not ``required``).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from genson import SchemaBuilder
from genson.schema.strategies import SchemaStrategy, String

__all__ = ["MAX_DEPTH", "MAX_NODES", "MAX_PROPERTIES", "Shape", "depth", "string_format"]

MAX_DEPTH = 16
"""JSON nesting levels a schema describes; deeper values are allowed as anything."""
MAX_PROPERTIES = 100
"""Property names an object schema lists; an object seen with more is described by its
values (``additionalProperties``)."""
MAX_NODES = 5_000
"""Subschemas one inferred schema may hold (it is cut shallower past that)."""
_MAX_VARIANTS = 8  # distinct value schemas merged into additionalProperties' anyOf

_DATE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}")
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*"
                    r"[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")
_FORMATS = (("date-time", _DATE_TIME), ("uuid", _UUID), ("email", _EMAIL))


def string_format(text: str) -> str | None:
    """The JSON Schema ``format`` ``text`` has — ``date-time``, ``uuid`` or ``email`` —
    or None."""
    if len(text) > 320:
        return None
    for name, pattern in _FORMATS:
        if pattern.fullmatch(text):
            return name
    return None


class _Deeper:
    """Stands for a value nested deeper than :data:`MAX_DEPTH`: described as anything."""

    __slots__ = ()


_DEEPER = _Deeper()


class _FormattedString(String):
    """genson's string strategy, plus the ``format`` every value seen shares."""

    def __init__(self, node_class: Any) -> None:
        super().__init__(node_class)
        self._format: str | None = None
        self._seen = False

    def add_object(self, obj: Any) -> None:
        super().add_object(obj)
        found = string_format(obj)
        if not self._seen:
            self._format, self._seen = found, True
        elif found != self._format:
            self._format = None

    def to_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = super().to_schema()
        if self._format is not None:
            schema["format"] = self._format
        return schema


class _Anything(SchemaStrategy):
    """A value too deep to describe: the empty schema, which accepts anything."""

    @classmethod
    def match_schema(cls, schema: Any) -> bool:
        return False

    @classmethod
    def match_object(cls, obj: Any) -> bool:
        return obj is _DEEPER


class _Builder(SchemaBuilder):
    EXTRA_STRATEGIES = (_FormattedString, _Anything)


class Shape:
    """The schema of the values added so far (see the module's docstring)."""

    def __init__(self) -> None:
        self._builder = _Builder(schema_uri=None)
        self.count = 0

    def add(self, value: Any) -> None:
        """Describe ``value`` (JSON data: dict, list, str, int, float, bool, None) too."""
        self._builder.add_object(_bounded(value, 0))
        self.count += 1

    def schema(self) -> dict[str, Any]:
        """The schema; ``{}`` (anything) before any value was added."""
        if not self.count:
            return {}
        schema = _tidy(self._builder.to_schema())
        limit = MAX_DEPTH
        while _nodes(schema) > MAX_NODES and limit > 0:
            limit //= 2
            schema = _cut(schema, limit)
        return schema


def depth(value: Any, stop: int = MAX_DEPTH + 1) -> int:
    """How deeply ``value`` nests (a scalar is 0, ``[1]`` is 1), counted up to ``stop``."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        node, level = todo.pop()
        if level >= stop:
            return stop
        deepest = max(deepest, level)
        if isinstance(node, dict):
            todo.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            todo.extend((v, level + 1) for v in node)
    return deepest


def _bounded(value: Any, level: int) -> Any:
    """``value`` with what lies deeper than :data:`MAX_DEPTH` replaced by a marker (the
    recursion is bounded by that depth, so deep payloads cannot exhaust the stack)."""
    if isinstance(value, dict):
        if level >= MAX_DEPTH:
            return _DEEPER
        return {k: _bounded(v, level + 1) for k, v in value.items()}
    if isinstance(value, list):
        if level >= MAX_DEPTH:
            return _DEEPER
        return [_bounded(v, level + 1) for v in value]
    return value


def _tidy(schema: Any) -> Any:
    """genson's schema made safe to publish: ``anyOf`` holding ``{}`` is ``{}``; wide
    objects described by their values; ``$``-names moved to ``patternProperties``."""
    if not isinstance(schema, dict):
        return schema
    out = {k: _tidy_part(k, v) for k, v in schema.items()}
    options = out.get("anyOf")
    if isinstance(options, list) and any(o == {} for o in options):
        return {}
    properties = out.get("properties")
    if isinstance(properties, dict):
        if len(properties) > MAX_PROPERTIES:
            del out["properties"]
            variants = list({orjson.dumps(v, option=orjson.OPT_SORT_KEYS): v
                             for v in properties.values()}.values())
            if len(variants) <= _MAX_VARIANTS and {} not in variants:
                out["additionalProperties"] = (variants[0] if len(variants) == 1
                                               else {"anyOf": variants})
            out["description"] = (f"{len(properties):,} property names seen (keys that "
                                  "vary, like ids): described by their values")
            required = [k for k in out.get("required", ()) if not _SURROGATE.search(k)]
            out.pop("required", None)
            if 0 < len(required) <= MAX_PROPERTIES:
                out["required"] = required
        else:
            odd = {k: v for k, v in properties.items() if k.startswith("$") or
                   _SURROGATE.search(k)}
            if odd:
                out["properties"] = {k: v for k, v in properties.items() if k not in odd}
                if not out["properties"]:
                    del out["properties"]
                out["patternProperties"] = {f"^{_literal(k)}$": v for k, v in odd.items()}
                required = [k for k in out.get("required", ()) if not _SURROGATE.search(k)]
                if required:
                    out["required"] = required
                else:
                    out.pop("required", None)
    return out


_SURROGATE = re.compile("[\ud800-\udfff]")
_SYNTAX = frozenset("^$\\.*+?()[]{}|/")


def _literal(text: str) -> str:
    """A regular expression matching ``text`` exactly, in the syntax Python and
    ECMAScript (also in its unicode mode, which JSON Schema validators use) share."""
    return "".join(map(_literal_char, text))


def _literal_char(c: str) -> str:
    if c in _SYNTAX:
        return "\\" + c
    if " " <= c <= "~" or (c >= "\xa0" and not "\ud800" <= c <= "\udfff"):
        return c
    return f"\\u{ord(c):04x}"  # control characters, lone surrogates


def _tidy_part(key: str, value: Any) -> Any:
    if key == "properties" and isinstance(value, dict):
        return {name: _tidy(v) for name, v in value.items()}
    if key == "anyOf" and isinstance(value, list):
        return [_tidy(v) for v in value]
    if key == "items":
        return [_tidy(v) for v in value] if isinstance(value, list) else _tidy(value)
    return value


def _nodes(schema: Any) -> int:
    count, todo = 0, [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            count += 1
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return count


_SUBSCHEMAS = ("properties", "patternProperties")


def _cut(schema: Any, levels: int) -> Any:
    """``schema`` with what describes values deeper than ``levels`` replaced by ``{}``."""
    if not isinstance(schema, dict):
        return schema
    if levels <= 0:
        return {}
    out = dict(schema)
    for key in _SUBSCHEMAS:
        if isinstance(out.get(key), dict):
            out[key] = {k: _cut(v, levels - 1) for k, v in out[key].items()}
    if "additionalProperties" in out:
        out["additionalProperties"] = _cut(out["additionalProperties"], levels - 1)
    if isinstance(out.get("items"), list):
        out["items"] = [_cut(v, levels - 1) for v in out["items"]]
    elif "items" in out:
        out["items"] = _cut(out["items"], levels - 1)
    if isinstance(out.get("anyOf"), list):
        out["anyOf"] = [_cut(v, levels) for v in out["anyOf"]]
        if {} in out["anyOf"]:
            return {}
    return out
