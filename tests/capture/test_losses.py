"""Nothing lost silently: drops and connection gaps are rows in the trace."""

from __future__ import annotations

import asyncio

import pytest

import evtkit as ek
from tests.waiting import until


async def flood_slow_handler(bus: ek.Bus, n: int, delay: float, pending: int):
    """Publish ``n`` events to a handler that sleeps ``delay`` and may hold ``pending``."""

    async def slow(event):
        await asyncio.sleep(delay)  # the handler's own work

    sub = await bus.subscribe("slow", slow, consumer="sloth", pending_msgs=pending)
    for i in range(n):
        await bus.publish("slow", {"i": i})
    await bus.settle()  # every message received (handled or dropped), the queue empty
    return sub


class TestDrops:
    async def test_a_handler_that_falls_behind_produces_counted_drops(self, bus):
        sub = await flood_slow_handler(bus, 100, 0.01, 5)
        trace = bus.trace()
        deliveries = trace.deliveries
        dropped = deliveries[deliveries["outcome"] == "dropped"]
        assert len(deliveries) == 100  # every message is a row, dropped or not
        assert trace.drops == len(dropped) == sub.dropped > 0
        assert sub.delivered + sub.dropped == 100
        assert dropped["error"].str.contains("pending limit").all()
        assert dropped["started_at"].isna().all() and dropped["done_at"].isna().all()
        assert trace.summary()["drops"] == trace.drops
        assert f"drops        {trace.drops:,}" in trace.describe()

    async def test_byte_limit_drops_too(self, bus):
        gate = asyncio.Event()

        async def blocked(event):
            await gate.wait()

        sub = await bus.subscribe("bytes", blocked, consumer="c", pending_bytes=3000)
        for _ in range(10):
            await bus.publish("bytes", b"x" * 1000)
        await bus.flush()
        # All ten reached the subscription (queued or dropped) while the handler is stuck.
        await until(lambda: len(bus.trace().deliveries) == 10, what="ten deliveries")
        gate.set()
        await sub.idle()
        assert sub.dropped >= 6 and bus.trace().drops == sub.dropped

    async def test_nats_py_slow_consumer_errors_become_drop_rows(self, bus):
        """A raw nats-py subscription on the bus's connection overflows its own queue."""
        release = asyncio.Event()

        async def stuck(msg):
            await release.wait()

        raw = await bus.nc.subscribe("raw.slow", cb=stuck, pending_msgs_limit=3)
        for i in range(30):
            await bus.publish("raw.slow", {"i": i})
        await bus.flush()
        # nats-py counts every message it reads for the subscription, queued or dropped
        # (a drop row is written before it reads the next one): all 30 are in.
        await until(lambda: raw.delivered == 30, what="30 messages at the raw subscription")
        release.set()
        await raw.unsubscribe()
        trace = bus.trace()
        drops = trace.observations[trace.observations["kind"] == "drop"]
        assert len(drops) > 0 and (drops["subject"] == "raw.slow").all()
        assert trace.drops == int(drops["count"].sum())


class TestGaps:
    async def test_disconnect_and_reconnect_are_recorded_as_a_gap(self, tmp_path):
        first = await ek.EmbeddedServer().start()
        port = first.port
        async with ek.connect(first.url, name="flaky", reconnect_time_wait=0.1,
                              max_reconnect_attempts=100) as bus:
            await bus.publish("before", {})
            await first.stop()
            await until(lambda: (bus.trace().observations["kind"] == "disconnect").any(),
                        what="the disconnect row")
            # The outage itself: no server for 0.3 s after the bus saw it go (the gap
            # asserted below). A span to stage, not a wait for something to happen.
            await asyncio.sleep(0.3)
            second = await ek.EmbeddedServer(port=port).start()
            try:
                await until(lambda: bus.nc.is_connected, what="the reconnect")
                assert bus.nc.is_connected
                await bus.publish("after", {})
                await bus.flush()
                trace = bus.trace()
            finally:
                await second.stop()
        gaps = trace.gaps
        assert len(gaps) == 1
        assert gaps.iloc[0]["observer"] == "flaky" and gaps.iloc[0]["gap_s"] >= 0.3
        assert trace.summary()["gaps"] == 1
        assert set(trace.events["subject"]) == {"before", "after"}


@pytest.mark.parametrize("fast", [True, False])
async def test_drops_counted_on_both_paths(url, fast):
    async with ek.connect(url, name="p", fast=fast) as bus:
        assert bus._fast is fast
        sub = await flood_slow_handler(bus, 40, 0.005, 2)
        trace = bus.trace()
        assert trace.drops == sub.dropped > 0
        assert len(trace.deliveries) == 40


async def test_a_server_side_slow_consumer_disconnect_is_counted_as_drops():
    """A sync handler blocks the event loop while a producer floods: the server closes the
    connection as a slow consumer and discards what it held. The client cannot see that
    loss; the server's record of the closed connection can, and it becomes drop rows.

    The producer runs in its own thread and event loop, and the handler blocks until it
    has sent everything: in the same loop the producer stalled with the victim, and
    whether the server saw enough pile up in a fixed 2 s depended on the machine's load
    (a flaky failure under load)."""
    import threading

    import nats

    from tests.waiting import flushed, until

    config = 'write_deadline: "200ms"\nmax_pending: 1MB'
    sent = threading.Event()
    async with ek.EmbeddedServer(config=config) as server, \
            ek.connect(server.url, name="victim") as bus:
        handled = 0

        def block(event):  # a sync handler that blocks the whole event loop once
            nonlocal handled
            handled += 1
            if handled == 1:
                sent.wait(60)  # (bounded) while the producer floods

        async def produce() -> None:
            producer = await nats.connect(server.url, name="producer")
            try:
                for _ in range(30_000):
                    await producer.publish("flood", b"x" * 256)
                await flushed(producer)
            finally:
                await producer.close()

        def flood() -> None:
            try:
                asyncio.run(produce())
            finally:
                sent.set()

        await bus.subscribe("flood", block, consumer="blocked")
        await bus.flush()
        producer = threading.Thread(target=flood, daemon=True)
        producer.start()
        await until(lambda: sent.is_set(), timeout=60, what="the producer's flood")
        producer.join(10)
        # (the recorder's drop counter: building the whole trace on every poll took
        # longer than the poll under load in CI)
        await until(lambda: bus.recorder.drops > 0, timeout=30,
                    what="the server's slow-consumer record")
        trace = bus.trace()
    drops = trace.observations[trace.observations["kind"] == "drop"]
    assert trace.drops > 0 and len(drops) == 1
    assert "slow consumer (Slow Consumer" in drops["detail"].iloc[0]
    assert len(trace.gaps) == 1
