"""Waiting for something that happens over the network, bounded so tests never hang."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def until(check: Callable[[], object], timeout: float = 10.0,
                what: str = "condition") -> None:
    """Poll ``check()`` every 50 ms until it is true; fail after ``timeout`` seconds of
    wall time (however long each check takes)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s")
        await asyncio.sleep(0.05)


async def flushed(nc: Any) -> None:
    """Return once the server has everything a plain nats-py client sent before.

    nats-py's ``flush()`` writes its PING ahead of commands still in its write buffer, so
    one round trip can come back before an earlier publish left; the first round trip also
    hands the buffer to the writer, so a second one follows everything sent before (what
    ``Bus.flush()`` does too).
    """
    await nc.flush()
    await nc.flush()
