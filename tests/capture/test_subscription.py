"""A subscription: its arguments, the handler's context, and carrying on after failures."""

from __future__ import annotations

import asyncio

import pytest

import evtkit as ek
from evtkit.capture.subscription import current_delivery


async def _settled(bus: ek.Bus, sub: ek.Subscription) -> None:
    await bus.flush()  # the server has routed what was published before ...
    await asyncio.wait_for(sub.idle(), 10)  # ... and the handler has taken all of it


class TestArguments:
    async def test_handler_must_be_callable(self, bus):
        with pytest.raises(TypeError, match="handler must be callable"):
            await bus.subscribe("sub.a", "not a function", consumer="c")  # type: ignore[arg-type]

    async def test_consumer_must_be_named(self, bus):
        with pytest.raises(ValueError, match="consumer="):
            await bus.subscribe("sub.a", print, consumer="")


class TestHandlerContext:
    async def test_the_running_delivery_is_known_only_inside_the_handler(self, bus):
        seen = []

        async def handle(event):
            seen.append((ek.current_event(), current_delivery()))

        sub = await bus.subscribe("sub.ctx", handle, consumer="ctx")
        published = await bus.publish("sub.ctx", {"n": 1})
        await _settled(bus, sub)
        ((event, delivery),) = seen
        assert event.id == published.id and delivery.event is event
        assert delivery.consumer == "ctx"
        receive = bus.trace().deliveries.set_index("event_id").loc[published.id]
        assert delivery.seq == receive["seq"]
        assert ek.current_event() is None and current_delivery() is None

    async def test_sync_handlers_work_too(self, bus):
        got = []
        sub = await bus.subscribe("sub.sync", lambda event: got.append(event.data),
                                  consumer="sync")
        await bus.publish("sub.sync", {"n": 2})
        await _settled(bus, sub)
        assert got == [{"n": 2}] and sub.delivered == 1


class TestFailures:
    async def test_a_failing_handler_is_recorded_and_the_next_message_handled(self, bus):
        async def handle(event):
            if event.data["n"] == 1:
                raise RuntimeError("boom")

        sub = await bus.subscribe("sub.fail", handle, consumer="fail")
        for n in (1, 2):
            await bus.publish("sub.fail", {"n": n})
        await _settled(bus, sub)
        dv = bus.trace().deliveries
        assert list(dv["outcome"]) == ["error", "ok"]
        assert dv["error"].iloc[0] == "RuntimeError: boom"
        assert sub.failed == 1 and sub.delivered == 2 and sub.pending == 0

    async def test_unsubscribe_finishes_what_is_queued(self, bus):
        release = asyncio.Event()
        done = []

        async def handle(event):
            await release.wait()
            done.append(event.data["n"])

        sub = await bus.subscribe("sub.drain", handle, consumer="drain")
        for n in range(3):
            await bus.publish("sub.drain", {"n": n})
        await bus.flush()
        release.set()
        await sub.unsubscribe(timeout=10)
        assert done == [0, 1, 2] and sub not in bus.features
