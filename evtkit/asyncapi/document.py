"""Reading an AsyncAPI 3.0 or 2.x document into a :class:`~evtkit.asyncapi.spec.Spec`.

::

    spec = load("api.yaml")          # or a file:// URL, another URL, or a dict

The two versions describe the same things differently:

======================  =====================================  ==============================
                        3.0                                    2.0 – 2.6
======================  =====================================  ==============================
channel                 ``channels.<id>.address``              the key of ``channels``
messages                ``channels.<id>.messages``             ``publish``/``subscribe``
                                                               ``.message`` (or ``oneOf``)
the app sends           ``operations.<id>.action: send``       ``subscribe`` (others may
                                                               subscribe to what it sends)
the app receives        ``action: receive``                    ``publish`` (others publish
                                                               to it)
message traits          merged, the message's own fields win   merged, the traits' fields win
server                  ``host`` + ``pathname``                ``url``
======================  =====================================  ==============================

In AsyncAPI a document describes one application; evtkit names it by ``x-application``
(on an operation, else on ``info``), else by ``info.title``: set ``x-application`` to the
connection name or ``ce-source`` the application uses on the wire.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import SpecError
from .reader import parse, read
from .reference import Resolver, escape
from .spec import Channel, Message, Operation, Server, Spec
from .validator import is_json_schema_format, schema_problem

__all__ = ["load"]

_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)(-.+)?$")


def load(source: str | os.PathLike[str] | Mapping[str, Any] | Spec) -> Spec:
    """Read an AsyncAPI 3.0 or 2.0–2.6 document (YAML or JSON).

    Args:
        source: a path, a ``file://`` URL, another URL pyarrow or fsspec can open (then
            only ``#...`` references are followed), or the document as a dict. A
            :class:`Spec` is returned as it is.

    Returns:
        The channels, messages, operations and servers it declares, ``$ref``s resolved
        and message traits merged.

    Raises:
        SpecError: the document cannot be used — the message names the file and the JSON
            pointer of the place (malformed YAML, not AsyncAPI, an unsupported version, a
            missing field, a ``$ref`` that does not resolve or leaves the directory, a
            payload that is not valid JSON Schema...).
    """
    if isinstance(source, Spec):
        return source
    path: Path | None = None
    if isinstance(source, str | os.PathLike):
        raw, name, path = read(source)
        data = parse(raw, name)
    else:  # a document already in memory (anything but a mapping is refused below)
        name, data = "<dict>", dict(source) if isinstance(source, Mapping) else source
    version = _version(data, name)
    doc = Resolver(data, name, path).resolve()
    return _Builder(doc, name, version).spec()


def _version(data: Any, name: str) -> str:
    if not isinstance(data, dict):
        raise SpecError(name, "", f"not an AsyncAPI document: the top level is "
                                  f"{type(data).__name__}, not a mapping")
    if "asyncapi" not in data:
        other = next((k for k in ("openapi", "swagger", "$schema") if k in data), None)
        hint = f" (it has '{other}': not an AsyncAPI document)" if other else ""
        raise SpecError(name, "", f"not an AsyncAPI document: no 'asyncapi' field{hint}")
    text = data["asyncapi"]
    found = _VERSION.match(text) if isinstance(text, str) else None
    if found is None:
        raise SpecError(name, "/asyncapi", f"{text!r} is not an AsyncAPI version "
                                           "(like '3.0.0' or '2.6.0')")
    major, minor = int(found[1]), int(found[2])
    if not ((major == 3 and minor == 0) or (major == 2 and minor <= 6)):
        raise SpecError(name, "/asyncapi", f"AsyncAPI {text} is not supported: evtkit reads "
                                           "3.0 and 2.0–2.6 documents (the AsyncAPI CLI's "
                                           "'asyncapi convert' converts others)")
    return text


class _Builder:
    """Builds the :class:`Spec` of one resolved document, naming places in errors."""

    def __init__(self, doc: dict[str, Any], name: str, version: str) -> None:
        self.doc = doc
        self.name = name
        self.version = version
        self.v3 = version.startswith("3.")

    def fail(self, pointer: str, problem: str) -> SpecError:
        return SpecError(self.name, pointer, problem)

    def mapping(self, value: Any, pointer: str, *, required: bool = False
                ) -> dict[str, Any]:
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            if value is None:
                raise self.fail(pointer.rpartition("/")[0],
                                f"missing required field {pointer.rpartition('/')[2]!r}")
            raise self.fail(pointer, f"must be a mapping, not {_kind(value)}")
        return value

    def text(self, obj: dict[str, Any], key: str, pointer: str, *, required: bool = False
             ) -> str | None:
        value = obj.get(key)
        if value is None:
            if required:
                raise self.fail(pointer, f"missing required field {key!r}")
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(f"{pointer}/{escape(key)}", f"must be text, not {_kind(value)}")
        return str(value)

    # -- the whole document -----------------------------------------------------------------

    def spec(self) -> Spec:
        info = self.mapping(self.doc.get("info"), "/info", required=True)
        title = self.text(info, "title", "/info", required=True) or ""
        version = self.text(info, "version", "/info", required=True) or ""
        self.application = (self.text(info, "x-application", "/info")
                            or self.text(self.doc, "x-application", "") or title)
        self.default_type = self.text(self.doc, "defaultContentType", "")
        if not self.v3 and "channels" not in self.doc:
            raise self.fail("", "missing required field 'channels'")
        channels, operations = self.v3_parts() if self.v3 else self.v2_parts()
        return Spec(title=title, version=version, asyncapi=self.version,
                    application=self.application, channels=channels, operations=operations,
                    servers=self.servers(), source=self.name,
                    default_content_type=self.default_type)

    def servers(self) -> dict[str, Server]:
        out = {}
        for name, node in self.mapping(self.doc.get("servers"), "/servers").items():
            p = f"/servers/{escape(name)}"
            node = self.mapping(node, p, required=True)
            host = self.text(node, "host" if self.v3 else "url", p, required=True) or ""
            out[name] = Server(name, host, self.text(node, "protocol", p, required=True) or "",
                               self.text(node, "pathname", p),
                               self.text(node, "protocolVersion", p),
                               self.text(node, "description", p))
        return out

    # -- 3.0 ----------------------------------------------------------------------------------

    def v3_parts(self) -> tuple[dict[str, Channel], dict[str, Operation]]:
        channels: dict[str, Channel] = {}
        channel_ids: dict[int, str] = {}
        message_ids: dict[int, tuple[str, str]] = {}
        for cid, node in self.mapping(self.doc.get("channels"), "/channels").items():
            p = f"/channels/{escape(cid)}"
            node = self.mapping(node, p, required=True)
            address = self.text(node, "address", p)
            messages = {}
            raw = self.mapping(node.get("messages"), f"{p}/messages")
            for mid, message in raw.items():
                messages[mid] = self.message(message, f"{p}/messages/{escape(mid)}", mid, cid)
                message_ids.setdefault(id(message), (cid, mid))
            params = tuple(self.mapping(node.get("parameters"), f"{p}/parameters"))
            self.check_address(cid, address, params, p)
            channels[cid] = Channel.of(cid, address, messages, params,
                                       self.text(node, "description", p))
            channel_ids.setdefault(id(node), cid)
        operations = {}
        for oid, node in self.mapping(self.doc.get("operations"), "/operations").items():
            p = f"/operations/{escape(oid)}"
            node = _merged(self.mapping(node, p, required=True), "traits", own_wins=True,
                           fail=lambda q, m, p=p: self.fail(f"{p}{q}", m))
            action = node.get("action")
            if action not in ("send", "receive"):
                raise self.fail(f"{p}/action" if "action" in node else p,
                                "missing required field 'action'" if action is None else
                                f"action must be 'send' or 'receive', not {action!r}")
            target = node.get("channel")
            if target is None:
                raise self.fail(p, "missing required field 'channel'")
            on = channel_ids.get(id(target))
            if on is None:
                raise self.fail(f"{p}/channel", "must be a $ref to a channel under "
                                                "/channels (like '#/channels/orderPlaced')")
            names = []
            listed = node.get("messages") or []
            if not isinstance(listed, list):
                raise self.fail(f"{p}/messages", f"must be a list, not {_kind(listed)}")
            for i, message in enumerate(listed):
                owner = message_ids.get(id(message))
                if owner is None or owner[0] != on:
                    raise self.fail(f"{p}/messages/{i}", "must be a $ref to a message of "
                                    f"its channel (like '#/channels/{on}/messages/...')")
                names.append(owner[1])
            app = self.text(node, "x-application", p) or self.application
            operations[oid] = Operation(oid, action, on, app, tuple(names))
        return channels, operations

    # -- 2.x ----------------------------------------------------------------------------------

    def v2_parts(self) -> tuple[dict[str, Channel], dict[str, Operation]]:
        components = self.mapping(self.doc.get("components"), "/components")
        known = {id(v): k for k, v in self.mapping(components.get("messages"),
                                                   "/components/messages").items()}
        channels: dict[str, Channel] = {}
        operations: dict[str, Operation] = {}
        for address, node in self.mapping(self.doc.get("channels"), "/channels",
                                          required=True).items():
            p = f"/channels/{escape(address)}"
            node = self.mapping(node, p, required=True)
            messages: dict[str, Message] = {}
            for verb, action in (("subscribe", "send"), ("publish", "receive")):
                if node.get(verb) is None:
                    continue
                q = f"{p}/{verb}"
                op = _merged(self.mapping(node[verb], q), "traits", own_wins=False,
                             fail=lambda r, m, q=q: self.fail(f"{q}{r}", m))
                oid = self.text(op, "operationId", q) or f"{address} {verb}"
                names: list[str] = []
                for where, message in self.v2_messages(op.get("message"), f"{q}/message"):
                    mid = (self.text(message, "messageId", where) if isinstance(message, dict)
                           else None) or known.get(id(message)) or (
                        self.text(message, "name", where) if isinstance(message, dict)
                        else None) or f"{oid} message {len(names) + 1}"
                    if mid not in messages:
                        messages[mid] = self.message(message, where, mid, address)
                    names.append(mid)
                app = self.text(op, "x-application", q) or self.application
                operations[oid] = Operation(oid, action, address, app, tuple(names))
            params = tuple(self.mapping(node.get("parameters"), f"{p}/parameters"))
            self.check_address(address, address, params, p)
            channels[address] = Channel.of(address, address, messages, params,
                                           self.text(node, "description", p))
        return channels, operations

    def check_address(self, cid: str, address: str | None, params: tuple[Any, ...],
                      pointer: str) -> None:
        """Refuse an address that is no NATS subject pattern (``>`` not last) or whose
        parameter names are not ``[A-Za-z0-9_-]+`` (as AsyncAPI requires)."""
        if address is None:
            return
        where = f"{pointer}/address" if self.v3 else pointer
        if ">" in address.split(".")[:-1]:
            raise self.fail(where, f"channel {cid!r}: address {address!r} has '>' before "
                                   "its last token: NATS matches '>' only at the end")
        named = [("address", n) for n in _PARAM_IN_ADDRESS.findall(address)]
        named += [("parameters", n) for n in params]
        for place, name in named:
            if not isinstance(name, str) or not _PARAM_NAME.fullmatch(name):
                raise self.fail(where if place == "address" else f"{pointer}/parameters",
                                f"channel {cid!r}: parameter name {name!r} is not letters, "
                                "digits, '_' or '-' (AsyncAPI parameter names)")

    def v2_messages(self, node: Any, pointer: str) -> list[tuple[str, Any]]:
        if node is None:
            return []
        if isinstance(node, dict) and "oneOf" in node:
            options = node["oneOf"]
            if not isinstance(options, list):
                raise self.fail(f"{pointer}/oneOf", f"must be a list, not {_kind(options)}")
            return [(f"{pointer}/oneOf/{i}", m) for i, m in enumerate(options)]
        return [(pointer, node)]

    # -- messages -----------------------------------------------------------------------------

    def message(self, node: Any, pointer: str, mid: str, channel: str) -> Message:
        node = _merged(self.mapping(node, pointer, required=True), "traits",
                       own_wins=self.v3, fail=lambda q, m: self.fail(f"{pointer}{q}", m))
        payload, schema_format = self.schema(node, "payload", pointer)
        headers, _ = self.schema(node, "headers", pointer)
        correlation = node.get("correlationId")
        location = None
        if correlation is not None:
            q = f"{pointer}/correlationId"
            location = self.text(self.mapping(correlation, q), "location", q, required=True)
        return Message(
            id=mid, name=self.text(node, "name", pointer) or mid, channel=channel,
            payload=payload, headers=headers,
            content_type=self.text(node, "contentType", pointer) or self.default_type,
            correlation_id=location, schema_format=schema_format,
            title=self.text(node, "title", pointer) or self.text(node, "summary", pointer))

    def schema(self, message: dict[str, Any], part: str, pointer: str
               ) -> tuple[Any, str | None]:
        """A message part's JSON Schema (None if absent or not JSON Schema), and its schema
        format when that is something else."""
        if part not in message or message[part] is None:
            return None, None
        schema, where = message[part], f"{pointer}/{part}"
        # (2.x's schemaFormat is the payload's; headers are always AsyncAPI Schema)
        schema_format = None if self.v3 or part == "headers" else self.text(
            message, "schemaFormat", pointer)
        if self.v3 and isinstance(schema, dict) and "schemaFormat" in schema \
                and "schema" in schema:  # a Multi Format Schema Object
            schema_format = self.text(schema, "schemaFormat", where)
            schema, where = schema["schema"], f"{where}/schema"
        if not is_json_schema_format(schema_format):
            return None, schema_format
        problem = schema_problem(schema)
        if problem is not None:
            raise self.fail(where + problem[0], problem[1])
        return schema, None


_PARAM_IN_ADDRESS = re.compile(r"\{([^{}]*)\}")
_PARAM_NAME = re.compile(r"[A-Za-z0-9_\-]+")


def _merged(node: dict[str, Any], key: str, *, own_wins: bool, fail: Any) -> dict[str, Any]:
    """``node`` with its traits (``node[key]``) merged in by JSON Merge Patch, in order:
    the node's own fields win in 3.0 (``own_wins``), the traits' in 2.x."""
    traits = node.get(key)
    if traits is None:
        return node
    if not isinstance(traits, list):
        raise fail(f"/{key}", f"must be a list, not {_kind(traits)}")
    for i, trait in enumerate(traits):
        if not isinstance(trait, dict):
            raise fail(f"/{key}/{i}", f"a trait must be a mapping, not {_kind(trait)}")
    own = {k: v for k, v in node.items() if k != key}
    out: dict[str, Any] = {} if own_wins else dict(own)
    for patch in [*traits, own] if own_wins else traits:
        for name, value in patch.items():
            out[name] = _merge_patch(out.get(name), value)
    return {k: v for k, v in out.items() if v is not None}


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: ``patch`` applied to ``target`` (null in a patch removes a member)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = _merge_patch(out.get(name), value)
    return out


def _kind(value: Any) -> str:
    return {list: "a list", dict: "a mapping", str: "text", int: "a number",
            float: "a number", bool: "true/false", type(None): "null"}.get(
        type(value), type(value).__name__)
