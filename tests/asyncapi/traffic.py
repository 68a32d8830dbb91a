"""Hand-built traffic for the conformance tests: observation rows with known payloads,
headers, producers and consumers (no server needed)."""

from __future__ import annotations

from pathlib import Path

import orjson

import evtkit as ek
from evtkit.observation import build_observations

DOCS = Path(__file__).parent / "docs"
SHOP = DOCS / "shop-3.0.yaml"
BILLING = DOCS / "billing-2.6.yaml"

SEC = 1_000_000_000
T0 = 1_900_000_000 * SEC
"""2030-03-17 17:46:40 UTC: event ``t`` seconds later is at 17:46:(40 + t)."""

GOOD = {"order": 1, "amount": 2.5, "currency": "EUR"}
TENANT = {"x-tenant": "acme"}


def block(eid: str, source: str | None = None, headers: dict[str, str] | None = None
          ) -> bytes:
    lines = [f"ce-id: {eid}"] + ([f"ce-source: {source}"] if source else [])
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("NATS/1.0\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode()


def payload_of(data: object) -> bytes:
    return data if isinstance(data, bytes) else orjson.dumps(data)


def pub(t: float, eid: str, subject: str, data: object = GOOD, *, producer: str = "shop",
        source: str | None = "shop", headers: dict[str, str] | None = None) -> tuple:
    """``producer`` publishes event ``eid`` at ``t`` s (``headers`` beside its ce-* ones)."""
    return ("publish", T0 + int(t * SEC), producer, None, None, subject.encode(), None,
            payload_of(data), block(eid, source, TENANT if headers is None else headers),
            None)


def tap(t: float, eid: str, subject: str, data: object = GOOD, *, source: str | None = None,
        headers: dict[str, str] | None = None) -> tuple:
    """A passive tap saw event ``eid`` (so its producer connection is unknown)."""
    return ("tap", T0 + int(t * SEC), "tap", None, None, subject.encode(), None,
            payload_of(data), block(eid, source, TENANT if headers is None else headers),
            None)


def recv(t: float, eid: str, subject: str, consumer: str) -> tuple:
    """``consumer`` received event ``eid`` at ``t`` s."""
    return ("receive", T0 + int(t * SEC), consumer, consumer, None, subject.encode(), None,
            b"{}", block(eid), None)


def trace(*rows: tuple) -> ek.Trace:
    return ek.Trace(build_observations(list(rows)))


def conforming() -> ek.Trace:
    """Traffic that matches shop-3.0.yaml exactly: every channel but the optional ones
    used, by the declared applications."""
    return trace(
        pub(1, "placed-1", "orders.1.placed", GOOD),
        recv(1.5, "placed-1", "orders.1.placed", "billing"),
        pub(2, "express-1", "orders.express.placed", {**GOOD, "order": 2}),
        pub(3, "cancel-1", "orders.1.cancelled", {"order": 1, "reason": "changed my mind"}),
        pub(4, "audit-1", "audit.orders.1", {"what": "placed"}),
        pub(5, "paid-1", "payments.done", {"order": 1, "paid": True}, producer="billing",
            source="billing"),
        recv(5.5, "paid-1", "payments.done", "shop"),
    )
