"""A small shop running on NATS, to watch evtkit work and to make sample traces.

::

    trace = await ek.demo.run_shop(duration=10, faults=["slow:billing:8@3+4"])

Services, each on its own named connection, all recorded into one trace:

``orders``         publishes ``orders.placed`` at ``rate`` per second (Poisson arrivals)
``inventory``      reserves stock: ``inventory.reserved``, or ``inventory.rejected`` (5 %)
``billing``        a queue group of two workers (``billing-1``, ``billing-2``) capturing
                   payment: ``payments.captured``, or ``payments.failed`` (3 %)
``shipping``       creates shipments: ``payments.captured`` → ``shipments.created``
``notifications``  reacts to ``orders.placed``, ``payments.captured`` and ``payments.failed``
``analytics``      taps everything (``>``)
``ledger``         (with ``jetstream=True``) books ``payments.captured`` from the JetStream
                   stream ``PAYMENTS`` (durable consumer, at most 3 deliveries); the shop
                   watches the stream, so advisories (max deliveries reached) are recorded

Handler times are log-normal per service. Faults, ``KIND:SERVICE[:VALUE][@START+DURATION]``
(times in seconds from the start; without ``@…`` for the whole run):

``slow:billing:8@3+4``        billing's handlers take 8× longer from 3 s to 7 s
``errors:billing:0.2@3+4``    20 % of billing's handler calls raise then
``stall:shipping@5+2``        shipping's handler hangs from 5 s to 7 s, then recovers
``stop:notifications@4+3``    notifications unsubscribes at 4 s and comes back at 7 s
``burst:orders:200@2``        200 extra orders at once at 2 s
``drift:orders@3+4``          orders drifts from its event definitions from 3 s to 7 s:
                              ``orders.placed`` renames ``customer`` to ``customerId`` and
                              sends ``total`` as a string, and every order is also sent on
                              ``orders.created``, a subject no channel declares

A fault on ``billing-1`` or ``billing-2`` applies to that worker of the queue group only.
The shop's event definitions are ``data/shop-asyncapi.yaml`` (:data:`SPEC`, AsyncAPI 3.0):
a healthy run conforms to them; a ``drift`` run does not (:data:`DRIFT`).
``pending_limits={"notifications": 20}`` gives a consumer small pending limits, so a slow
or stalled handler loses messages (recorded as dropped deliveries).
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .capture.bus import Bus, Subscription
from .capture.recorder import Recorder
from .capture.router import DEFAULT_PENDING_MSGS
from .capture.server import EmbeddedServer
from .errors import SettleTimeoutError
from .trace import Trace

__all__ = ["DRIFT", "FINDINGS", "SERVICES", "SPEC", "Fault", "ShopServices", "parse_fault",
           "run_shop"]

# Median handler time (seconds) and spread (log-normal sigma) per service.
SERVICES: dict[str, tuple[float, float]] = {
    "inventory": (0.003, 0.4),
    "billing": (0.008, 0.5),
    "shipping": (0.005, 0.4),
    "notifications": (0.002, 0.3),
    "ledger": (0.004, 0.4),
}
WORKERS = {"billing-1": "billing", "billing-2": "billing"}
"""Queue-group workers that a fault can name on their own."""
FAULT_KINDS = ("slow", "errors", "stall", "stop", "burst", "drift")
FINDINGS = {"slow": "slow_consumer", "errors": "failing_handler", "stall": "stalled_consumer",
            "stop": "stopped_consumer", "burst": "producer_burst"}
"""The :func:`~evtkit.analysis.diagnose.diagnose` finding each fault kind should produce
(``drift`` is found by ``trace.conformance(SPEC)`` instead: :data:`DRIFT`)."""
SPEC = Path(__file__).resolve().parent.parent / "data" / "shop-asyncapi.yaml"
"""The shop's AsyncAPI 3.0 document: channels, messages and who sends and receives what."""
DRIFT = {"renamed": ("orders.placed", "customer", "customerId"),
         "retyped": ("orders.placed", "total", "string"),
         "undeclared": "orders.created"}
"""What a ``drift`` fault changes: a field renamed (subject, old name, new name), a field
sent with the wrong type (subject, field, type sent) and the undeclared subject."""
_FAULT = re.compile(
    r"^(?P<kind>[a-z]+):(?P<service>[a-z][a-z0-9-]*)(?::(?P<value>[0-9.]+))?"
    r"(?:@(?P<start>[0-9.]+)(?:\+(?P<duration>[0-9.]+))?)?$"
)


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault (see the module docstring for the text form)."""

    kind: str
    service: str
    value: float = 0.0
    start: float = 0.0
    duration: float = math.inf

    def active(self, elapsed: float) -> bool:
        """Whether the fault applies ``elapsed`` seconds after the start."""
        return self.start <= elapsed < self.start + self.duration


def parse_fault(text: str) -> Fault:
    """Parse ``KIND:SERVICE[:VALUE][@START+DURATION]``.

    Raises:
        ValueError: the text does not describe a known fault, with what was expected.
    """
    match = _FAULT.match(text.strip())
    if not match:
        raise ValueError(f"fault {text!r} must look like KIND:SERVICE[:VALUE][@START+DURATION],"
                         " e.g. slow:billing:8@3+4")
    kind, service = match["kind"], match["service"]
    if kind not in FAULT_KINDS:
        raise ValueError(f"fault {text!r}: unknown kind {kind!r}; use one of {FAULT_KINDS}")
    services = ("orders",) if kind in ("burst", "drift") else (*SERVICES, *WORKERS)
    if service not in services:
        raise ValueError(f"fault {text!r}: {kind} applies to {', '.join(services)}, "
                         f"not {service!r}")
    value = float(match["value"]) if match["value"] else None
    needs = {"slow": "a factor", "errors": "a rate between 0 and 1", "burst": "a count"}
    if kind in needs and value is None:
        raise ValueError(f"fault {text!r}: {kind} needs {needs[kind]}, e.g. "
                         f"{kind}:{service}:{'0.2' if kind == 'errors' else '8'}")
    if kind == "errors" and not 0 <= (value or 0) <= 1:
        raise ValueError(f"fault {text!r}: the error rate must be between 0 and 1")
    if kind in ("stall", "stop") and match["duration"] is None:
        raise ValueError(f"fault {text!r}: {kind} needs @START+DURATION, e.g. "
                         f"{kind}:{service}@5+2")
    start = float(match["start"]) if match["start"] else 0.0
    duration = float(match["duration"]) if match["duration"] else math.inf
    return Fault(kind, service, value or 0.0, start, duration)


class _Shop:
    """The running shop: connections, subscriptions and the fault schedule."""

    def __init__(self, url: str, recorder: Recorder, seed: int, faults: Sequence[Fault],
                 jetstream: bool = False, pending_limits: Mapping[str, int] | None = None):
        self.url = url
        self.recorder = recorder
        self.faults = list(faults)
        self.jetstream = jetstream
        self.pending_limits = dict(pending_limits or {})
        self.random = random.Random(seed)
        self.started = time.monotonic()
        self.started_ns = time.time_ns()
        self.buses: dict[str, Bus] = {}
        self.subs: list[Subscription] = []
        self.order = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def start(self) -> None:
        """Orders begin now: fault times count from here."""
        self.started = time.monotonic()
        self.started_ns = time.time_ns()

    def injected(self, fault: Fault, start: float, end: float) -> None:
        """Note in the trace's metadata when ``fault`` really applied (seconds from the
        start): the ground truth a diagnosis is scored against."""
        self.recorder.metadata.setdefault("injected", []).append({
            "kind": fault.kind, "service": fault.service, "value": fault.value,
            "start": self.started_ns + int(start * 1e9), "end": self.started_ns + int(end * 1e9)})

    def drifted(self) -> None:
        """Note in the trace's metadata (``drift``) when a drift fault first and last
        changed an event (ns since the epoch)."""
        now = time.time_ns()
        window = self.recorder.metadata.setdefault("drift", {"first": now, "last": now})
        window["last"] = now

    def fault(self, kind: str, service: str, worker: str | None = None) -> Fault | None:
        for f in self.faults:
            if f.kind == kind and f.service in (service, worker) and f.active(self.elapsed()):
                return f
        return None

    async def connect(self, name: str, source: str) -> Bus:
        bus = Bus(self.url, name=name, source=source, recorder=self.recorder)
        self.buses[name] = await bus.open()
        return bus

    def pending(self, consumer: str) -> int:
        """The pending-message limit of ``consumer``'s subscriptions."""
        return self.pending_limits.get(consumer, DEFAULT_PENDING_MSGS)

    async def work(self, service: str, worker: str | None = None) -> None:
        """Spend a handler's time, with slow/stall/error faults applied."""
        median, sigma = SERVICES[service]
        seconds = median * math.exp(self.random.gauss(0, sigma))
        slow = self.fault("slow", service, worker)
        if slow is not None:
            seconds *= slow.value
        stall = self.fault("stall", service, worker)
        if stall is not None:
            seconds += stall.start + stall.duration - self.elapsed()
        await asyncio.sleep(seconds)
        errors = self.fault("errors", service, worker)
        if errors is not None and self.random.random() < errors.value:
            raise RuntimeError(f"{service}: injected failure (gateway timeout)")

    def handler(self, service: str, react: Callable[[Bus, Any], Awaitable[None]],
                bus: Bus) -> Callable[[Any], Awaitable[None]]:
        worker = bus.name if bus.name in WORKERS else None

        async def handle(event: Any) -> None:
            await self.work(service, worker)
            await react(bus, event)

        return handle


