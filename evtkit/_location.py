"""Where a trace lives when it is not a local path: a URL on a filesystem pyarrow knows
(``s3://``, ``gs://``, ``abfs://``, ``hdfs://``, ``file://``) or, failing that, one fsspec
knows (``memory://``, ``sftp://``, ...; through :class:`pyarrow.fs.FSSpecHandler`).

::

    where = resolve("s3://bucket/run.parquet?region=eu-west-1")
    where.parts("part-*.parquet")            # the parts of a directory trace, sorted
    where.put("part-000000.parquet", write)  # whole parts only (see Location.put)

Credentials a URL carries (``user:password@``, query tokens) stay out of everything evtkit
shows: :attr:`Location.url` is the URL without them, and every error a filesystem raises is
translated here, in one place, into one line without them (the error type by the caller's
choice: :class:`OSError` when writing, :class:`~evtkit.errors.TraceFormatError` when reading).
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from .errors import EvtkitError, TraceFormatError

__all__ = ["Location", "as_fsspec", "is_url", "local", "public_url", "resolve"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss",
                           "r2", "http", "https"})
"""Schemes whose objects appear whole when a write completes (a PUT is atomic) and cannot
be renamed cheaply: parts are written under their final names there."""
_NAMED_USER = frozenset({"abfs", "abfss", "az"})  # user@ names the container, not a secret
_PLAIN = frozenset({"region", "scheme", "endpoint_override", "allow_bucket_creation",
                    "allow_bucket_deletion"})  # query keys that hold no secret (pyarrow's S3)

Fail = Callable[[str, str], Exception]
"""Builds the error to raise from ``(public URL, problem)``."""


def is_url(path: object) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) rather than a local path."""
    return isinstance(path, str) and _SCHEME.match(path) is not None


def public_url(url: str) -> str:
    """``url`` without credentials: no password, no query, no fragment, and no user name
    except where it names a container (``abfs://container@account...``)."""
    try:
        parts = urlsplit(url)
        user = parts.username if parts.scheme.lower() in _NAMED_USER else None
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return f"{url.split('://', 1)[0]}://(an unreadable URL)"
    netloc = f"{user}@{host}" if user else host
    return f"{parts.scheme}://{netloc}{parts.path}"  # urlunsplit would drop an empty netloc


