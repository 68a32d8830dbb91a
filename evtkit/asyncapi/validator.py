"""JSON Schema checks compiled once per schema: a fast yes, and exact violations on a no;
and payloads read as their content type says, to be checked.

:class:`SchemaCheck` asks a generated validator (``fastjsonschema``, about 15× faster than
``jsonschema`` on typical event payloads) whether an instance is valid; only when it says
no does ``jsonschema`` — the reference — list every violation with its JSON pointer. The
fast path is used for draft-04/06/07 schemas (AsyncAPI's default dialect is a draft-07
superset), without format assertions and without filling in defaults, so it never accepts
what ``jsonschema`` refuses on the schemas evtkit checks; ``jsonschema`` has the last word.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import jsonschema
import orjson
from jsonschema.validators import validator_for

from ..event import STRUCTURED, media_type
from . import keywords
from .reference import escape
from .secrets import mask_message

__all__ = ["MAX_VIOLATIONS", "UNCHECKED", "SchemaCheck", "Unreadable", "accepts_payloads",
           "coerce_headers", "content_type_mismatch", "is_json", "is_json_schema_format",
           "media_type", "payload_violations", "read_payload", "relevant_names",
           "schema_problem"]

MAX_VIOLATIONS = 20
"""Most violations listed per event and part (the rest are counted in a last entry)."""
_MAX_TEXT = 200

_FAST_DRAFTS = (jsonschema.Draft4Validator, jsonschema.Draft6Validator,
                jsonschema.Draft7Validator)
# Schema formats whose schemas are JSON Schema (AsyncAPI's is a draft-07 superset).
_JSON_SCHEMA_FORMATS = ("application/vnd.aai.asyncapi", "application/vnd.aai.asyncapi+json",
                        "application/vnd.aai.asyncapi+yaml", "application/schema+json",
                        "application/schema+yaml")


def is_json_schema_format(schema_format: str | None) -> bool:
    """Whether a ``schemaFormat`` names JSON Schema or AsyncAPI Schema (None: the default,
    AsyncAPI Schema) rather than Avro, Protobuf, RAML, OpenAPI..."""
    if schema_format is None:
        return True
    media = schema_format.split(";")[0].strip().lower()
    return media in _JSON_SCHEMA_FORMATS


def _dialect(schema: Any) -> type[jsonschema.protocols.Validator]:
    return validator_for(schema, default=jsonschema.Draft7Validator)


def schema_problem(schema: Any) -> tuple[str, str] | None:
    """Why ``schema`` is not a valid JSON Schema — ``(pointer inside it, problem)`` — or
    None when it is one (checked against its ``$schema`` dialect, draft-07 by default)."""
    if not isinstance(schema, dict | bool):
        return "", f"a schema must be a mapping or true/false, not {_kind(schema)}"
    if isinstance(schema, dict) and "$schema" in schema and not isinstance(
            schema["$schema"], str):
        return "/$schema", "$schema must be a URI"
    try:
        _dialect(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return _pointer(exc.absolute_path), f"not valid JSON Schema: {_short(exc.message)}"
    except RecursionError:
        return "", "nested too deeply to check"
    return keywords.pattern_problem(schema)


class SchemaCheck:
    """One JSON Schema, compiled once, applied to many instances.

    Args:
        schema: a valid JSON Schema (see :func:`schema_problem`).
    """

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self._reference = _reference_class(_dialect(schema))(schema)
        self._fast = _fast(schema)

    @property
    def quick(self) -> Callable[[Any], Any] | None:
        """The generated validator: returns when an instance is valid, raises when it may
        not be (then :meth:`violations` decides); None for dialects it does not cover."""
        return self._fast

    def is_valid(self, instance: Any) -> bool:
        """Whether :meth:`violations` would be empty, without listing them (``jsonschema``
        stops at the first one)."""
        if self._fast is not None:
            try:
                self._fast(instance)
                return True
            except Exception:  # noqa: BLE001 - any refusal: let the reference decide
                pass
        try:
            return bool(self._reference.is_valid(instance))
        except Exception:  # noqa: BLE001 - RecursionError, a schema it cannot apply
            return False

    def violations(self, instance: Any) -> list[dict[str, str]]:
        """What is wrong with ``instance``: ``{"path": JSON pointer, "message": ...}`` per
        violation, sorted by path (at most :data:`MAX_VIOLATIONS`); empty when valid."""
        if self._fast is not None:
            try:
                self._fast(instance)
                return []
            except Exception:  # noqa: BLE001 - any refusal: let the reference decide
                pass
        try:
            errors = sorted(self._reference.iter_errors(instance),
                            key=lambda e: (_pointer(e.absolute_path), e.message))
        except RecursionError:
            return [{"path": "", "message": "nested too deeply to check"}]
        except Exception as exc:  # noqa: BLE001 - a schema jsonschema cannot apply
            if isinstance(exc, ValueError) and "integer string conversion" in str(exc):
                # jsonschema quotes the instance; Python will not write integers this long
                return [{"path": "", "message": "a number of more than 4300 digits breaks "
                                                "the schema (too long to quote)"}]
            return [{"path": "", "message": f"schema could not be applied: {_short(str(exc))}"}]
        # Messages quote the instance: values that look like credentials are masked here,
        # where every violation is produced, before any report, CLI or error shows them.
        out = [{"path": _pointer(e.absolute_path),
                "message": _short(mask_message(e.message, list(e.absolute_path), e.instance))}
               for e in errors[:MAX_VIOLATIONS]]
        if len(errors) > MAX_VIOLATIONS:
            out.append({"path": "", "message": f"and {len(errors) - MAX_VIOLATIONS} more"})
        return out


_REFERENCE: dict[Any, Any] = {}


def _reference_class(dialect: type[jsonschema.protocols.Validator]) -> Any:
    # Patterns in linear time, uniqueItems by hash: see keywords.py.
    if dialect not in _REFERENCE:
        _REFERENCE[dialect] = keywords.extend(dialect)
    return _REFERENCE[dialect]


def _fast(schema: Any) -> Callable[[Any], Any] | None:
    """A generated validator for draft-04/06/07 schemas, or None (other dialects, or a
    schema the generator refuses): then ``jsonschema`` alone decides.

    The generator compiles a schema's patterns with Python's backtracking ``re`` into a
    table its code looks them up in: each is swapped for the RE2 pattern
    :mod:`.keywords` checks with (linear time, the same answers); when that table is not
    where this version of the generator keeps it, the schema goes without."""
    if _dialect(schema) not in _FAST_DRAFTS:
        return None
    try:
        import fastjsonschema

        check = fastjsonschema.compile(
            schema, handlers=_NO_FETCH, use_default=False, use_formats=False)
    except Exception:  # noqa: BLE001 - not installed, or refuses this schema
        return None
    if keywords.has_patterns(schema):
        table = getattr(check, "__globals__", {}).get("REGEX_PATTERNS")
        if not isinstance(table, dict):
            return None
        for pattern in list(table):
            table[pattern] = keywords.compile_pattern(pattern)
    return check


def _refuse(uri: str) -> Any:
    raise ValueError(f"{uri}: evtkit does not fetch schemas")


# References are resolved before schemas are compiled; none may reach the network.
_NO_FETCH = {scheme: _refuse for scheme in ("http", "https", "file", "ftp", "")}


# Keywords of an object schema that look only at the properties it names (with
# annotations that assert nothing): the keys of ``properties`` and ``required``.
_BY_NAME = frozenset({"type", "properties", "required", "title", "description", "$schema",
                      "$id", "$comment", "examples", "default", "deprecated", "readOnly",
                      "writeOnly"})


def relevant_names(schema: Any) -> frozenset[str] | None:
    """The names whose presence and values are all that decide whether a mapping (such as
    NATS headers) is valid against ``schema`` — its ``properties`` and ``required`` — or
    None when other names can matter too (``additionalProperties``, ``patternProperties``,
    combinators, ``const``, counts of properties...)."""
    if schema is True or schema == {}:
        return frozenset()
    if not isinstance(schema, dict):
        return None
    extra = schema.get("additionalProperties", True)
    if set(schema) - _BY_NAME - {"additionalProperties"} or extra not in (True, {}):
        return None
    kind = schema.get("type", "object")
    if kind != "object" and not (isinstance(kind, list) and "object" in kind):
        return None
    properties, required = schema.get("properties", {}), schema.get("required", [])
    if not isinstance(properties, dict) or not isinstance(required, list) or not all(
            isinstance(n, str) for n in [*properties, *required]):
        return None
    return frozenset([*properties, *required])


def coerce_headers(headers: dict[str, str], schema: Any) -> dict[str, Any]:
    """NATS headers (text) as the instance to check against a headers schema: a header
    the schema declares with another name case gets the schema's name, and a value the
    schema declares as a number, integer or boolean is read as one when it is one
    (``"3"`` → ``3``); anything else stays text, as on the wire."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return dict(headers)
    names = {k.lower(): k for k in properties if isinstance(k, str)}
    out: dict[str, Any] = {}
    for key, value in headers.items():
        name = key if key in properties else names.get(key.lower(), key)
        declared = properties.get(name)
        out[name] = _scalar(value, declared.get("type") if isinstance(declared, dict) else None)
    return out


