"""The NATS system account: asking the servers themselves about connections.

The servers answer ``$SYS.REQ.SERVER.PING.<what>`` (CONNZ, SUBSZ...) from a connection of
the system account, once per server of a cluster. The embedded server has that account and
evtkit holds its password (also for a bus connected to it by URL, in the same process);
for other servers pass the system user's credentials (used for the request only, never
stored). :func:`closed_connection` is what a reconnecting bus asks: why the server closed
its previous connection, and how many messages it had sent on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from nats.aio.client import Client

from ..errors import SystemAccountError
from ._nats_errors import FAILURES, nats_errors
from .server import APP_ACCOUNT, EmbeddedServer

__all__ = ["closed_connection", "embedded_credentials", "ping", "system_connection"]

CLOSED = 1
"""CONNZ ``state`` for closed connections (the server's ConnState enum)."""


def embedded_credentials(url: str) -> tuple[dict[str, Any], str] | None:
    """System-account options and the application account of the embedded server of this
    process running at ``url``; None when there is none (or it has no accounts)."""
    server = EmbeddedServer.running_at(url)
    if server is None or not server.accounts:
        return None
    return server.system_options(), APP_ACCOUNT


async def _quiet(exc: Exception) -> None:
    """nats-py logs connection errors itself by default; the caller gets one clear error."""


@contextlib.asynccontextmanager
async def system_connection(url: str, name: str, **system: Any) -> AsyncIterator[Client]:
    """A short-lived connection with the system account's credentials ``system``.

    Raises:
        SystemAccountError: the server refused them (no credentials in the message).
    """
    nc = Client()
    try:
        with nats_errors(SystemAccountError, f"could not connect as the system account to "
                                             f"{url} (check the credentials)", hide_cause=True):
            await nc.connect(url.split(","), name=name, allow_reconnect=False,
                             connect_timeout=2, max_reconnect_attempts=0, error_cb=_quiet,
                             **system)
        yield nc
    finally:
        await nc.close()  # also after a refused login: no socket is left open


async def ping(nc: Client, what: str, body: dict[str, Any], timeout: float,
               enough: Callable[[dict[str, Any]], bool] | None = None) -> list[Any]:
    """Ask every server (``$SYS.REQ.SERVER.PING.<what>``) and collect answers for
    ``timeout`` seconds (a cluster answers once per server), or until an answer is
    ``enough``."""
    answers: list[Any] = []
    found = asyncio.Event()
    inbox = nc.new_inbox()

    async def collect(msg: Any) -> None:
        with contextlib.suppress(orjson.JSONDecodeError):
            answer = orjson.loads(msg.data)
            if isinstance(answer, dict):
                answers.append(answer)
                if enough is not None and enough(answer):
                    found.set()

    sub = await nc.subscribe(inbox, cb=collect)
    await nc.publish(f"$SYS.REQ.SERVER.PING.{what}", orjson.dumps(body), reply=inbox)
    with contextlib.suppress(TimeoutError):  # how long the servers get to answer
        await asyncio.wait_for(found.wait(), timeout)
    await sub.unsubscribe()
    return answers


async def closed_connection(url: str, name: str, cid: int, timeout: float = 0.5
                            ) -> dict[str, Any] | None:
    """What the server recorded about the closed connection ``cid`` named ``name``
    (``reason``, ``out_msgs``, ``stop``...), when this process can ask as the system
    account (its own embedded server); None otherwise or when no server knows it."""
    credentials = embedded_credentials(url)
    if credentials is None:
        return None
    system, account = credentials
    query = {"state": CLOSED, "cid": cid, "acc": account}

    def record(answer: dict[str, Any]) -> dict[str, Any] | None:
        for conn in (answer.get("data") or {}).get("connections") or []:
            if conn.get("cid") == cid and conn.get("name") == name:
                return dict(conn)
        return None

    try:  # the server that knows the connection answers at once: no waiting out the rest
        async with system_connection(url, f"{name}-sys", **system) as nc:
            answers = await ping(nc, "CONNZ", query, timeout,
                                 enough=lambda a: record(a) is not None)
    except SystemAccountError:
        return None
    except FAILURES:
        return None
    return next((r for a in answers if (r := record(a)) is not None), None)
