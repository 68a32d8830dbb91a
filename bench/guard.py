"""Guard benchmark: publish throughput of a bus checking each event against an AsyncAPI
document (``ek.connect(spec=...)``) against the same bus without one, in one run, against
one embedded server.

    python bench/guard.py [--messages 100000] [--repeat 3] [--subjects 1000]

Each run publishes ``--messages`` small JSON events (a dict of about 150 bytes, with an
``x-tenant`` header) on ``orders.<n>.placed`` for ``--subjects`` order numbers, through:

- a bus without a spec (the baseline: what every bus does today);
- a bus whose document declares the channel's payload schema (an order: integers, an
  enum, a minimum, an array of items);
- a bus whose document declares that payload schema and a headers schema (``x-tenant``
  required, a pattern).

The three take turns within each repeat; the median of the repeats is printed in msg/s with
its ratio to the baseline. Every event is valid (the guard says yes and sends it): what is
measured is the cost a correct producer pays. Speed is measured here, never asserted in
tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from orders import ORDER  # (this directory: the scripts run from here)

import evtkit as ek

TENANT = {"type": "object", "required": ["x-tenant"], "properties": {
    "x-tenant": {"type": "string", "pattern": "^[a-z]+$"}}}


def document(headers: bool) -> dict[str, Any]:
    """The shop's orders channel, with or without a headers schema."""
    message: dict[str, Any] = {"name": "OrderPlaced", "contentType": "application/json",
                               "payload": ORDER}
    if headers:
        message["headers"] = TENANT
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Bench shop", "version": "1", "x-application": "shop"},
        "channels": {"orderPlaced": {"address": "orders.{orderId}.placed",
                                     "messages": {"placed": message}}},
        "operations": {"send": {"action": "send",
                                "channel": {"$ref": "#/channels/orderPlaced"}}},
    }


VARIANTS = {
    "none": "no spec (baseline)",
    "payload": "spec: payload schema",
    "headers": "spec: payload + headers schemas",
}


async def bench(url: str, n: int, repeat: int, subjects: int) -> dict[str, float]:
    specs = {"none": None, "payload": document(False), "headers": document(True)}
    buses = {key: await ek.connect(url, name=f"bench-{key}", spec=spec)
             for key, spec in specs.items()}
    names = [f"orders.{k + 1}.placed" for k in range(subjects)]
    data = [{"order": k + 1, "amount": 12.5, "currency": "EUR",
             "items": [{"sku": "ABC-1", "qty": 2}, {"sku": "XYZ-22", "qty": 1}]}
            for k in range(subjects)]
    headers = {"x-tenant": "acme"}
    rates: dict[str, list[float]] = {key: [] for key in buses}
    try:
        for bus in buses.values():  # warm up: connections, per-subject lookups, compiling
            for k in range(subjects):
                await bus.publish(names[k], data[k], headers=headers)
            await bus.flush()
        for _ in range(repeat):
            for key, bus in buses.items():
                del bus.recorder.rows[:]
                t = time.perf_counter()
                for i in range(n):
                    k = i % subjects
                    await bus.publish(names[k], data[k], headers=headers)
                await bus.flush()
                rates[key].append(n / (time.perf_counter() - t))
                assert len(bus.recorder.rows) == n  # every event valid, sent and recorded
    finally:
        for bus in buses.values():
            await bus.close()
    return {key: statistics.median(values) for key, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=1000)
    args = parser.parse_args()
    print(f"evtkit {ek.__version__} · {args.messages:,} events × {args.repeat} runs (median) "
          f"on {args.subjects:,} subjects · {os.cpu_count()} cores")
    with ek.EmbeddedServer() as server:
        assert server.url is not None
        rates = asyncio.run(bench(server.url, args.messages, args.repeat, args.subjects))
    base = rates["none"]
    print("\npublish                                   msg/s   µs/event   this ÷ baseline")
    for key, label in VARIANTS.items():
        rate = rates[key]
        extra = (1e6 / rate - 1e6 / base) if key != "none" else 0.0
        cost = f"(+{extra:.1f})" if key != "none" else ""
        print(f"    {label:<34} {rate:>9,.0f}  {1e6 / rate:>5.1f} {cost:<7} {rate / base:>6.2f}×")


if __name__ == "__main__":
    main()
