"""Who is subscribed to what: the server's CONNZ and SUBSZ as one frame.

::

    subs = await bus.subscriptions()          # embedded server: system access is built in
    subs.frame                                # server, account, connection, subject, queue...
    subs.receivers("orders.placed")           # who would get a message on that subject

Asking needs the NATS system account. The embedded server has one and evtkit holds its
password (also when the bus connected to it by URL, in the same process). For your own
servers, configure ``system_account`` with a user and pass that user's credentials
(``user=``/``password=``, ``user_credentials=``, ``nkeys_seed=``...): they are used for
this request only, never stored in traces or shown in errors.

The server answers ``$SYS.REQ.SERVER.PING.CONNZ`` / ``...SUBSZ`` from every server of a
cluster, so the map covers the whole cluster; ``timeout`` is how long to collect answers.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..errors import SystemAccountError
from ..subject import matches
from .router import Router
from .system import embedded_credentials, ping, system_connection

__all__ = ["SubscriptionMap", "subscription_map"]

_COLUMNS = {"server": "str", "account": "str", "connection": "str", "cid": "Int64",
            "internal": "bool", "subject": "str", "queue": "str", "msgs": "Int64"}


class SubscriptionMap:
    """A snapshot of every subscription: ``frame`` has one row per subscription with
    ``server, account, connection`` (the client's name; ``(internal)`` for the server's own,
    such as JetStream streams' and system imports), ``cid, internal, subject, queue,
    msgs`` (messages delivered so far)."""

    def __init__(self, frame: pd.DataFrame, servers: list[str]) -> None:
        self.frame = frame
        self.servers = servers

    def receivers(self, subject: str, *, internal: bool = False) -> pd.DataFrame:
        """Who would receive a message on ``subject``: matching subscriptions, with
        ``gets`` = ``every message`` or, in a queue group, ``1 of N`` (one member each).

        Args:
            subject: a concrete subject (no wildcards).
            internal: include the server's own subscriptions (streams, imports).
        """
        frame = self.frame
        if not internal:
            frame = frame[~frame["internal"].to_numpy()]
        hit = frame[[matches(p, subject) for p in frame["subject"]]].copy()
        size = hit.groupby("queue")["queue"].transform("size")
        hit["gets"] = [f"1 of {int(n)}" if isinstance(q, str) else "every message"
                       for q, n in zip(hit["queue"], size.fillna(0), strict=True)]
        return hit.reset_index(drop=True)

    def _repr_html_(self) -> str:
        return str(self.frame._repr_html_())

    def __repr__(self) -> str:
        clients = self.frame.loc[~self.frame["internal"], "connection"].nunique()
        return (f"<SubscriptionMap {len(self.frame)} subscriptions, {clients} named "
                f"connections, servers {', '.join(self.servers)}>")


def _rows(connz: list[Any], subsz: list[Any], account: str | None
          ) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    servers: list[str] = []
    seen: set[tuple[str, Any, Any]] = set()
    for answer in connz:
        server = (answer.get("server") or {}).get("name", "?")
        servers.append(server)
        for conn in (answer.get("data") or {}).get("connections") or []:
            for sub in conn.get("subscriptions_list_detail") or []:
                seen.add((server, conn.get("cid"), sub.get("sid")))
                rows.append({"server": server, "account": sub.get("account") or
                             conn.get("account") or account, "connection": conn.get("name") or
                             f"(unnamed cid {conn.get('cid')})", "cid": conn.get("cid"),
                             "internal": False, "subject": sub.get("subject"),
                             "queue": sub.get("qgroup"), "msgs": sub.get("msgs")})
    for answer in subsz:
        server = (answer.get("server") or {}).get("name", "?")
        for sub in (answer.get("data") or {}).get("subscriptions_list") or []:
            if (server, sub.get("cid"), sub.get("sid")) in seen or (
                    account and sub.get("account") != account):
                continue
            rows.append({"server": server, "account": sub.get("account"),
                         "connection": "(internal)", "cid": sub.get("cid"), "internal": True,
                         "subject": sub.get("subject"), "queue": sub.get("qgroup"),
                         "msgs": sub.get("msgs")})
    return rows, sorted(set(servers))


async def subscription_map(router: Router, *, account: str | None = None,
                           timeout: float = 0.5, **system: Any) -> SubscriptionMap:
    """Snapshot the subscriptions of ``account`` on every server ``router``'s bus can
    reach; see :meth:`Bus.subscriptions`.

    Raises:
        SystemAccountError: no system credentials, or the server refused them.
    """
    url = router.url
    router.client  # noqa: B018 - raises ConnectError on a closed bus
    if not system:
        credentials = embedded_credentials(url)
        if credentials is None:
            raise SystemAccountError(
                "asking the server who is subscribed needs the system account: pass its "
                "credentials, e.g. bus.subscriptions(user='sys', password=...), or "
                "user_credentials='sys.creds' (the server needs `system_account` set)"
            )
        system, embedded_account = credentials
        account = account or embedded_account
    async with system_connection(url, f"{router.name}-sys", **system) as nc:
        query: dict[str, Any] = {"subscriptions_detail": True, "auth": True, "limit": 100_000}
        subsz: dict[str, Any] = {"subscriptions": True, "limit": 100_000}
        if account:
            query["acc"] = subsz["account"] = account
        connz = await ping(nc, "CONNZ", query, timeout)
        if not connz:
            raise SystemAccountError(
                "no server answered the CONNZ request: these credentials are probably not "
                "the system account's")
        found, servers = _rows(connz, await ping(nc, "SUBSZ", subsz, timeout), account)
    frame = pd.DataFrame(found, columns=list(_COLUMNS)).astype(_COLUMNS)
    return SubscriptionMap(frame, servers)
