"""AsyncAPI documents read as data: bytes from a file or URL, then JSON or YAML, safely.

Documents are untrusted input, so reading is bounded: at most :data:`MAX_BYTES` per file,
at most :data:`MAX_VALUES` values once YAML aliases are expanded (an alias "bomb" — a few
lines that expand to billions of values — is refused before it is built), at most
:data:`MAX_DEPTH` levels of nesting. Whatever goes wrong becomes a
:class:`~evtkit.errors.SpecError` naming the file.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import orjson
import yaml

from .._location import is_url, resolve
from ..errors import SpecError

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_VALUES", "parse", "read"]

MAX_BYTES = 16 * 1024**2
"""Largest document file read (16 MiB): AsyncAPI documents are far smaller."""
MAX_VALUES = 1_000_000
"""Most values (mappings, lists and scalars) a document may expand to, counting every use
of a YAML alias or ``$ref`` as a copy."""
MAX_DEPTH = 100
"""Deepest nesting accepted, ``$ref`` targets included."""

# libyaml's parser (when PyYAML has it) is fast and limits nesting itself.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read(source: str | os.PathLike[str]) -> tuple[bytes, str, Path | None]:
    """The bytes of the document at ``source`` (a path, a ``file://`` URL or another URL
    pyarrow or fsspec can open), the name to show in messages and, for a local file, its
    path (whose directory neighbouring ``$ref`` files must stay inside).

    Raises:
        SpecError: missing, unreadable or larger than :data:`MAX_BYTES`.
    """
    if is_url(source) and str(source).lower().startswith("file://"):
        from urllib.parse import unquote, urlsplit

        source = unquote(urlsplit(str(source)).path)
    if is_url(source):
        url = str(source)
        where = resolve(url, fail=lambda public, problem: SpecError(public, "", problem))
        with where.io("cannot read it"), where.fs.open_input_stream(where.path) as stream:
            data = stream.read(MAX_BYTES + 1)
        _check_size(data, where.url)
        return data, where.url, None
    path = Path(source)
    name = os.fspath(source)
    if "\0" in name:
        raise SpecError(name, "", "no such file (a file name cannot contain a NUL character)")
    try:
        data = _read_regular(path)
    except FileNotFoundError as exc:
        raise SpecError(name, "", "no such file") from exc
    except IsADirectoryError as exc:
        raise SpecError(name, "", "is a directory, not an AsyncAPI document") from exc
    except OSError as exc:
        raise SpecError(name, "", f"cannot read it: {exc.strerror or exc}") from exc
    _check_size(data, name)
    return data, name, path


def _read_regular(path: Path) -> bytes:
    """The first :data:`MAX_BYTES` + 1 bytes of ``path``, which must be a regular file: a
    FIFO, a device such as /dev/zero or a socket could block or never end. Opened without
    blocking and checked on the open file, so it cannot be swapped in between."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory")
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, device or socket): "
                                        "evtkit reads documents from regular files only")
        with os.fdopen(fd, "rb") as file:
            fd = -1
            return file.read(MAX_BYTES + 1)
    finally:
        if fd >= 0:
            os.close(fd)


def _check_size(data: bytes, name: str) -> None:
    if len(data) > MAX_BYTES:
        raise SpecError(name, "", f"larger than {MAX_BYTES // 1024**2} MiB: not read "
                                  "(AsyncAPI documents are far smaller)")


def parse(data: bytes | str, name: str) -> Any:
    """A JSON or YAML document as Python data (JSON is tried first when it looks like JSON;
    YAML otherwise, or when that fails: YAML then says where the problem is).

    Raises:
        SpecError: not UTF-8, not valid YAML/JSON, more than one YAML document, an alias
            bomb (more than :data:`MAX_VALUES` values expanded) or nested deeper than
            :data:`MAX_DEPTH`.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SpecError(name, "", f"not UTF-8 text (byte {exc.start})") from exc
    else:
        text = data
    if text.lstrip()[:1] in ("{", "["):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # YAML flow style, or broken JSON: YAML reports where
    return _yaml(text, name)


def _yaml(text: str, name: str) -> Any:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError(name, "", "empty: no document in it")
        _check_nodes(node, name)
        return loader.construct_document(node)
    except SpecError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = exc.problem or exc.context or "malformed"
        raise SpecError(name, "", f"not valid YAML: {problem}{where}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(name, "", f"not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise SpecError(name, "", f"nested more than {MAX_DEPTH} levels deep") from exc
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date like 2024-13-45
        raise SpecError(name, "", f"a value YAML cannot build: {exc}") from exc
    finally:
        loader.dispose()


def _check_nodes(root: yaml.Node, name: str) -> None:
    """Refuse a YAML node graph that is recursive, too deep, or expands (every alias
    counted as a copy of what it names) to more than :data:`MAX_VALUES` values — before
    anything is built from it. Iterative: deep input cannot exhaust the Python stack."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        children = _children(node)
        if finished:
            on_path.discard(key)
            total = 1 + sum(sizes[id(child)] for child in children)
            if total > MAX_VALUES:
                raise SpecError(name, "", f"expands to more than {MAX_VALUES:,} values "
                                          "(YAML aliases repeated many times): refused")
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise SpecError(name, "", "a YAML alias refers to a mapping or list that "
                                      "contains it (a recursive structure): refused")
        on_path.add(key)
        if len(on_path) > MAX_DEPTH:
            raise SpecError(name, "", f"nested more than {MAX_DEPTH} levels deep")
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []
