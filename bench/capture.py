"""Capture benchmark: evtkit against raw nats-py, in one run, against one embedded server.

    python bench/capture.py [--messages 200000] [--size 256] [--repeat 3]

(a) publish: evtkit ``bus.publish`` vs raw nats-py ``nc.publish`` with the same payload and
    the same headers, and vs raw nats-py without headers (for reference).
(b) subscribe: ``bus.tap`` vs a raw nats-py callback that only counts, each in a child
    process pinned to its own core, on the same pre-built stream of evtkit-style messages
    (nine CloudEvents/traceparent headers each) blasted by a raw-socket publisher.
(c) frame build: building the observation/event frames from what the tap captured, in
    seconds per million captured rows against the target (the process may use every core
    again for this: the build splits header blocks on several threads).

Prints msg/s, ratios and drops. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from random import getrandbits
from typing import Any

import nats
import orjson

import evtkit as ek
from evtkit._columns import compiled

SUBJECT = "bench.orders"
BUILD_TARGET_S = 1.5
"""Target for building observations: seconds per million tapped rows (issue 13)."""


def payload_of(size: int) -> bytes:
    """A JSON object of about ``size`` bytes."""
    base = {"order": 123456, "customer": "c-42", "items": [{"sku": "sku-1", "qty": 2}], "pad": ""}
    base["pad"] = "x" * max(0, size - len(orjson.dumps(base)))
    return orjson.dumps(base)


def pin(core: int | None) -> None:
    """Run on one core (``None``: on every core again)."""
    cores = os.cpu_count() or 1
    if hasattr(os, "sched_setaffinity") and cores > 1:
        os.sched_setaffinity(0, set(range(cores)) if core is None else {core % cores})


# -- (a) publish --------------------------------------------------------------------------------

async def bench_publish(url: str, n: int, payload: bytes, repeat: int) -> dict[str, float]:
    nc = await nats.connect(url, name="bench-raw", flusher_queue_size=1024)
    bus = await ek.connect(url, name="bench-evtkit")
    headers = (await bus.publish("warmup", payload)).headers  # the nine headers evtkit sets
    rates: dict[str, list[float]] = {"raw": [], "raw_same_headers": [], "evtkit": []}
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(n):
            await nc.publish(SUBJECT, payload)
        await nc.flush()
        rates["raw"].append(n / (time.perf_counter() - t))

        t = time.perf_counter()
        for _ in range(n):
            await nc.publish(SUBJECT, payload, headers=headers)
        await nc.flush()
        rates["raw_same_headers"].append(n / (time.perf_counter() - t))

        del bus.recorder.rows[:]
        t = time.perf_counter()
        for _ in range(n):
            await bus.publish(SUBJECT, payload)
        await bus.flush()
        rates["evtkit"].append(n / (time.perf_counter() - t))
        assert len(bus.recorder.rows) == n
    await nc.close()
    await bus.close()
    return {k: statistics.median(v) for k, v in rates.items()}


# -- (b) subscribe ------------------------------------------------------------------------------

def build_stream(n: int, payload: bytes) -> bytes:
    """``n`` HPUB commands as evtkit would send them, each with its own ids."""
    parts = []
    for _ in range(n):
        eid = f"{getrandbits(64):016x}"
        trace = f"{getrandbits(128):032x}"
        block = (
            f"NATS/1.0\r\nce-specversion: 1.0\r\nce-id: {eid}\r\nce-source: shop\r\n"
            f"ce-type: orders.placed\r\nce-time: 2026-11-26T10:00:00.000000Z\r\n"
            f"ce-datacontenttype: application/json\r\nce-correlationid: {trace}\r\n"
            f"traceparent: 00-{trace}-{eid}-01\r\n\r\n"
        ).encode()
        parts.append(b"HPUB %s %d %d\r\n%s%s\r\n" % (
            SUBJECT.encode(), len(block), len(block) + len(payload), block, payload))
    return b"".join(parts)


def blast(url: str, stream: bytes) -> float:
    """Write the stream through a raw socket as fast as the server takes it; msg/s."""
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.recv(65536)  # INFO
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,'
                     b'"name":"bench-blaster"}\r\n')
        t = time.perf_counter()
        view = memoryview(stream)
        for start in range(0, len(stream), 1 << 20):
            sock.sendall(view[start:start + (1 << 20)])
        sock.sendall(b"PING\r\n")
        buf = b""
        while b"PONG" not in buf:
            buf += sock.recv(65536)
        return time.perf_counter() - t


async def child(mode: str, url: str, n: int) -> dict[str, Any]:
    """Runs in the pinned subscriber process; prints one JSON line of results."""
    pin(1)
    received = 0
    first = last = 0.0
    drops = disconnects = 0
    done = asyncio.Event()

    async def on_error(exc: Exception) -> None:
        nonlocal drops
        if isinstance(exc, nats.errors.SlowConsumerError):
            drops += 1

    async def on_disconnect() -> None:
        nonlocal disconnects
        disconnects += 1

    result: dict[str, Any] = {"mode": mode}
    if mode == "raw":
        nc = await nats.connect(url, name="bench-raw-sub", error_cb=on_error,
                                disconnected_cb=on_disconnect)

        async def count(msg: Any) -> None:
            nonlocal received, first, last
            received += 1
            if received == 1:
                first = time.perf_counter()
            if received == n:
                last = time.perf_counter()
                done.set()

        await nc.subscribe(SUBJECT, cb=count)
        await nc.flush()
        print("ready", flush=True)
        await _wait(done, lambda: received)
        lost_connection = disconnects  # closing below fires the callback once more
        await nc.close()
    else:
        bus = await ek.connect(url, name="bench-tap", error_cb=on_error,
                               disconnected_cb=on_disconnect)
        await bus.tap(SUBJECT)
        rows = bus.recorder.rows
        print("ready", flush=True)
        while not rows:
            await asyncio.sleep(0.0005)
        first = time.perf_counter()
        await _wait_rows(rows, n)
        last = time.perf_counter()
        received = len(rows)
        drops += bus.recorder.drops
        pin(None)  # capture is over: the frame build may use every core
        result["build_cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else 1
        t = time.perf_counter()
        frame = bus.recorder.observations()
        result["build_observations_s"] = time.perf_counter() - t
        t = time.perf_counter()
        trace = ek.Trace(frame)
        events = trace.events
        result["build_events_s"] = time.perf_counter() - t
        result["rows"] = len(frame)
        assert len(events) == received
        lost_connection = disconnects
        await bus.close()
    result.update(received=received, elapsed=(last or time.perf_counter()) - first,
                  drops=drops, disconnects=lost_connection)
    return result


async def _wait(done: asyncio.Event, progress: Any) -> None:
    seen, idle = -1, 0
    while not done.is_set() and idle < 40:  # 2 s without progress: messages were lost
        await asyncio.sleep(0.05)
        now = progress()
        idle = idle + 1 if now == seen else 0
        seen = now


async def _wait_rows(rows: list[Any], n: int) -> None:
    seen, idle = -1, 0
    while len(rows) < n and idle < 2000:
        await asyncio.sleep(0.001)
        idle = idle + 1 if len(rows) == seen else 0
        seen = len(rows)


def bench_subscribe(url: str, n: int, stream: bytes, mode: str) -> dict[str, Any]:
    with subprocess.Popen(
        [sys.executable, __file__, "--child", mode, "--url", url, "--messages", str(n)],
        stdout=subprocess.PIPE, text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        publish_s = blast(url, stream)
        result = json.loads(proc.stdout.readline())
        proc.wait(60)
    result["publish_rate"] = n / publish_s
    result["rate"] = result["received"] / result["elapsed"] if result["elapsed"] else 0.0
    return result


# -- main ---------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=256, help="payload bytes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child")
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, args.url, args.messages))), flush=True)
        return

    pin(0)
    payload = payload_of(args.size)
    n = args.messages
    print(f"evtkit {ek.__version__} · nats-py {_version('nats-py')} · {n:,} messages of "
          f"{len(payload)} B · median of {args.repeat} runs · {os.cpu_count()} cores")
    with ek.EmbeddedServer() as server:
        assert server.url is not None
        pub = asyncio.run(bench_publish(server.url, n, payload, args.repeat))
        print("\n(a) publish                               msg/s    evtkit ÷ this")
        for key, label in (("raw", "raw nats-py, no headers"),
                           ("raw_same_headers", "raw nats-py, same 9 headers"),
                           ("evtkit", "evtkit publish (9 headers, recorded)")):
            print(f"    {label:<36} {pub[key]:>9,.0f}    {pub['evtkit'] / pub[key]:>5.2f}×")

        stream = build_stream(n, payload)
        runs: dict[str, list[dict[str, Any]]] = {"raw": [], "tap": []}
        for _ in range(args.repeat):
            for mode in runs:
                runs[mode].append(bench_subscribe(server.url, n, stream, mode))
        best = {mode: sorted(r, key=lambda x: x["rate"])[len(r) // 2] for mode, r in runs.items()}
        print("\n(b) subscribe (own core, 9 headers/msg)    msg/s    received    drops"
              "  disconnects")
        for mode, label in (("raw", "raw nats-py counting callback"), ("tap", "evtkit tap")):
            r = best[mode]
            print(f"    {label:<36} {r['rate']:>9,.0f}  {r['received']:>10,}  {r['drops']:>7,}"
                  f"  {r['disconnects']:>11,}")
        print(f"    tap ÷ raw counting callback: {best['tap']['rate'] / best['raw']['rate']:.2f}×"
              f"   (raw-socket publisher offered {best['tap']['publish_rate']:,.0f} msg/s)")

        tap = best["tap"]
        per_million = 1e6 / tap["rows"]
        build = tap["build_observations_s"]
        rate = build * per_million
        path = "compiled" if compiled() else "numpy/Arrow (evtkit/_columnar.c not built)"
        print(f"\n(c) frame build from {tap['rows']:,} captured rows "
              f"({tap['build_cores']} core{'s' if tap['build_cores'] > 1 else ''}, first build "
              f"in the capturing process, {path} path):")
        print(f"    observations {build:.2f} s = {rate:.2f} s per million rows "
              f"(target ≤ {BUILD_TARGET_S} s: {'met' if rate <= BUILD_TARGET_S else 'not met'})"
              f"; events {tap['build_events_s']:.2f} s")


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
