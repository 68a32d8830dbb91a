"""Waiting for something that happens over the network, bounded so tests never hang."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(check: Callable[[], object], timeout: float = 10.0,
                what: str = "condition") -> None:
    """Poll ``check()`` every 50 ms until it is true; fail after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout:g} s")
