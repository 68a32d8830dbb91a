"""JSON Schema checks compiled once per schema: a fast yes, and exact violations on a no.

:class:`SchemaCheck` asks a generated validator (``fastjsonschema``, about 15× faster than
``jsonschema`` on typical event payloads) whether an instance is valid; only when it says
no does ``jsonschema`` — the reference — list every violation with its JSON pointer. The
fast path is used for draft-04/06/07 schemas (AsyncAPI's default dialect is a draft-07
superset), without format assertions and without filling in defaults, so it never accepts
what ``jsonschema`` refuses on the schemas evtkit checks; ``jsonschema`` has the last word.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema
from jsonschema.validators import validator_for

from .reference import escape

__all__ = ["MAX_VIOLATIONS", "SchemaCheck", "coerce_headers", "is_json_schema_format",
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
    return None


class SchemaCheck:
    """One JSON Schema, compiled once, applied to many instances.

    Args:
        schema: a valid JSON Schema (see :func:`schema_problem`).
    """

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self._reference = _dialect(schema)(schema)
        self._fast = _fast(schema)

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
            return [{"path": "", "message": f"schema could not be applied: {_short(str(exc))}"}]
        out = [{"path": _pointer(e.absolute_path), "message": _short(e.message)}
               for e in errors[:MAX_VIOLATIONS]]
        if len(errors) > MAX_VIOLATIONS:
            out.append({"path": "", "message": f"and {len(errors) - MAX_VIOLATIONS} more"})
        return out


def _fast(schema: Any) -> Callable[[Any], Any] | None:
    """A generated validator for draft-04/06/07 schemas, or None (other dialects, or a
    schema the generator refuses): then ``jsonschema`` alone decides."""
    if _dialect(schema) not in _FAST_DRAFTS:
        return None
    try:
        import fastjsonschema

        return fastjsonschema.compile(
            schema, handlers=_NO_FETCH, use_default=False, use_formats=False)
    except Exception:  # noqa: BLE001 - not installed, or refuses this schema
        return None


def _refuse(uri: str) -> Any:
    raise ValueError(f"{uri}: evtkit does not fetch schemas")


# References are resolved before schemas are compiled; none may reach the network.
_NO_FETCH = {scheme: _refuse for scheme in ("http", "https", "file", "ftp", "")}


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


def _pointer(path: Any) -> str:
    return "".join(f"/{escape(str(p))}" for p in path)


def _short(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _kind(value: Any) -> str:
    return {list: "a list", str: "text", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)
