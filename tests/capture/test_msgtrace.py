"""Server message tracing: hops from the server's own reports, joined to evtkit's events,
and consumers without evtkit in the fan-out — real nats-server (2.11+) only."""

from __future__ import annotations

import contextlib

import nats
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evtkit as ek
from evtkit.capture.msgtrace import hop_rows
from tests.waiting import flushed, until


async def plain_subscriber(url: str, subject: str, *, name: str, queue: str = ""):
    """A nats-py client that knows nothing of evtkit; returns (connection, received list)."""
    nc = await nats.connect(url, name=name)
    got: list = []

    async def cb(msg):
        got.append(msg)

    await nc.subscribe(subject, queue=queue, cb=cb)
    await flushed(nc)  # the server has the subscription before anything is published
    return nc, got


async def settle(bus, check, timeout: float = 5.0) -> None:
    """Flush what the bus published, then wait for the server's trace reports."""
    await bus.flush()
    await until(check, timeout, "the trace report")


async def reports_so_far(server, bus) -> None:
    """Return once every trace report ``server`` made so far has reached ``bus``.

    The server sends its reports through one internal queue, in the order it made them.
    A trace-only probe published now reports after all of them; once its report is back,
    any earlier one is on the bus's connection, and ``bus.flush()`` reads it. The probe
    comes from the system account, where no tap or trace recorder of the test sees it.
    """
    probe = await nats.connect(server.url, name="report-barrier",
                               **server.system_options())
    try:
        inbox = probe.new_inbox()
        sub = await probe.subscribe(inbox)
        await probe.publish("barrier", b"", headers={"Nats-Trace-Dest": inbox,
                                                     "Nats-Trace-Only": "true"})
        await sub.next_msg(timeout=10)
    finally:
        await probe.close()
    await bus.flush()


class TestTracedPublish:
    async def test_egress_rows_name_a_plain_subscriber(self, bus, url):
        legacy, got = await plain_subscriber(url, "pay.*", name="legacy-ledger", queue="ledger")
        try:
            await bus.subscribe("pay.done", lambda e: None, consumer="audit")
            event = await bus.publish("pay.done", {"amount": 5}, trace=True)
            await settle(bus, lambda: len(bus.trace().hops) >= 3)
            hops = bus.trace().hops
            assert set(hops["event_id"]) == {event.id}
            assert set(hops["trace_id"]) == {event.trace_id}
            ingress = hops[hops["hop"] == "in"].iloc[0]
            assert ingress["connection"] == "test" and ingress["subject"] == "pay.done"
            egress = hops[hops["hop"] == "eg"].set_index("connection")
            assert egress.loc["legacy-ledger", "queue"] == "ledger"
            assert "test" in egress.index  # evtkit's own subscription, seen by the server
            assert not hops["trace_only"].any()
            await until(lambda: len(got) == 1, what="the plain subscriber's copy")
            assert hops["server"].notna().all()
            # The fan-out shows the plain subscriber, marked as seen by the server only.
            graph = bus.trace().flow_graph()
            edge = graph[(graph["target"] == "legacy-ledger")].iloc[0]
            assert (edge["source"], edge["kind"], edge["seen_by"], edge["count"]) == (
                "pay.done", "delivers", "server", 1)
            assert edge["target_kind"] == "connection" and edge["p50_s"] >= 0
            ours = graph[graph["target"] == "audit"].iloc[0]
            assert ours["seen_by"] == "evtkit"
            assert not ((graph["target"] == "test") & (graph["seen_by"] == "server")).any()
            assert bus.trace().fanout().iloc[0]["server_seen"] == "legacy-ledger"
            assert "msg traces   3 hops on 2 connections" in bus.trace().describe()
            fig = ek.plot_fanout(bus.trace())
            assert "legacy-ledger (seen by server)" in fig.data[0].node.label
        finally:
            await legacy.close()

    async def test_trace_only_delivers_nothing_but_names_who_would_receive(self, bus, url):
        legacy, got = await plain_subscriber(url, "probe.x", name="would-get")
        try:
            await bus.publish("probe.x", {}, trace="only")
            await settle(bus, lambda: len(bus.trace().hops) >= 2)
            # The server reports after delivering: a copy for the plain subscriber would
            # already be on its connection, read (and its callback run) by this flush.
            await flushed(legacy)
            hops = bus.trace().hops
            assert got == []
            assert hops["trace_only"].all()
            assert "would-get" in set(hops.loc[hops["hop"] == "eg", "connection"])
            graph = bus.trace().flow_graph()
            assert not (graph["seen_by"] == "server").any()  # not a real delivery
        finally:
            await legacy.close()

    async def test_bad_trace_argument(self, bus):
        with pytest.raises(ek.PublishError, match="trace= must be True or 'only'"):
            await bus.publish("x", {}, trace="yes")


