"""Background loops stop when asked, also when a step swallows cancellation."""

from __future__ import annotations

import asyncio

from evtkit.capture._tasks import Loop


async def test_steps_run_until_stopped():
    count = 0
    third = asyncio.Event()

    async def step():
        nonlocal count
        count += 1
        if count == 3:
            third.set()
        await asyncio.sleep(0)  # yield, as a real step's I/O would

    loop = Loop(step, 0)
    await asyncio.wait_for(third.wait(), 10)
    await loop.stop()
    stopped_at = count
    await asyncio.sleep(0)
    assert count == stopped_at and loop.stopping.is_set()
    await loop.stop()  # twice is fine


async def test_an_interval_loop_ends_during_its_wait():
    ran = asyncio.Event()

    async def step():
        ran.set()

    loop = Loop(step, 3600)  # the first step waits an hour
    await loop.stop(grace=10)
    assert not ran.is_set()


async def test_a_step_that_swallows_cancellation_is_cancelled_after_the_grace():
    entered = asyncio.Event()
    swallowed = 0

    async def stubborn():
        nonlocal swallowed
        entered.set()
        while True:
            try:
                await asyncio.Event().wait()  # never set: only a cancel gets us out
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise

    loop = Loop(stubborn, 0)
    await asyncio.wait_for(entered.wait(), 10)
    await loop.stop(grace=0.05)
    assert swallowed >= 1
