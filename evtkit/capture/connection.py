"""The NATS connection of a bus: where it goes, how it opens, and what it reports.

nats-py reports trouble through callbacks (errors, slow consumers, disconnects,
reconnects); :class:`ConnectionEvents` turns each into a row, so a trace says when the
connection was down and what the client dropped. :func:`open_client` connects within a
timeout and raises one clear :class:`~evtkit.errors.ConnectError` (no credentials in it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Awaitable, Callable
from functools import partial
from importlib.metadata import version
from typing import Any

from nats.aio.client import Client
from nats.errors import SlowConsumerError

from .. import env
from ..errors import ConnectError
from ..observation import Row
from ._nats_errors import FAILURES, nats_errors
from .contract import Owner
from .credentials import public_url, redact
from .recorder import Recorder
from .system import closed_connection

__all__ = ["ConnectionEvents", "client_metadata", "close_client", "open_client", "server_version",
           "telemetry_interval"]

log = logging.getLogger("evtkit")

Callback = Callable[..., Awaitable[None]]


def client_metadata(nc: Client) -> dict[str, Any]:
    """What a trace records about the connection: server version and client versions."""
    return {"server_version": server_version(nc), "nats_py_version": version("nats-py")}


def server_version(nc: Client) -> str | None:
    """The server's version string, e.g. ``2.15.1`` (nats-py only exposes it as text)."""
    match = re.search(r"v(\d[^\s>]*)", str(nc.connected_server_version))
    return match.group(1) if match else None


def telemetry_interval(setting: float | None) -> float | None:
    """Seconds between telemetry batches: ``setting`` (0: off), else
    ``$EVTKIT_TELEMETRY``, else None (off).

    Raises:
        ValueError: a negative setting, or an environment value that is not seconds > 0.
    """
    if setting is not None:
        if setting < 0:
            raise ValueError(f"telemetry must be seconds > 0 (or 0: off), not {setting}")
        return setting or None  # 0: off, whatever the environment says
    text = os.environ.get(env.EVTKIT_TELEMETRY)
    if not text:
        return None
    try:
        interval = float(text)
    except ValueError:
        interval = -1.0
    if not interval > 0:
        raise ValueError(f"{env.EVTKIT_TELEMETRY}={text!r} must be a number of seconds > 0")
    return interval