@contextlib.asynccontextmanager
async def sampling_server():
    """An embedded server that traces every message with a sampled traceparent, a plain
    subscriber 'legacy' on orders.*, a plain publisher 'producer', and an evtkit bus
    'watcher' recording the trace reports: yields (server, producer, bus, traces)."""
    async with ek.EmbeddedServer(trace_sampling=100) as server:
        legacy, _ = await plain_subscriber(server.url, "orders.*", name="legacy")
        producer = await nats.connect(server.url, name="producer")
        try:
            async with ek.connect(server.url, name="watcher") as bus:
                yield server, producer, bus, await bus.record_message_traces()
        finally:
            await legacy.close()
            await producer.close()


class TestAccountSampling:
    async def test_sampled_traceparent_is_traced_without_asking(self):
        """The embedded server's msg_trace setting traces plain nats-py publishes that
        carry a sampled traceparent; unsampled ones are not traced."""
        async with sampling_server() as (server, producer, bus, traces):
            tap = await bus.tap()
            sampled = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
            unsampled = "00-" + "c" * 32 + "-" + "d" * 16 + "-00"
            await producer.publish("orders.a", b"1", headers={"traceparent": sampled})
            await producer.publish("orders.b", b"2", headers={"traceparent": unsampled})
            await flushed(producer)
            await settle(bus, lambda: traces.reports >= 1)
            # A report for the unsampled message would have come by now.
            await reports_so_far(server, bus)
            hops = bus.trace().hops
            assert traces.reports == 1
            assert set(hops["trace_id"]) == {"a" * 32}
            assert set(hops["connection"]) == {"producer", "legacy", "watcher"}
            # The wildcard tap records the two messages, not the trace report.
            assert sorted(bus.trace().events["subject"]) == ["orders.a", "orders.b"]
            assert tap.skipped >= 1

    async def test_foreign_traffic_joins_the_tapped_events(self):
        """Messages without ce-id (a traceparent-only publisher): the server's hops join
        the events the tap saw, fan-out shows exactly the consumer the server saw (not
        evtkit's own tap), and the publisher is named from the server's 'in' hop."""
        async with sampling_server() as (_, producer, bus, traces):
            await bus.tap("orders.>")
            for i in range(3):
                await producer.publish("orders.a", b"%d" % i, headers={
                    "traceparent": f"00-{'a' * 31}{i}-{'b' * 16}-01"})
            await flushed(producer)
            await settle(bus, lambda: traces.reports >= 3)
            trace = bus.trace()
        hops, events = trace.hops, trace.events
        assert len(events) == 3 and events["event_id"].str.startswith("syn-").all()
        assert set(hops["event_id"]) == set(events["event_id"])
        graph = trace.flow_graph()
        server_seen = graph[graph["seen_by"] == "server"]
        assert server_seen["target"].tolist() == ["legacy"]
        assert server_seen["count"].tolist() == [3] and server_seen["p50_s"].notna().all()
        publishes = graph[graph["kind"] == "publishes"]
        assert publishes["source"].tolist() == ["producer"]
        assert trace.fanout()["server_seen"].tolist() == ["legacy"]

    async def test_trace_sampling_needs_a_percentage(self):
        with pytest.raises(ValueError, match="0-100"):
            ek.EmbeddedServer(trace_sampling=150)


class TestReports:
    def test_a_report_becomes_rows_with_the_message_identity(self):
        report = orjson.dumps({
            "server": {"name": "n1"},
            "request": {"header": {"ce-id": ["e1"], "traceparent": [
                "00-" + "1" * 32 + "-" + "2" * 16 + "-01"]}, "msgsize": 10},
            "events": [
                {"type": "in", "ts": "2026-01-01T00:00:00.000000001Z", "name": "pub",
                 "subj": "a.b"},
                {"type": "eg", "ts": "2026-01-01T00:00:00.000000500Z", "kind": 0,
                 "name": "sub", "sub": "a.*", "queue": "q"},
                {"type": "eg", "kind": 1, "name": "n2"},
                {"type": "eg", "kind": 0, "name": "self", "error": "no echo"},
            ],
        })
        rows = hop_rows(report, "obs", 7)
        assert [r[9][1] for r in rows] == ["in", "eg", "rt", "eg"]
        assert rows[0][1] == 1_767_225_600_000_000_001 and rows[2][1] == 7
        assert rows[1][3:5] == ("sub", "q") and rows[1][5] == b"a.b"
        assert rows[3][9][2] == "no echo"
        assert b"ce-id: e1" in rows[0][8]

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=300))
    def test_garbage_reports_become_an_error_row_never_an_exception(self, data):
        rows = hop_rows(data, "obs", 1)
        assert all(r[0] in ("hop", "error") for r in rows)

    def test_a_report_with_the_wrong_shape_is_quoted_in_an_error_row(self):
        rows = hop_rows(b'{"server": 1, "events": []}', "obs", 1)
        assert rows[0][0] == "error" and "unreadable message-trace report" in rows[0][9]
