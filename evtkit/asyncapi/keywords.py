"""JSON Schema keywords evtkit checks itself, so that no schema in an (untrusted) AsyncAPI
document can make a check take more than about linear time.

* ``pattern``, ``patternProperties`` and ``additionalProperties`` (which must know which
  names the patterns match) use RE2, a regular-expression engine that runs in time linear
  in the text: Python's ``re`` backtracks, and a pattern such as ``^(a+)+$`` against
  ``"a" * 30 + "!"`` would take hours. A pattern RE2 cannot compile (backreferences,
  lookaround) is refused when the document is loaded (:func:`pattern_problem`).
* ``uniqueItems`` compares items by a canonical, hashable form (JSON Schema equality:
  ``1 == 1.0``, ``true != 1``, object key order irrelevant) in one pass, where
  ``jsonschema`` compares every pair.

:func:`extend` adds these to a ``jsonschema`` validator class.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import re2
from jsonschema.exceptions import ValidationError
from jsonschema.validators import extend as _extend

from .reference import escape

__all__ = ["canonical", "compile_pattern", "extend", "has_patterns", "pattern_problem",
           "search"]

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is reported as a SpecError, not on stderr


# RE2 reads UTF-8, where lone surrogates (which Python's JSON reader lets through, and
# which ECMAScript patterns may name as \uD800) cannot be: both are moved, in the pattern
# and in the text, to the private-use plane 16 (U+100000...), keeping their order.
_SHIFT = 0x100000 - 0xD800
_SURROGATE = re.compile("[\ud800-\udfff]")
_ECMA_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9a-fA-F]{4})")


def _moved(text: str) -> str:
    return _SURROGATE.sub(lambda m: chr(ord(m[0]) + _SHIFT), text)


def _escape(match: re.Match[str]) -> str:
    code = int(match[2], 16)
    return f"{match[1]}\\x{{{code + _SHIFT if 0xD800 <= code <= 0xDFFF else code:x}}}"


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    """``pattern`` (ECMAScript syntax: ``\\uXXXX`` escapes) compiled by RE2 (cached).
    Raises ``re2.error`` when RE2 cannot run it."""
    return re2.compile(_ECMA_ESCAPE.sub(_escape, _moved(pattern)), _OPTIONS)


def search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches somewhere in ``text`` (JSON Schema's ``pattern``)."""
    compiled = compile_pattern(pattern)
    try:
        return compiled.search(text) is not None
    except UnicodeEncodeError:  # lone surrogates
        return compiled.search(_moved(text)) is not None


def pattern_problem(schema: Any, at: str = "") -> tuple[str, str] | None:
    """The first ``pattern`` or ``patternProperties`` name in ``schema`` that RE2 cannot
    compile — ``(pointer inside the schema, problem)`` — or None."""
    stack: list[tuple[Any, str]] = [(schema, at)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, list):
            stack.extend((v, f"{where}/{i}") for i, v in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        found = [(node["pattern"], f"{where}/pattern")] if isinstance(
            node.get("pattern"), str) else []
        if isinstance(node.get("patternProperties"), dict):
            found += [(p, f"{where}/patternProperties/{escape(p)}")
                      for p in node["patternProperties"] if isinstance(p, str)]
        for pattern, pointer in found:
            try:
                compile_pattern(pattern)
            except re2.error as exc:
                return pointer, (f"pattern {pattern!r} is refused: evtkit checks patterns in "
                                 f"linear time (RE2), which has no backreferences or "
                                 f"lookaround ({_reason(exc)}); rewrite it without them")
        stack.extend((v, f"{where}/{escape(str(k))}") for k, v in node.items())
    return None


def _reason(exc: Exception) -> str:
    text = exc.args[0] if exc.args else exc
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


def has_patterns(schema: Any) -> bool:
    """Whether ``schema`` may contain a ``pattern`` or ``patternProperties`` keyword
    (conservatively: any mapping key so named)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "pattern" in node or "patternProperties" in node:
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def canonical(value: Any) -> Any:
    """A hashable form of a JSON value, equal for values JSON Schema calls equal."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, dict):
        return ("object", frozenset((k, canonical(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("array", tuple(canonical(v) for v in value))
    if isinstance(value, int | float):
        return ("number", value)  # 1 and 1.0 hash and compare equal
    return (type(value).__name__, value)


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any
             ) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any,
                        schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for name, value in instance.items():
            if search(pattern, name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _additional(instance: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    return [name for name in instance if name not in properties
            and not any(search(p, name) for p in patterns)]


def _additional_properties(validator: Any, allowed: Any, instance: Any, schema: Any
                           ) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    extras = _additional(instance, schema)
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed and extras:
        # (worded as jsonschema words it: only how names are matched differs)
        names = ", ".join(repr(each) for each in sorted(extras))
        one = len(extras) == 1
        if "patternProperties" in schema:
            patterns = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            yield ValidationError(f"{names} {'does' if one else 'do'} not match any of the "
                                  f"regexes: {patterns}")
        else:
            yield ValidationError(f"Additional properties are not allowed ({names} "
                                  f"{'was' if one else 'were'} unexpected)")


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any
                  ) -> Iterator[ValidationError]:
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = canonical(item)
        if key in seen:
            yield ValidationError(f"{_short(instance)} has non-unique elements")
            return
        seen.add(key)


def _short(instance: Any) -> str:
    text = repr(instance)
    return text if len(text) <= 80 else text[:79] + "…"


def extend(cls: type[jsonschema.protocols.Validator]) -> Any:
    """``cls`` with the keywords above (those it has) replaced by evtkit's."""
    mine = {"pattern": _pattern, "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties, "uniqueItems": _unique_items}
    return _extend(cls, {k: v for k, v in mine.items() if k in cls.VALIDATORS})
