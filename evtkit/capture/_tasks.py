"""Background loops that stop when asked, even if nats-py swallowed a cancellation.

nats-py catches ``asyncio.CancelledError`` in some of its awaits (publishing with a full
buffer, fetching), so ``task.cancel()`` alone can leave a loop running and whoever awaits it
hanging. Loops here watch an event instead; cancelling is only the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

__all__ = ["Loop"]


class Loop:
    """Runs ``step()`` every ``interval`` seconds (or back to back with ``interval=0``)
    until :meth:`stop`."""

    def __init__(self, step: Callable[[], Awaitable[object]], interval: float) -> None:
        self.stopping = asyncio.Event()
        self._step = step
        self._interval = interval
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self.stopping.is_set():
            if self._interval:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), self._interval)
                    return
            await self._step()

    async def stop(self, grace: float = 5.0) -> None:
        """Ask the loop to end after its current step; cancel it if that takes longer
        than ``grace`` seconds. Safe to call twice."""
        self.stopping.set()
        task = self._task
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, grace)
        except asyncio.CancelledError:
            if not task.done():
                raise
