"""A service process for the telemetry tests: one link of gateway → billing → mailer.

Run as ``python -m tests.services.chain ROLE URL COUNT``; it prints ``ready`` once
subscribed, then (gateway) publishes COUNT orders, and exits when stdin closes or says
anything. Its rows reach the test's collector only through telemetry.
"""

from __future__ import annotations

import asyncio
import sys

import evtkit as ek


async def main(role: str, url: str, count: int) -> None:
    async with ek.connect(url, name=role, telemetry=0.1) as bus:
        if role == "billing":
            async def bill(event):
                await bus.publish("billing.charged", {"order": event.data["order"]})
            await bus.subscribe("orders.placed", bill, consumer="billing")
        elif role == "mailer":
            await bus.subscribe("billing.charged", lambda event: None, consumer="mailer")
        print("ready", flush=True)
        if role == "gateway":
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            for i in range(count):
                await bus.publish("orders.placed", {"order": i})
            await bus.flush()
            print("published", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