async def _start_services(shop: _Shop) -> None:
    rand = shop.random

    async def reserve(bus: Bus, event: Any) -> None:
        order = event.data
        if rand.random() < 0.05:
            await bus.publish("inventory.rejected", {"order": order["order"],
                                                     "reason": "out of stock"})
        else:
            await bus.publish("inventory.reserved", {"order": order["order"],
                                                     "items": order["items"]})

    async def charge(bus: Bus, event: Any) -> None:
        if rand.random() < 0.03:
            await bus.publish("payments.failed", {"order": event.data["order"],
                                                  "reason": "card declined"})
        else:
            await bus.publish("payments.captured", {"order": event.data["order"],
                                                    "amount": round(rand.uniform(5, 250), 2)})

    async def ship(bus: Bus, event: Any) -> None:
        await bus.publish("shipments.created", {"order": event.data["order"],
                                                "carrier": rand.choice(["dhl", "ups", "gls"])})

    async def notify(bus: Bus, event: Any) -> None:
        return None

    inventory = await shop.connect("inventory", "inventory")
    shop.subs.append(await inventory.subscribe(
        "orders.placed", shop.handler("inventory", reserve, inventory), consumer="inventory",
        pending_msgs=shop.pending("inventory")))
    for worker in ("billing-1", "billing-2"):
        bus = await shop.connect(worker, "billing")
        shop.subs.append(await bus.subscribe(
            "inventory.reserved", shop.handler("billing", charge, bus), consumer="billing",
            queue="billing", pending_msgs=shop.pending("billing")))
    shipping = await shop.connect("shipping", "shipping")
    shop.subs.append(await shipping.subscribe(
        "payments.captured", shop.handler("shipping", ship, shipping), consumer="shipping",
        pending_msgs=shop.pending("shipping")))
    notifications = await shop.connect("notifications", "notifications")
    for subject in ("orders.placed", "payments.captured", "payments.failed"):
        shop.subs.append(await notifications.subscribe(
            subject, shop.handler("notifications", notify, notifications),
            consumer="notifications", pending_msgs=shop.pending("notifications")))
    if shop.jetstream:
        ledger = await shop.connect("ledger", "ledger")
        await ledger.add_stream("PAYMENTS", ["payments.captured"])
        shop.subs.append(await ledger.consume(
            "PAYMENTS", shop.handler("ledger", notify, ledger), consumer="ledger",
            max_deliver=3, pending_msgs=shop.pending("ledger")))
        await ledger.watch_jetstream("PAYMENTS", interval=0.5)
    analytics = await shop.connect("analytics", "analytics")
    await analytics.tap(">")


async def _stop_and_return(shop: _Shop, fault: Fault) -> None:
    """``stop`` fault: the consumer's subscriptions go away, then come back."""
    await asyncio.sleep(max(0.0, fault.start - shop.elapsed()))
    # The consumer's subscriptions, or one queue-group worker's (its connection's name).
    gone = [s for s in shop.subs if fault.service in (s.consumer, s.router.name)]
    specs = [(shop.buses[s.router.name], s.subject, s.handler, s.queue, s.consumer)
             for s in gone]
    began = shop.elapsed()
    try:
        for sub in gone:
            shop.subs.remove(sub)
            await sub.unsubscribe()
        await asyncio.sleep(fault.duration)
        for bus, subject, handler, queue, consumer in specs:
            shop.subs.append(await bus.subscribe(subject, handler, consumer=consumer,
                                                 queue=queue, pending_msgs=shop.pending(
                                                     consumer)))
    finally:
        shop.injected(fault, began, shop.elapsed())


def _order(rand: random.Random, n: int) -> dict[str, Any]:
    items = [{"sku": f"sku-{rand.randint(1, 500)}", "qty": rand.randint(1, 3)}
             for _ in range(rand.randint(1, 4))]
    return {"order": n, "customer": f"c-{rand.randint(1, 5000)}", "items": items,
            "total": round(rand.uniform(5, 250), 2)}


async def run_shop(
    *,
    url: str | None = None,
    duration: float | None = None,
    orders: int | None = None,
    rate: float = 20.0,
    seed: int = 0,
    faults: Sequence[str | Fault] = (),
    progress: bool = True,
    settle: float = 10.0,
    jetstream: bool = False,
    pending_limits: Mapping[str, int] | None = None,
) -> Trace:
    """Run the shop until ``duration`` seconds or ``orders`` orders, and return its trace.

    Args:
        url: NATS server; default ``$NATS_URL``, else an embedded server.
        duration: seconds of orders (default 10 when ``orders`` is not given).
        orders: number of orders instead of a duration.
        rate: orders per second (Poisson arrivals).
        seed: random seed for arrivals, handler times, outcomes and payloads.
        faults: fault specs (see the module docstring) or :class:`Fault` objects.
        progress: show a progress bar.
        settle: at most this many seconds to let handlers finish after the last order.
        jetstream: also run ``ledger``, a JetStream consumer of ``payments.captured``.
        pending_limits: per consumer, a pending-message limit smaller than the default.

    Raises:
        ValueError: a bad fault, rate, duration or count.
    """
    if duration is not None and orders is not None:
        raise ValueError("give duration or orders, not both")
    if duration is None and orders is None:
        duration = 10.0
    if (duration is not None and duration <= 0) or (orders is not None and orders <= 0):
        raise ValueError("duration and orders must be positive")
    if rate <= 0:
        raise ValueError(f"rate must be positive, not {rate}")
    async with ShopServices(url, seed=seed, faults=faults, rate=rate, jetstream=jetstream,
                            pending_limits=pending_limits) as services:
        shop = services.shop
        shop_bus = await shop.connect("orders", "orders")
        shop.start()
        tasks = [asyncio.create_task(_stop_and_return(shop, f))
                 for f in shop.faults if f.kind == "stop"]
        try:
            await _place_orders(shop, shop_bus, duration, orders, rate, shop.faults, progress)
            ended = shop.elapsed()
            for f in shop.faults:
                if f.kind in ("slow", "errors", "stall") and f.start < ended:
                    shop.injected(f, f.start, min(f.start + f.duration, ended))
            await services.settle(settle)
        finally:
            for task in tasks:
                task.cancel()
            # A stop still running is cut short here; its window ends now (recorded by
            # the task as it unwinds, before the trace is taken).
            await asyncio.gather(*tasks, return_exceptions=True)
        return services.trace()


