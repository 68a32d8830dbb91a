"""nats-py's errors become evtkit's in one place (as httpx's ``map_exceptions`` does).

::

    with nats_errors(JetStreamError, f"could not create stream {name!r}",
                     {NotFoundError: "no such stream: create it first"}):
        await js.add_stream(...)

Inside the block, a failure of the client (:data:`FAILURES`) is raised again as the given
evtkit error: with the message of the first matching entry of ``specific`` if any, else
``"<what>: <the server's words>"``, credentials removed, the original chained as the cause.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import nats

from ..errors import EvtkitError
from .credentials import redact

__all__ = ["FAILURES", "nats_errors", "reason"]

FAILURES: tuple[type[BaseException], ...] = (nats.errors.Error, TimeoutError, OSError)
"""What a NATS request can fail with: the client's errors, timeouts and socket errors."""


def reason(exc: BaseException) -> str:
    """The most specific words about ``exc`` (the server's description when it gave one),
    credentials removed."""
    text = getattr(exc, "description", None) or str(exc) or type(exc).__name__
    return redact(str(text))


@contextlib.contextmanager
def nats_errors(error: Callable[[str], EvtkitError], what: str,
                specific: Mapping[type[BaseException], str] | None = None, *,
                hide_cause: bool = False) -> Iterator[None]:
    """Raise failures of the block as ``error`` (see the module docstring).

    Args:
        error: the evtkit error class (or a factory taking the message).
        what: what was being done, e.g. ``could not create stream 'ORDERS'``.
        specific: messages for particular nats-py errors (checked in order), e.g. a hint
            for ``NoRespondersError``.
        hide_cause: do not chain the original (a connection error may quote a URL with
            credentials in its traceback); the message names its type instead.
    """
    try:
        yield
    except FAILURES as exc:
        message = next((m for kind, m in (specific or {}).items() if isinstance(exc, kind)),
                       f"{what}: {reason(exc)}")
        if hide_cause:
            raise error(message) from None
        raise error(message) from exc
