"""Progress of an engine's long queries, drawn on standard error: which table is being
built (or that a query runs) and how far the engine says it is, from the moment the query
has run long enough to be worth a line, cleared when it ends (a report draws its own bar
of steps above: lines left behind piled up under it, a dozen per report)."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["shown"]

_EVERY = 0.25  # seconds between looks at the engine's percentage


@contextlib.contextmanager
def shown(label: str, percent: Callable[[], float], after: float) -> Iterator[None]:
    """While inside, once ``after`` seconds have passed, a bar ``evtkit: {label}`` showing
    ``percent()`` (the engine's own estimate, 0–100, negative when it has none yet), read
    every quarter second in a thread of its own. It is drawn at 100 % when the block ends
    normally, then cleared (also when it raises); a quicker block shows nothing."""
    from tqdm import tqdm

    done = threading.Event()
    drawn: list[Any] = []  # the bar, once drawn

    def draw() -> None:
        drawn.append(tqdm(total=100, desc=f"evtkit: {label}", file=sys.stderr, leave=False,
                          bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}"))

    def follow() -> None:
        if not drawn:
            if done.wait(after):
                return
            draw()
        bar = drawn[0]
        while not done.wait(_EVERY):
            with contextlib.suppress(Exception):  # (an estimate, never worth a failure)
                bar.n = max(bar.n, min(percent(), 100.0))
                bar.refresh()  # (its time too, while the percentage stands)

    if after <= 0:  # (at once, not when the thread first runs: a quick block shows too)
        draw()
    watcher = threading.Thread(target=follow, name="evtkit-progress", daemon=True)
    watcher.start()
    ended = False
    try:
        yield
        ended = True
    finally:
        done.set()
        watcher.join()
        for bar in drawn:
            if ended:
                bar.n = 100
                bar.refresh()
            bar.close()  # (the line cleared)
