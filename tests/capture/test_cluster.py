"""Failover and restarts: capture and collection keep going, gaps are recorded, and nothing
the servers delivered is missing from the trace. Real nats-servers on loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import time

import nats

import evtkit as ek
from evtkit._headers import parse_block
from tests.waiting import flushed, until


async def routed(sender, receiver) -> None:
    """Wait until the subscriptions ``receiver`` (a nats-py client) made so far are known
    on ``sender``'s server: interest crosses routes in order, so once a probe subscribed
    after them gets through, they have too. Bounded.

    A probe sent before the interest crossed is dropped without a trace, so nothing says
    "not yet": each try waits up to 50 ms for its probe (returning as soon as it is
    there), then sends another."""
    arrived = asyncio.Event()

    async def probe(msg):
        arrived.set()

    inbox = receiver.new_inbox()
    sub = await receiver.subscribe(inbox, cb=probe)
    await flushed(receiver)
    for _ in range(200):
        await sender.publish(inbox, b"")
        await flushed(sender)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), 0.05)
        if arrived.is_set():
            break
    await sub.unsubscribe()
    assert arrived.is_set(), "the subscriptions never crossed the routes"


class TestCluster:
    async def test_routes_join_three_servers(self):
        async with ek.EmbeddedCluster(3, jetstream=False) as cluster:
            assert len(cluster.urls) == 3 and len(set(cluster.urls)) == 3
            names = [s.name for s in cluster.servers]
            got = []
            async with ek.connect(cluster.servers[0].url, name="sub") as sub, \
                    ek.connect(cluster.servers[2].url, name="pub") as pub:
                await sub.subscribe("hello", lambda e: got.append(e), consumer="c")
                subs = await sub.subscriptions(**cluster.servers[0].system_options(),
                                               account="APP", timeout=2.0)
                assert subs.servers == sorted(names)  # every node answered
                await routed(pub.nc, sub.nc)
                await pub.publish("hello", {})
                await until(lambda: got)

    async def test_a_message_trace_follows_the_message_across_routes(self):
        async with ek.EmbeddedCluster(3, jetstream=False) as cluster:
            first, _, third = cluster.servers
            remote = await nats.connect(first.url, name="remote-reader")
            try:
                async def read(msg):
                    pass
                await remote.subscribe("far.x", cb=read)
                await flushed(remote)
                async with ek.connect(third.url, name="writer") as bus:
                    # The first traced publish subscribes the bus to its report subject;
                    # the remote server must know that interest before it can report.
                    await bus.publish("warmup.x", {}, trace="only")
                    await routed(remote, bus.nc)
                    await routed(bus.nc, remote)
                    event = await bus.publish("far.x", {}, trace=True)
                    await bus.flush()
                    # Each server reports its own hops: the remote egress can come in
                    # before the writer's server's own report (seen in CI under load).
                    wanted = {(third.name, "in"), (third.name, "rt"), (first.name, "in"),
                              (first.name, "eg")}

                    def seen() -> set[tuple[str, str]]:
                        hops = bus.trace().hops
                        hops = hops[hops["event_id"] == event.id]
                        return {(h.server, h.hop) for h in hops.itertuples()}

                    await until(lambda: wanted <= seen(), what="every server's hops")
                    hops = bus.trace().hops
            finally:
                await remote.close()
        hops = hops[hops["event_id"] == event.id]
        by_server = {(h.server, h.hop) for h in hops.itertuples()}
        assert (third.name, "in") in by_server and (third.name, "rt") in by_server
        assert (first.name, "in") in by_server  # arrived over the route
        egress = hops[hops["connection"] == "remote-reader"].iloc[0]
        assert egress["server"] == first.name and egress["hop"] == "eg"
        graph = bus.trace().flow_graph()
        assert ((graph["target"] == "remote-reader") & (graph["seen_by"] == "server")).any()

    async def test_killing_a_node_fails_over_and_loses_nothing_delivered(self):
        async with ek.EmbeddedCluster(3, jetstream=False) as cluster:
            first, second, third = cluster.servers
            raw: list = []  # what the server delivered, as nats-py itself saw it

            async def count(msg):
                raw.append(parse_block(b"NATS/1.0\r\n" + b"".join(
                    f"{k}: {v}\r\n".encode() for k, v in (msg.headers or {}).items())
                    + b"\r\n").get("ce-id"))

            async with ek.connect(",".join([first.url, second.url, third.url]),
                                  name="consumer", dont_randomize=True, telemetry=0.1,
                                  reconnect_time_wait=0.05, max_reconnect_attempts=-1) as cons, \
                    ek.connect(second.url, name="producer") as producer, \
                    ek.connect(third.url, name="home") as home:
                collector = await home.collect()
                await cons.subscribe("ticks", lambda e: None, consumer="ticker")
                await cons.nc.subscribe("ticks", cb=count)
                await routed(producer.nc, cons.nc)
                published = []
                for i in range(200):
                    published.append(await producer.publish("ticks", {"i": i}))
                    await asyncio.sleep(0.003)  # a steady producer (about 0.6 s), not a wait
                killed = time.time_ns()
                await first.kill()
                # Keep publishing until 300 went out after the consumer was back (bounded).
                after = 0
                while after < 300 and len(published) < 5000:
                    published.append(await producer.publish("ticks", {"i": len(published)}))
                    back = cons.nc.is_connected and cons.nc.stats["reconnects"] > 0
                    after += back
                    await asyncio.sleep(0.003)  # the same steady pace across the gap
                await producer.flush()
                await until(lambda: cons.nc.is_connected)
                await cons.flush()  # everything routed to the consumer has arrived
                await until(lambda: (home.recorder.stats().by_consumer["ticker"] == len(raw)
                                     and not home.trace().deliveries["outcome"]
                                     .eq("pending").any()),
                            timeout=20, what="the consumer's last telemetry")
                trace = home.trace()
                sent = producer.trace().events.set_index("event_id")["published_at"]
            assert collector.sources  # the consumer's rows came through the cluster
        gaps = trace.gaps
        assert list(gaps["observer"]) == ["consumer"] and gaps["end"].notna().all()
        obs = trace.observations
        reconnect = obs.loc[obs["kind"] == "reconnect", "detail"].iloc[0]
        assert str(first.port) not in reconnect
        received = trace.deliveries
        # Exactly what the server delivered to the connection is in the trace.
        assert sorted(received["event_id"]) == sorted(raw)
        assert (received["outcome"] == "ok").all()
        assert 200 < len(raw) <= len(published)
        # Everything published well before the kill or well after the gap was received
        # (messages in flight between the servers when a node dies are the system's loss,
        # and a loaded machine can take a few hundred ms to move interest over the routes).
        start, end = gaps.iloc[0]["start"].value, gaps.iloc[0]["end"].value
        assert start >= killed - 50e6
        assert len(sent) == len(published)
        outside = sent[(sent.array.asi8 < killed - 300e6) | (sent.array.asi8 > end + 500e6)]
        assert len(outside) > 150
        assert (outside.array.asi8 < killed).sum() > 50  # before the kill, as well as after
        missing = sent[sorted(set(outside.index) - set(received["event_id"]))]
        assert missing.empty, ((missing.array.asi8 - start) / 1e6, (end - start) / 1e6)

    async def test_a_single_node_restart_records_the_gap_and_jetstream_loses_nothing(self):
        async with ek.EmbeddedServer() as server, ek.connect(
                server.url, name="svc", reconnect_time_wait=0.05,
                max_reconnect_attempts=-1) as bus:
            await bus.add_stream("RESTART", ["restart.>"])
            done = []
            async def handle(event):
                await asyncio.sleep(0.005)  # the handler's own work
                done.append(event.data["i"])
            await bus.watch_jetstream("RESTART", interval=0.2, advisories=False)
            await bus.consume("RESTART", handle, consumer="durable", pull=True, batch=5)
            for i in range(30):
                await bus.publish("restart.x", {"i": i}, jetstream=True)
            await server.restart(down_s=0.3)
            await until(lambda: bus.nc.is_connected)
            for i in range(30, 60):
                await bus.publish("restart.x", {"i": i}, jetstream=True)
            await until(lambda: len(set(done)) == 60)
            trace = bus.trace()
        assert set(done) == set(range(60))
        assert len(trace.gaps) == 1 and trace.gaps["gap_s"].iloc[0] >= 0.3
        acked = trace.deliveries[trace.deliveries["ack"] == "ack"]
        assert acked["event_id"].nunique() == 60
        info = trace.consumer_info
        assert len(info) >= 2 and info["consumer"].eq("durable").all()