def _scalar(text: str, declared: Any) -> Any:
    types = set(declared) if isinstance(declared, list) else {declared}
    if not types & {"integer", "number", "boolean"} or "string" in types:
        return text
    lowered = text.strip().lower()
    if "boolean" in types and lowered in ("true", "false"):
        return lowered == "true"
    try:
        number = float(lowered) if "." in lowered or "e" in lowered else int(lowered)
    except ValueError:
        return text
    if "integer" in types and isinstance(number, int):
        return number
    return number if "number" in types else text


# -- payloads: read as their content type says, then checked ---------------------------------


class Unreadable:
    """Why a payload could not be read as its content type says (a violation)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


UNCHECKED = object()
"""What :func:`read_payload` gives for a format JSON Schema cannot describe (Avro,
Protobuf...): such payloads are not checked."""


def is_json(content_type: str | None) -> bool:
    """Whether a content type names JSON (``application/json``, ``...+json``)."""
    media = media_type(content_type)
    return media == "application/json" or media.endswith("+json")


def content_type_mismatch(declared: str | None, actual: str | None) -> str | None:
    """A violation when an event states a content type of another kind (JSON or not)
    than its message declares."""
    if declared is None or actual is None or media_type(actual) == STRUCTURED:
        return None
    if is_json(declared) != is_json(actual):
        return f"content type {actual!r} where {declared!r} is declared"
    return None


def read_payload(raw: bytes, content_type: str | None) -> Any:
    """The payload as the instance to check: JSON (the default), text for ``text/*``,
    :data:`UNCHECKED` for binary formats; an :class:`Unreadable` when it is not what it
    should be."""
    if content_type is None or is_json(content_type):
        if not raw:
            return Unreadable("payload is empty, not JSON")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            try:  # integers beyond 64 bits: valid JSON, which Python's reader reads
                return json.loads(raw, parse_constant=_not_json, parse_int=_integer)
            except _TooLong as long:
                return Unreadable(str(long))
            except (ValueError, RecursionError):  # NaN, Infinity: not JSON
                return Unreadable(f"payload is not JSON ({exc})")
    if media_type(content_type).startswith("text/"):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return Unreadable("payload is not UTF-8 text")
    return UNCHECKED


_MAX_DIGITS = 100_000


class _TooLong(ValueError):
    pass


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _integer(digits: str) -> int:
    """A JSON integer of any length up to :data:`_MAX_DIGITS` (``int(text)`` refuses more
    than 4300 digits unless a process-wide limit is raised; ``Decimal`` does not)."""
    if len(digits) <= 4000:
        return int(digits)
    if len(digits) > _MAX_DIGITS:
        raise _TooLong(f"payload has a number of {len(digits):,} digits: not checked "
                       f"(at most {_MAX_DIGITS:,})")
    return int(Decimal(digits))


def payload_violations(check: SchemaCheck | None, declared: str | None, actual: str | None,
                       raw: bytes, decoded: dict[str | None, Any]) -> list[dict[str, str]]:
    """What is wrong with payload ``raw``, stated as ``actual``, for a message that
    declares content type ``declared`` and whose payload schema ``check`` is (None: not
    declared): violations with ``"part": "payload"``. ``decoded`` keeps what was read, by
    content type, for the next message."""
    out: list[dict[str, str]] = []
    if check is None:
        return out
    expected = declared or actual
    problem = content_type_mismatch(declared, actual)
    if problem is None:
        if expected not in decoded:
            decoded[expected] = read_payload(raw, expected)
        instance = decoded[expected]
        if isinstance(instance, Unreadable):
            problem = instance.text
        elif instance is not UNCHECKED:
            out += [{**v, "part": "payload"} for v in check.violations(instance)]
    if problem is not None:
        out.append({"path": "", "message": problem, "part": "payload"})
    return out


def accepts_payloads(check: SchemaCheck, content_type: str | None, raws: list[bytes]
                     ) -> list[bool]:
    """Whether the fast check accepts each payload, read as :func:`read_payload` reads it
    as ``content_type``, in one pass without keeping what was read. False means it may
    not: ask :meth:`SchemaCheck.is_valid`."""
    quick = check.quick
    if content_type is None or is_json(content_type):
        if quick is None:
            return [False] * len(raws)
        loads = orjson.loads

        def accepts(raw: bytes) -> bool:
            try:
                quick(loads(raw))
            except Exception:  # noqa: BLE001 - not JSON, or refused: jsonschema decides
                return False
            return True
    elif media_type(content_type).startswith("text/"):
        if quick is None:
            return [False] * len(raws)

        def accepts(raw: bytes) -> bool:
            try:
                quick(raw.decode("utf-8"))
            except Exception:  # noqa: BLE001 - as above
                return False
            return True
    else:
        return [True] * len(raws)  # a binary format: not checked
    return list(map(accepts, raws))


def _pointer(path: Any) -> str:
    return "".join(f"/{escape(str(p))}" for p in path)


def _short(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _kind(value: Any) -> str:
    return {list: "a list", str: "text", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)
