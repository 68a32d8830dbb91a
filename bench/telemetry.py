"""Telemetry benchmark: what shipping rows costs a service, and how fast a collector merges.

    python bench/telemetry.py [--messages 100000] [--size 256] [--repeat 3]

(a) overhead: one service publishing with ``bus.publish`` with telemetry off, and on
    (batches every 0.5 s to a collector running in another process), against raw nats-py
    publishing the same payload with the same headers — all in the same run.
(b) collector: three service processes each publish ``--messages`` events with telemetry
    on; the collector (this process) merges their rows. Prints rows merged per second of
    wall time (first batch → last batch) and per second of the collector's own CPU time
    spent merging (its capacity), and checks no row was lost.

Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

import nats

import evtkit as ek

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from capture import payload_of  # noqa: E402 - the same payload as the capture benchmark

SUBJECT = "bench.telemetry"


async def child_publisher(url: str, n: int, size: int) -> None:
    """A service: publish n events with telemetry on, then flush it and exit."""
    payload = payload_of(size)
    async with ek.connect(url, name=f"svc-{time.time_ns() % 10_000}", telemetry=0.2) as bus:
        print("ready", flush=True)
        sys.stdin.readline()
        for _ in range(n):
            await bus.publish(SUBJECT, payload)
        await bus.flush()


async def child_collector(url: str) -> None:
    """A collector in its own process, so (a) measures the sender's cost only."""
    async with ek.connect(url, name="bench-collector") as bus:
        await bus.collect()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def spawn(*args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, __file__, "--child", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


async def publish_rate(url: str, n: int, payload: bytes, *, telemetry: float | None) -> float:
    async with ek.connect(url, name="bench-svc", telemetry=telemetry) as bus:
        t = time.perf_counter()
        for _ in range(n):
            await bus.publish(SUBJECT, payload)
        await bus.flush()
        return n / (time.perf_counter() - t)


async def bench_overhead(url: str, n: int, size: int, repeat: int) -> dict[str, float]:
    payload = payload_of(size)
    collector = spawn("collector", url)
    nc = await nats.connect(url, name="bench-raw")
    async with ek.connect(url, name="probe") as probe:
        headers = (await probe.publish("warmup", payload)).headers
    rates: dict[str, list[float]] = {"raw_same_headers": [], "evtkit": [], "evtkit_telemetry": []}
    try:
        for _ in range(repeat):
            t = time.perf_counter()
            for _ in range(n):
                await nc.publish(SUBJECT, payload, headers=headers)
            await nc.flush()
            rates["raw_same_headers"].append(n / (time.perf_counter() - t))
            rates["evtkit"].append(await publish_rate(url, n, payload, telemetry=None))
            rates["evtkit_telemetry"].append(await publish_rate(url, n, payload, telemetry=0.5))
    finally:
        await nc.close()
        assert collector.stdin is not None
        collector.stdin.close()
        collector.wait(30)
    return {k: statistics.median(v) for k, v in rates.items()}


async def bench_collector(url: str, n: int, size: int) -> dict[str, float]:
    async with ek.connect(url, name="bench-collector") as bus:
        collector = await bus.collect()
        procs = [await asyncio.to_thread(spawn, "publisher", url, str(n), str(size))
                 for _ in range(3)]
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
            await asyncio.to_thread(proc.wait, 600)  # the collector must keep running
        expected = 3 * n
        for _ in range(600):
            if collector.rows >= expected:
                break
            await asyncio.sleep(0.05)
        wall = collector.span_s or float("nan")
        return {"rows": collector.rows, "expected": expected, "batches": collector.batches,
                "wall_rows_per_s": collector.rows / wall,
                "cpu_rows_per_s": collector.rows / collector.busy_s,
                "drops": bus.trace().drops}


async def main(n: int, size: int, repeat: int) -> None:
    async with ek.EmbeddedServer() as server:
        assert server.url is not None
        rates = await bench_overhead(server.url, n, size, repeat)
        print(f"(a) publish {n:,} x {size} B, median of {repeat}")
        for name, rate in rates.items():
            print(f"    {name:<18} {rate:>10,.0f} msg/s  "
                  f"{rate / rates['raw_same_headers']:.2f}x raw nats-py (same headers)")
        print(f"    telemetry on / off: {rates['evtkit_telemetry'] / rates['evtkit']:.2f}")
        merged = await bench_collector(server.url, n, size)
        print(f"(b) collector, 3 processes x {n:,} events")
        print(f"    merged {merged['rows']:,} of {merged['expected']:,} rows in "
              f"{merged['batches']:,} batches, drops {merged['drops']}")
        print(f"    {merged['wall_rows_per_s']:,.0f} rows/s wall (first to last batch), "
              f"{merged['cpu_rows_per_s']:,.0f} rows/s of collector CPU")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        role, url, *rest = sys.argv[2:]
        if role == "collector":
            asyncio.run(child_collector(url))
        else:
            asyncio.run(child_publisher(url, int(rest[0]), int(rest[1])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.size, args.repeat))