def _secrets(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
        found: list[str | None] = [parts.password, parts.fragment, *(
            v for k, v in parse_qsl(parts.query) if k.lower() not in _PLAIN)]
        if parts.scheme.lower() not in _NAMED_USER:
            found.append(parts.username)
    except ValueError:
        found = [url.split("://", 1)[-1]]
    kept: list[str] = [s for s in found if s]
    return sorted({*kept, *map(unquote, kept)}, key=len, reverse=True)


def _scrub(text: str, url: str) -> str:
    """The first line of ``text`` with ``url`` shown without credentials, and no secret
    of it anywhere."""
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    if not is_url(url):
        return line
    line = line.replace(url, public_url(url))
    for secret in _secrets(url):
        line = line.replace(secret, "***")
    return line


def _bad(url: str, problem: str) -> Exception:
    return ValueError(f"{url}: {problem}")


def _broken(url: str, problem: str) -> Exception:
    return OSError(f"{url}: {problem}")


@dataclass(frozen=True, slots=True)
class Location:
    """A file or directory on a filesystem, named by a URL.

    Attributes:
        fs: the pyarrow filesystem.
        path: the path on ``fs``.
        url: the URL without credentials, for messages and metadata.
        put_direct: write final names directly (object stores) instead of a temporary
            name moved into place.
        fail: builds the error a filesystem's problem becomes (see :meth:`io`).
        raw: the URL as given, credentials included: used, and scrubbed from messages.
    """

    fs: pafs.FileSystem
    path: str
    url: str
    put_direct: bool
    fail: Fail = field(default=_broken, repr=False)
    raw: str = field(default="", repr=False)

    @property
    def local(self) -> bool:
        """Whether it is on this machine's filesystem (a ``file://`` URL)."""
        return self.fs.type_name == "local"

    def name(self, path: str) -> str:
        """What to call ``path`` (on :attr:`fs`, at or under :attr:`path`) in messages."""
        if path.startswith(self.path):
            return self.url.rstrip("/") + path[len(self.path.rstrip("/")):]
        return self.url

    def child(self, name: str) -> str:
        """The path of ``name`` inside this directory."""
        return f"{self.path.rstrip('/')}/{name}"

    @contextmanager
    def io(self, doing: str) -> Iterator[None]:
        """Translate whatever the filesystem raises inside into ``fail(url, problem)``:
        one line, without credentials. Trace errors pass, named by URL."""
        try:
            yield
        except TraceFormatError as exc:
            if exc.path.startswith(self.path) and not exc.path.startswith(self.url):
                raise TraceFormatError(self.name(exc.path), exc.problem) from exc
            raise
        except EvtkitError:
            raise
        except Exception as exc:  # noqa: BLE001 - any filesystem's errors (fsspec, botocore...)
            reason = _scrub(str(exc), self.raw) or type(exc).__name__
            raise self.fail(self.url, f"{doing}: {reason}") from exc

    def kind(self) -> str | None:
        """``"file"``, ``"directory"``, or None when nothing is there."""
        info = self.fs.get_file_info(self.path)
        if info.type == pafs.FileType.NotFound:
            return None
        return "directory" if info.type == pafs.FileType.Directory else "file"

    def parts(self, pattern: str) -> list[str]:
        """Sorted paths of the files in this directory whose names match ``pattern``."""
        selector = pafs.FileSelector(self.path, allow_not_found=True)
        return sorted(info.path for info in self.fs.get_file_info(selector)
                      if info.type == pafs.FileType.File
                      and fnmatch.fnmatchcase(info.base_name, pattern))

    def make_directory(self) -> None:
        """Create the directory (object stores have none to create)."""
        if not self.put_direct:
            self.fs.create_dir(self.path, recursive=True)

    def remove(self, paths: list[str]) -> None:
        """Delete these files."""
        for path in paths:
            self.fs.delete_file(path)

    def put(self, name: str, write: Callable[[Any], None]) -> None:
        """Write the file ``name`` in this directory so that readers only ever see it
        whole: ``write(stream)`` fills a temporary name that is then moved into place, or,
        on object stores, a buffer sent in one PUT (atomic there)."""
        target = self.child(name)
        if self.put_direct:
            buffer = pa.BufferOutputStream()
            write(buffer)
            with self.fs.open_output_stream(target, compression=None) as out:
                out.write(buffer.getvalue())
            return
        tmp = self.child(f".{name}.tmp")
        with self.fs.open_output_stream(tmp, compression=None) as out:
            write(out)
        self.fs.move(tmp, target)

    def fsspec(self) -> Any:
        """The filesystem as fsspec sees it (what DuckDB's ``register_filesystem`` takes);
        its ``unstrip_protocol(path)`` names a file on it."""
        handler = getattr(self.fs, "handler", None)
        if isinstance(handler, pafs.FSSpecHandler):
            return handler.fs
        return as_fsspec(self.fs, self.url.split("://", 1)[0].lower())


def as_fsspec(fs: pafs.FileSystem, scheme: str) -> Any:
    """A pyarrow filesystem as an fsspec filesystem whose protocol is ``scheme``: paths
    ``scheme://<path on fs>`` (fsspec's own wrapper would parse the path as a URL and, for
    some stores, lose its first part)."""
    return _wrapper()(fs, scheme)


@functools.cache
def _wrapper() -> type:
    from fsspec.implementations.arrow import ArrowFSWrapper

    class Wrapper(ArrowFSWrapper):
        def __init__(self, fs: pafs.FileSystem, scheme: str, **options: Any) -> None:
            self.scheme = scheme
            super().__init__(fs, **options)

        @property
        def protocol(self) -> str:
            return self.scheme

        def _strip_protocol(self, path: Any) -> str:
            path = str(path)
            return path.removeprefix(f"{self.scheme}://")

        def unstrip_protocol(self, name: str) -> str:
            return name if name.startswith(f"{self.scheme}://") else f"{self.scheme}://{name}"

    return Wrapper


def local(path: str) -> Location:
    """A local path as a :class:`Location` (errors name it as given)."""
    return Location(pafs.LocalFileSystem(), os.path.abspath(path), path, False, _broken, path)


def resolve(url: str, fail: Fail | None = None) -> Location:
    """The filesystem and path of ``url``: pyarrow's own filesystems first, then fsspec's.

    Args:
        url: ``scheme://...``; credentials in it are used, never shown.
        fail: builds the error for a problem (default: ValueError for a URL evtkit cannot
            use, OSError for a store it cannot reach).

    Raises:
        ValueError: an unknown scheme or a malformed URL (or what ``fail`` builds).
        OSError: the store cannot be reached (or what ``fail`` builds).
    """
    public = public_url(url)
    scheme = url.split("://", 1)[0].lower()
    try:  # s3a:// (Hadoop's name, what Spark reads) is S3 to pyarrow; names keep the scheme
        fs, path = pafs.FileSystem.from_uri("s3" + url[3:] if scheme == "s3a" else url)
    except pa.ArrowInvalid as exc:
        if not str(exc).startswith("Unrecognized filesystem type"):
            raise (fail or _bad)(public, _scrub(str(exc), url)) from exc
        fs, path = _from_fsspec(url, public, fail)
    except Exception as exc:  # noqa: BLE001 - region lookups, missing libraries (libhdfs)
        raise (fail or _broken)(public, f"cannot reach it: {_scrub(str(exc), url)}") from exc
    return Location(fs, path, public, scheme in OBJECT_STORES, fail or _broken, url)


def _from_fsspec(url: str, public: str, fail: Fail | None) -> tuple[pafs.FileSystem, str]:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ValueError, ImportError) as exc:  # an unknown protocol, a missing package
        scheme = url.split("://", 1)[0]
        problem = (f"unknown URL scheme {scheme!r}: use a local path or a URL pyarrow or "
                   "fsspec can open (s3://, gs://, abfs://, file://, memory://, ...)"
                   if "Protocol not known" in str(exc) else _scrub(str(exc), url))
        raise (fail or _bad)(public, problem) from exc
    except Exception as exc:  # noqa: BLE001 - whatever the filesystem raises connecting
        raise (fail or _broken)(public, f"cannot reach it: {_scrub(str(exc), url)}") from exc
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path
