"""``$ref`` resolution: a document with every reference replaced by what it names.

References are followed inside the document (``#/components/schemas/Order``) and to
neighbouring files (``schemas.yaml#/Order``, ``common/headers.json``), never further: a
reference that leaves the document's directory, names a network URL, or refers back to
itself (a cycle, also a recursive JSON Schema) is refused with a
:class:`~evtkit.errors.SpecError` naming the file and the JSON pointer of the reference.

Every place is resolved once: two references to the same target give the same Python
object, so callers can tell by identity which channel an operation names. Siblings of
``$ref`` are ignored, as AsyncAPI's Reference Object says. Values come out as JSON data
(string keys; YAML dates as ISO text).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ..errors import SpecError
from .reader import MAX_DEPTH, MAX_VALUES, parse, read

__all__ = ["Resolver", "escape", "unescape"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_MAX_FILES = 100

Place = tuple[str, str]
"""A file's key (its resolved path, or the name of the main document) and a JSON pointer."""


def escape(token: str) -> str:
    """One JSON pointer token: ``~`` → ``~0``, ``/`` → ``~1``."""
    return token.replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    """The inverse of :func:`escape`."""
    return token.replace("~1", "/").replace("~0", "~")


class Resolver:
    """Resolves the references of one document (and of the neighbouring files it names).

    Args:
        data: the main document, as parsed.
        name: how to call it in messages (its path as given, a URL, ``<dict>``).
        path: its local path, when it has one: other files are found relative to it and
            must stay inside its directory. Without one, only ``#...`` references work.
    """

    def __init__(self, data: Any, name: str, path: Path | None = None) -> None:
        self.main = str(path.resolve()) if path is not None else name
        self.root = path.resolve().parent if path is not None else None
        self.files: dict[str, Any] = {self.main: data}
        self.names: dict[str, str] = {self.main: name}
        self.done: dict[Place, Any] = {}
        self.active: dict[Place, str] = {}
        self.visited = 0

    def resolve(self) -> Any:
        """The main document with every ``$ref`` replaced by its target.

        Raises:
            SpecError: a reference that does not resolve, leaves the directory, names a
                URL or makes a cycle; nesting deeper than :data:`MAX_DEPTH`; more than
                :data:`MAX_VALUES` values once references are expanded.
        """
        try:
            out = self._walk(self.files[self.main], (self.main, ""), 0)
        except RecursionError as exc:
            raise SpecError(self.names[self.main], "",
                            f"nested more than {MAX_DEPTH} levels deep") from exc
        if _expanded(out) > MAX_VALUES:
            raise SpecError(self.names[self.main], "",
                            f"expands to more than {MAX_VALUES:,} values ($refs repeated "
                            "many times): refused")
        return out

    def fail(self, place: Place, problem: str) -> SpecError:
        """The error for ``problem`` at ``place``."""
        return SpecError(self.names.get(place[0], place[0]), place[1], problem)

    # -- walking ----------------------------------------------------------------------------

    def _walk(self, node: Any, place: Place, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise self.fail(place, f"nested more than {MAX_DEPTH} levels deep")
        self.visited += 1
        if self.visited > MAX_VALUES:
            raise SpecError(self.names[self.main], "",
                            f"has more than {MAX_VALUES:,} values: refused")
        if isinstance(node, dict) and isinstance(node.get("$ref"), str):
            return self._follow(node["$ref"], place, depth)
        if not isinstance(node, dict | list):
            return _scalar(node)
        if place in self.done:
            return self.done[place]
        if place in self.active:
            raise self.fail(place, "refers back to itself (a cycle)")
        self.active[place] = ""
        file, pointer = place
        out: Any
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                name = _key(key)
                out[name] = self._walk(value, (file, f"{pointer}/{escape(name)}"), depth + 1)
        else:
            out = [self._walk(v, (file, f"{pointer}/{i}"), depth + 1)
                   for i, v in enumerate(node)]
        del self.active[place]
        self.done[place] = out
        return out

    def _follow(self, ref: str, place: Place, depth: int) -> Any:
        """What the ``$ref`` at ``place`` names, resolved."""
        if place in self.done:
            return self.done[place]
        target, node = self._target(ref, place)
        if target in self.active or target == place:
            raise self.fail(place, f"$ref {ref!r} refers back to a place that contains it "
                                   "(a cycle; recursive schemas are not supported)")
        self.active[place] = ref
        try:
            out = self._walk(node, target, depth + 1)
        finally:
            del self.active[place]
        self.done[place] = out
        return out

    def _target(self, ref: str, place: Place) -> tuple[Place, Any]:
        """The place a reference names, and the (unresolved) value there."""
        where, _, fragment = ref.partition("#")
        if _SCHEME.match(where) or where.startswith("//"):
            raise self.fail(place, f"$ref {ref!r} names a URL: evtkit follows references "
                                   "inside the document and to files beside it only")
        file = place[0] if not where else self._file(ref, unquote(where), place)
        pointer = unquote(fragment)
        if pointer and not pointer.startswith("/"):
            raise self.fail(place, f"$ref {ref!r}: only JSON pointer fragments "
                                   "(#/components/...) are supported")
        return self._lookup(file, pointer, ref, place)

    def _file(self, ref: str, relative: str, place: Place) -> str:
        if self.root is None:
            raise self.fail(place, f"$ref {ref!r} names another file, but this document "
                                   "was not read from a local file: only #... references "
                                   "can be followed")
        if "\0" in relative:
            raise self.fail(place, f"$ref {ref!r} names a file with a NUL character in "
                                   "its name: no such file")
        path = (Path(place[0]).parent / relative).resolve()
        if not path.is_relative_to(self.root):
            raise self.fail(place, f"$ref {ref!r} leaves the document's directory "
                                   f"({self.root}): refused")
        key = str(path)
        if key not in self.files:
            if len(self.files) >= _MAX_FILES:
                raise self.fail(place, f"$ref {ref!r}: more than {_MAX_FILES} files "
                                       "referenced: refused")
            shown = str(Path(self.names[self.main]).parent / path.relative_to(self.root))
            try:
                data, _, _ = read(path)
            except SpecError as exc:
                raise self.fail(place, f"$ref {ref!r}: {shown}: {exc.problem}") from exc
            self.names[key] = shown
            try:
                self.files[key] = parse(data, shown)
            except SpecError as exc:
                exc.add_note(f"referenced from {self.names[place[0]]}: {place[1]}")
                raise
        return key

    def _lookup(self, file: str, pointer: str, ref: str, place: Place) -> tuple[Place, Any]:
        """Evaluate ``pointer`` in ``file``, following a ``$ref`` met on the way."""
        node = self.files[file]
        walked = ""
        tokens = pointer.split("/")[1:] if pointer else []
        hops = 0
        for i, raw in enumerate(tokens):
            token = unescape(raw)
            while (isinstance(node, dict) and isinstance(node.get("$ref"), str)
                   and token not in node):
                hops += 1
                if hops > MAX_DEPTH:
                    raise self.fail(place, f"$ref {ref!r}: too many references on the way")
                (file, walked), node = self._target(node["$ref"], (file, walked))
            found, node = _child(node, token)
            if not found:
                missing = "/".join(tokens[: i + 1])
                raise self.fail(place, f"$ref {ref!r} does not resolve (nothing at "
                                       f"/{missing} in {self.names[file]})")
            walked = f"{walked}/{escape(token)}"
        return (file, walked), node


def _child(node: Any, token: str) -> tuple[bool, Any]:
    if isinstance(node, dict):
        if token in node:
            return True, node[token]
        for key, value in node.items():  # YAML keys that are not text (200:, true:)
            if _key(key) == token:
                return True, value
        return False, None
    if isinstance(node, list) and token.isascii() and token.isdigit() \
            and int(token) < len(node):  # ASCII: "²".isdigit() is true, int("²") fails
        return True, node[int(token)]
    return False, None


def _key(key: Any) -> str:
    """A mapping key as JSON text (YAML allows numbers, booleans, null and dates)."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    if isinstance(key, dt.date):
        return key.isoformat()
    return str(key)


_SCALARS: tuple[type, ...] = (str, int, float, bool, type(None))


def _scalar(value: Any) -> Any:
    """A scalar as JSON data: YAML dates and times as ISO text, anything else as text."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset):
        return sorted(map(_key, value))
    return str(value)


def _expanded(root: Any) -> int:
    """How many values ``root`` holds counting shared objects once per use (linear time:
    each object's count is computed once)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        children: list[Any] = (list(node.values()) if isinstance(node, dict)
                               else node if isinstance(node, list) else [])
        if finished:
            sizes[id(node)] = 1 + sum(sizes.get(id(c), 1) for c in children)
            continue
        if id(node) in sizes or not children:
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if isinstance(c, dict | list))
    return sizes.get(id(root), 1)

