"""The router: owners attach and detach, messages reach their sink, features close with it,
and the one send path checks before it sends. Against a real nats-server, on the fast path
and on nats-py's public one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest

from evtkit import ConnectError, PayloadTooLargeError, PublishError
from evtkit._headers import parse_block
from evtkit.capture import _fastpath
from evtkit.capture.contract import Feature, Owner
from evtkit.capture.envelope import header_block
from evtkit.capture.recorder import Recorder
from evtkit.capture.router import Router


class Collecting:
    """The smallest owner: keeps what it is handed."""

    consumer = "collector"

    def __init__(self, router: Router) -> None:
        self.router = router
        self.got: list[tuple[bytes, bytes, bytes, bytes | None]] = []
        self.stopped = 0

    def sink(self, subject: bytes, reply: bytes, data: bytes, block: bytes | None) -> None:
        self.got.append((subject, reply, data, block))

    async def unsubscribe(self, timeout: float | None = None) -> None:
        self.stopped += 1
        await self.router.detach(self)


class Stoppable:
    """A feature without subscriptions (as a pull consumer or a sampler is)."""

    def __init__(self) -> None:
        self.stopped_with: float | None = None

    async def unsubscribe(self, timeout: float | None = None) -> None:
        self.stopped_with = timeout


@pytest.fixture(params=[True, False], ids=["fast", "public"])
async def router(request, url) -> AsyncIterator[Router]:
    if request.param and not _fastpath.available():
        pytest.fail("the fast path must be available with the pinned nats-py")
    nc = await nats.connect(url, name="router-test")
    try:
        yield Router(nc, Recorder(), "router-test", url, fast=request.param)
    finally:
        await nc.close()


async def _roundtrip(router: Router) -> None:
    """Everything sent before has been routed back."""
    await router.flush()


class TestAttach:
    async def test_messages_reach_the_owner_as_raw_bytes(self, router):
        owner = await _attached(router, "rt.a")
        block = header_block("ce-id: 1\r\nX: y\r\n")
        await router.send("rt.a", b"payload", block, reply="rt.reply")
        await router.send("rt.a", b"bare", None)
        await _roundtrip(router)
        assert [(s, r, d) for s, r, d, _ in owner.got] == [
            (b"rt.a", b"rt.reply", b"payload"), (b"rt.a", b"", b"bare")]
        assert parse_block(owner.got[0][3]).headers == {"ce-id": "1", "X": "y"}
        assert owner.got[1][3] is None

    async def test_detach_stops_delivery_and_forgets_the_owner(self, router):
        owner = await _attached(router, "rt.b")
        await router.send("rt.b", b"1", None)
        await _roundtrip(router)
        await router.detach(owner)
        await router.send("rt.b", b"2", None)
        await _roundtrip(router)
        assert [d for _, _, d, _ in owner.got] == [b"1"]
        assert owner not in router.features

    async def test_queue_members_share_messages(self, router):
        one = await _attached(router, "rt.q", queue="workers")
        two = await _attached(router, "rt.q", queue="workers")
        for i in range(20):
            await router.send("rt.q", str(i).encode(), None)
        await _roundtrip(router)
        assert len(one.got) + len(two.got) == 20

    async def test_owner_is_found_by_subscription_id(self, router):
        owner = await _attached(router, "rt.c")
        (nsub,) = [s for s in router.client._subs.values() if s.subject == "rt.c"]
        assert router.owner(_fastpath.subscription_id(nsub)) is owner
        assert router.owner(-1) is None


class TestFlush:
    async def test_after_flush_what_was_sent_before_has_come_back(self, router):
        """nats-py's own flush() can return before an earlier publish went out (its PING
        jumps the write buffer); the router's must not, or waiting would be a guess."""
        owner = await _attached(router, "rt.flush")
        for i in range(200):
            await router.send("rt.flush", str(i).encode(), None)
            await router.flush()
            assert len(owner.got) == i + 1, f"message {i} not back after flush()"

    async def test_attach_returns_once_the_server_has_the_subscription(self, router):
        for i in range(50):
            owner = await _attached(router, f"rt.sub.{i}")
            other = await nats.connect(router.url)  # another connection: the server decides
            try:
                await other.publish(f"rt.sub.{i}", b"x")
                await other.flush()
            finally:
                await other.close()
            await router.flush()
            assert len(owner.got) == 1, f"subscription {i} missed the message"


class TestClose:
    async def test_close_stops_every_feature_once_in_order(self, router):
        owner = await _attached(router, "rt.d")
        other = router.adopt(Stoppable())
        assert router.features == [owner, other]
        await router.close(timeout=3.0)
        assert owner.stopped == 1 and other.stopped_with == 3.0
        assert router.features == [] and router.closed

    async def test_a_closed_router_refuses_work(self, router):
        await router.close(timeout=1.0)
        with pytest.raises(ConnectError, match="not connected"):
            router.client  # noqa: B018
        with pytest.raises(ConnectError):
            await router.send("rt.e", b"", None)


class TestSend:
    async def test_bad_subject(self, router):
        with pytest.raises(PublishError, match="whitespace"):
            await router.send("rt.f x", b"", None)

    async def test_too_large_counts_the_header_block(self, router):
        limit = router.client.max_payload
        block = header_block("k: v\r\n")
        with pytest.raises(PayloadTooLargeError) as caught:
            await router.send("rt.g", b"x" * (limit - len(block) + 1), block)
        assert caught.value.size == limit + 1 and caught.value.max_payload == limit
        await router.send("rt.g", b"x" * (limit - len(block)), block)  # exactly fits


async def test_every_feature_keeps_the_contract(bus):
    """What the bus hands its router are owners (sink, consumer, unsubscribe) or features
    (unsubscribe), as the contract module says; the router closes each with the bus."""
    async def handle(event):
        return None

    await bus.add_stream("CONTRACT", ["contract.>"])
    owners = [await bus.subscribe("contract.a", handle, consumer="c"), await bus.tap("x.>"),
              await bus.record_message_traces("contract.traces"), await bus.collect(),
              await bus.consume("CONTRACT", handle, consumer="push")]
    features = [await bus.consume("CONTRACT", handle, consumer="pull", pull=True),
                await bus.watch_jetstream("CONTRACT", interval=60),
                await bus.send_telemetry(interval=60)]
    assert all(isinstance(o, Owner) for o in owners)
    assert all(isinstance(f, Feature) for f in features)
    assert set(map(id, bus.features)) == set(map(id, owners + features))


async def _attached(router: Router, subject: str, queue: str | None = None) -> Collecting:
    owner = Collecting(router)
    await router.attach(owner, subject, queue)
    return owner