class ShopServices:
    """The shop without its order source: inventory, billing, shipping, notifications and
    the analytics tap, recording into one trace. Use it to replay orders into a live shop::

        async with ek.demo.ShopServices(bus.url) as shop:
            await ek.replay(trace, bus, subject_filter="orders.>")
            await shop.settle()
            replayed = shop.trace()

    Args:
        url: NATS server; default ``$NATS_URL``, else an embedded server (stopped on exit).
        seed: random seed for handler times and outcomes.
        faults: fault specs, as for :func:`run_shop`.
        jetstream, pending_limits: as for :func:`run_shop`.
    """

    def __init__(self, url: str | None = None, *, seed: int = 0,
                 faults: Sequence[str | Fault] = (), rate: float | None = None,
                 jetstream: bool = False, pending_limits: Mapping[str, int] | None = None
                 ) -> None:
        import os

        from . import env

        self.faults = [f if isinstance(f, Fault) else parse_fault(f) for f in faults]
        if not jetstream and any(f.service == "ledger" for f in self.faults):
            raise ValueError("a fault on ledger needs jetstream=True (ledger is the "
                             "JetStream consumer)")
        self.jetstream = jetstream
        self.pending_limits = pending_limits
        self.url = url or os.environ.get(env.NATS_URL)
        self.server: EmbeddedServer | None = None
        self.recorder = Recorder({"generator": "evtkit demo", "seed": seed, "rate": rate,
                                  "faults": [f"{f.kind}:{f.service}" for f in self.faults]})
        self.seed = seed
        self.shop: _Shop

    async def __aenter__(self) -> ShopServices:
        if not self.url:
            self.server = await EmbeddedServer().start()
            self.url = self.server.url
        assert self.url is not None
        self.shop = _Shop(self.url, self.recorder, self.seed, self.faults, self.jetstream,
                          self.pending_limits)
        try:
            await _start_services(self.shop)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for bus in self.shop.buses.values():
            await bus.close()
        if self.server is not None:
            await self.server.stop()

    async def settle(self, limit: float = 10.0) -> None:
        """Wait (at most ``limit`` seconds) until every handler is idle and nothing new
        arrives."""
        await _settle(self.shop, limit)

    def trace(self) -> Trace:
        """Everything the services recorded so far."""
        return self.recorder.trace()


async def _place_orders(shop: _Shop, bus: Bus, duration: float | None, orders: int | None,
                        rate: float, faults: Sequence[Fault], progress: bool) -> None:
    rand = random.Random(shop.random.random())
    bursts = sorted((f for f in faults if f.kind == "burst"), key=lambda f: f.start)
    bar = tqdm(total=orders or None, unit="order", desc="shop", disable=not progress,
               mininterval=0.5)
    next_at = 0.0
    while True:
        next_at += rand.expovariate(rate)
        if (duration is not None and next_at >= duration) or (
                orders is not None and shop.order >= orders):
            break
        while bursts and bursts[0].start <= next_at:
            burst = bursts.pop(0)
            await asyncio.sleep(max(0.0, burst.start - shop.elapsed()))
            began = shop.elapsed()
            for _ in range(int(burst.value)):
                await _place(shop, bus, rand)
            shop.injected(burst, began, shop.elapsed())
            bar.update(int(burst.value))
        await asyncio.sleep(max(0.0, next_at - shop.elapsed()))
        await _place(shop, bus, rand)
        bar.update(1)
    bar.close()


async def _place(shop: _Shop, bus: Bus, rand: random.Random) -> None:
    shop.order += 1
    order = _order(rand, shop.order)
    drift = shop.fault("drift", "orders")
    if drift is None:
        await bus.publish("orders.placed", order, source="orders")
        return
    # A producer drifting from its definitions (a new version deployed without updating
    # them): see DRIFT. Consumers read neither field, so the shop keeps working.
    shop.drifted()
    _, old, new = DRIFT["renamed"]
    drifted = {new if k == old else k: v for k, v in order.items()}
    drifted[DRIFT["retyped"][1]] = f"{order[DRIFT['retyped'][1]]:.2f}"
    await bus.publish("orders.placed", drifted, source="orders")
    await bus.publish(str(DRIFT["undeclared"]), drifted, source="orders")


async def _settle(shop: _Shop, limit: float) -> None:
    """Settle every service's bus in turn, round after round, until a round adds no row
    (what one service handles, another may still receive); at most ``limit`` seconds."""
    deadline = time.monotonic() + limit
    seen = -1
    while seen != shop.recorder.next_seq():
        seen = shop.recorder.next_seq()
        for bus in list(shop.buses.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                await bus.settle(left)
            except SettleTimeoutError:
                return
