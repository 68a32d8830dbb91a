"""Replay timing accuracy: replayed inter-event gaps against the recorded ones.

    python bench/replay.py [--speeds 1 10 100]

Replays ``shop-baseline`` (2,167 events over 30 s) into an embedded server at each speed and
prints the median and 95th percentile of |replayed gap − original gap / speed|.
"""

from __future__ import annotations

import argparse
import asyncio

import evtkit as ek


async def main(speeds: list[float]) -> None:
    trace = ek.datasets.load("shop-baseline")
    async with ek.connect(name="bench-replay") as bus:
        print(f"{'speed':>6} {'events':>7} {'took':>8} {'median |error|':>15} "
              f"{'p95 |error|':>12}")
        for speed in speeds:
            result = await ek.replay(trace, bus, speed=speed, progress=False)
            error = (result.gaps["replayed_s"] - result.gaps["original_s"]).abs()
            print(f"{speed:>6g} {result.sent:>7,} {result.duration_s:>6.2f} s "
                  f"{error.median() * 1e3:>12.3f} ms {error.quantile(0.95) * 1e3:>9.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speeds", type=float, nargs="+", default=[1, 10, 100])
    asyncio.run(main(parser.parse_args().speeds))