class ConnectionEvents:
    """nats-py's connection callbacks, recorded as rows of ``recorder`` by ``name``.

    Args:
        owner: finds the feature that owns a subscription id (for slow-consumer drops).
    """

    def __init__(self, recorder: Recorder, name: str,
                 owner: Callable[[int], Owner | None]) -> None:
        self.recorder = recorder
        self.name = name
        self.owner = owner
        self.client: Client | None = None
        self.url = ""
        self._current: tuple[int | None, int] = (None, 0)  # server's cid, in_msgs then
        self._previous: tuple[int | None, int] = (None, 0)  # cid, messages read on it

    def connected(self, nc: Client, url: str) -> None:
        """A connection is up: remember the server's id for it and what was read before."""
        self.client, self.url = nc, url
        self._current = (nc.client_id, nc.stats["in_msgs"])

    def callbacks(self, options: dict[str, Any]) -> dict[str, Callback]:
        """Ours for ``error_cb``, ``disconnected_cb`` and ``reconnected_cb``, each followed
        by the caller's own (taken out of ``options``)."""
        ours: dict[str, Callback] = {"error_cb": self.error,
                                     "disconnected_cb": self.disconnected,
                                     "reconnected_cb": self.reconnected}
        return {key: _chain(cb, options.pop(key, None)) for key, cb in ours.items()}

    async def error(self, exc: Exception) -> None:
        """A slow consumer becomes a ``drop`` row, anything else an ``error`` row."""
        if isinstance(exc, SlowConsumerError):
            owner = self.owner(exc.sid)
            self.recorder.add("drop", self.name, consumer=owner.consumer if owner else None,
                              subject=exc.subject.encode(),
                              extra=(1, "slow consumer: nats-py pending limit reached"))
            return
        text = redact(f"{type(exc).__name__}: {exc}")
        self.recorder.add("error", self.name, extra=text)
        log.debug("nats error on %s: %s", self.name, text)

    async def disconnected(self) -> None:
        """The connection went down: a ``disconnect`` row."""
        if self.client is not None:
            cid, before = self._current
            self._previous = (cid, self.client.stats["in_msgs"] - before)
        self.recorder.add("disconnect", self.name, extra="disconnected from the server")

    async def reconnected(self) -> None:
        """The connection is back: a ``reconnect`` row naming the server, and a ``drop``
        row when the server says it closed the old one as a slow consumer."""
        url = self.client.connected_url if self.client is not None else None
        where = public_url(url.geturl()) if url is not None else "?"
        self.recorder.add("reconnect", self.name, extra=f"reconnected to {where}")
        if self.client is not None:
            self.connected(self.client, self.url)
            await self._reconcile(*self._previous)

    async def _reconcile(self, cid: int | None, read: int) -> None:
        """Loss the client cannot see: a server closes a slow consumer's connection and
        discards what it still held. Its record of the closed connection (when this
        process may ask: its own embedded server) says why and how much it sent."""
        if cid is None:
            return
        record = await closed_connection(self.url, self.name, cid)
        reason = str((record or {}).get("reason") or "")
        if not reason.startswith("Slow Consumer"):
            return
        sent = record.get("out_msgs") if record else None
        lost = max(sent - read, 0) if isinstance(sent, int) else 0
        self.recorder.add("drop", self.name, extra=(lost, (
            f"the server closed this connection as a slow consumer ({reason}) at "
            f"{record.get('stop') if record else '?'}: it had sent {sent} messages, "
            f"{read} were read, {lost} lost in flight; messages published before the "
            "reconnect were not delivered at all")))

    def last_error(self) -> str | None:
        """The text of the latest ``error`` row of this connection, if any."""
        for row in reversed(self.recorder.rows):
            if row[Row.KIND] == "error" and row[Row.OBSERVER] == self.name:
                return str(row[Row.EXTRA])
        return None


def _chain(ours: Callback, theirs: Callback | None) -> Callback:
    if theirs is None:
        return ours

    async def both(*args: Any) -> None:
        await ours(*args)
        await theirs(*args)

    return both


async def open_client(servers: list[str], *, name: str, timeout: float,
                      events: ConnectionEvents, options: dict[str, Any]) -> Client:
    """Connect to ``servers`` within ``timeout`` seconds, reporting through ``events``.

    A server that refuses a login answers ``-ERR 'Authorization Violation'`` and closes the
    socket; now and then only the close is read, so a reset says what it may mean.

    Raises:
        ConnectError: no server could be reached (the message says why, without
            credentials).
    """
    nc = Client()
    events.client = nc
    url = ",".join(public_url(u) for u in servers)
    options = dict(options)
    callbacks = events.callbacks(options)
    error = partial(ConnectError, url=url)
    try:
        with nats_errors(error, f"could not connect to NATS at {url} within {timeout:g} s",
                         hide_cause=True):
            try:
                connecting = nc.connect(servers, name=name, **callbacks, **options)  # type: ignore[arg-type]
                await asyncio.wait_for(connecting, timeout)
                events.connected(nc, url)
            except BaseException:
                if not nc.is_closed:
                    await nc.close()
                raise
    except ConnectError as exc:
        last = events.last_error()
        reason = str(exc) if last is None else (
            f"could not connect to NATS at {url} within {timeout:g} s: {last}")
        if "ConnectionReset" in reason:  # the server's -ERR may have been lost with it
            reason += (" (the server closed the connection during the handshake; if it "
                       "requires authentication, check the credentials)")
        raise error(reason) from None
    return nc


async def close_client(nc: Client, timeout: float) -> None:
    """Drain ``nc`` (what it holds goes out, subscriptions end) for at most ``timeout``
    seconds, then close it whatever happened."""
    if nc.is_closed:
        return
    with contextlib.suppress(*FAILURES):  # nats-py's own drain timeout is 30 s
        await asyncio.wait_for(nc.drain(), timeout)
    if not nc.is_closed:
        await nc.close()
