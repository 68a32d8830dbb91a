"""What looks like a credential, in one definition: by the name it is stored under
(``Authorization``, ``password``, ``api_key``, ``X-Session``...) or by its shape (a
``Bearer``/``Basic`` value, a JWT, a URL with a user and password, a known key prefix),
also inside text that is itself JSON or a ``k=v&k=v`` form.

Used where evtkit shows values it read from traffic: examples in inferred documents
(:mod:`~evtkit.asyncapi.infer_message`) and violation messages
(:class:`~evtkit.asyncapi.validator.SchemaCheck`), which reach reports, the CLI and
:class:`~evtkit.errors.ContractError`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

import orjson

__all__ = ["MASK", "contains_secret", "mask_message", "secret_name", "secret_text"]

MASK = "'***'"
"""What a secret-looking value is shown as in a message."""

_NAME = re.compile(
    r"auth|cookie|token|secret|passw|pwd|passphrase|credential|signature|jwt|bearer|nkey|"
    r"private|session|(?:api|access|secret|private|signing)key", re.IGNORECASE)
# "key" as a word of the name (key, api_key, x-access-key, apiKey), not inside "monkey"
_KEY = re.compile(r"(?:^|[-_.\s])(?i:key)(?![a-z])|(?<=[a-z])Key(?![a-z])")
_VALUE = re.compile(
    r"\s*(?:(?:bearer|basic|digest|token|nkey|negotiate)\s"  # an Authorization value
    r"|eyJ[\w-]*\.[\w-]+\.[\w-]*\s*$"  # a JWT (its header is base64url of '{"')
    r"|[\w-]{16,}\.[\w-]{16,}\.[\w-]{16,}\s*$"  # a JWT/JWS without the usual header
    r"|(?:sk|pk|rk)_(?:live|test)_|gh[pousr]_|xox[abposr]-|AKIA[0-9A-Z]{12})",
    re.IGNORECASE)
_USERINFO = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s?#@]+@", re.IGNORECASE)
_FORM = re.compile(r"[^=&\s]+=[^&]*(?:&[^=&\s]+=[^&]*)*")
_MAX_NESTED_TEXT = 4  # JSON in a string in JSON...: deeper is called secret


def secret_name(name: str) -> bool:
    """Whether a field or header named ``name`` holds credentials."""
    return _NAME.search(name) is not None or _KEY.search(name) is not None


def secret_text(text: str, _nested: int = 0) -> bool:
    """Whether ``text`` looks like (or contains) a credential: by its shape, or because it
    is JSON or a ``k=v&k=v`` form with a credential in it."""
    if _VALUE.match(text) or _USERINFO.search(text):
        return True
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            inner = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            return False
        return _nested >= _MAX_NESTED_TEXT or contains_secret(inner, _nested + 1)
    if "=" in stripped and _FORM.fullmatch(stripped):
        return any(secret_name(k) or secret_text(v, _nested + 1)
                   for k, v in parse_qsl(stripped, keep_blank_values=True))
    return False


def contains_secret(value: Any, _nested: int = 0) -> bool:
    """Whether JSON data has a credential anywhere: a key with a secret name, or a
    string that looks like one (:func:`secret_text`)."""
    todo = [value]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                if isinstance(key, str) and secret_name(key):
                    return True
                todo.append(item)
        elif isinstance(node, list | tuple):
            todo.extend(node)
        elif isinstance(node, str) and secret_text(node, _nested):
            return True
    return False


def mask_message(message: str, path: list[Any], instance: Any) -> str:
    """``message`` (about ``instance``, found at ``path``) with the instance — and any
    secret-looking text inside it — shown as :data:`MASK` when the path names a credential
    or the value looks like one."""
    named = any(isinstance(p, str) and secret_name(p) for p in path)
    if not named and not contains_secret(instance):
        return message
    try:
        shown = repr(instance)
    except ValueError:  # an integer too long to write: jsonschema did not quote it either
        shown = "\0"
    if message.startswith(shown):  # jsonschema's messages begin with the instance
        message = MASK + message[len(shown):]
    if isinstance(instance, str | dict | list):  # quoted: safe to replace anywhere
        message = message.replace(shown, MASK)
    todo = [instance]
    while todo:  # what is still quoted (a truncated or partial repr)
        node = todo.pop()
        if isinstance(node, dict):
            todo.extend(node.values())
            if named:
                continue
            for key, item in node.items():
                if isinstance(key, str) and secret_name(key) and isinstance(item, str):
                    message = message.replace(repr(item), MASK)
        elif isinstance(node, list | tuple):
            todo.extend(node)
        elif isinstance(node, str) and (named or secret_text(node)):
            message = message.replace(repr(node), MASK)
    return message
