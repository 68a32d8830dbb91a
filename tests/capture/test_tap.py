"""Passive capture of traffic from publishers that do not use evtkit (plain nats-py)."""

from __future__ import annotations

import json

import nats
import pytest

from tests.waiting import flushed

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.fixture
async def raw(url):
    """A plain nats-py connection: the 'uninstrumented service'."""
    nc = await nats.connect(url, name="legacy")
    yield nc
    await nc.close()


async def settle(*clients) -> None:
    """What each client sent has reached the server, and the bus (last) has read what the
    server routed to it before its own round trips."""
    for client in clients:
        await flushed(client) if isinstance(client, nats.aio.client.Client) else \
            await client.settle()


class TestTapOfPlainPublishers:
    async def test_bare_messages_get_synthetic_ids_and_keep_their_bytes(self, bus, raw):
        await bus.tap("bare.>")
        payloads = [b"", b"\x00\xff\xfe", "ünïcode".encode(), b"same", b"same", b"x" * 1000]
        for p in payloads:
            await raw.publish("bare.data", p)
        await settle(raw, bus)
        obs = bus.trace().observations
        taps = obs[obs["kind"] == "tap"]
        assert taps["payload"].tolist() == payloads
        assert taps["size"].tolist() == [len(p) for p in payloads]
        assert (taps["mode"] == "bare").all() and taps["id_synthetic"].all()
        assert taps["event_id"].is_unique  # identical payloads still count twice
        events = bus.trace().events
        assert len(events) == len(payloads) and (events["causation_id"].isna()).all()

    async def test_cloudevents_binary_mode_from_another_library(self, bus, raw):
        await bus.tap("ce.>")
        await raw.publish("ce.a", b'{"a":1}', headers={
            "ce-specversion": "1.0", "ce-id": "A1", "ce-source": "go-svc", "ce-type": "t.a",
            "ce-time": "2026-11-26T10:00:00Z", "ce-correlationid": "flow",
            "ce-datacontenttype": "application/json",
        })
        await raw.publish("ce.b", b"{}", headers={
            "ce-id": "B1", "ce-causationid": "A1", "ce-correlationid": "flow",
            "traceparent": f"00-{TRACE}-{SPAN}-01",
        })
        await settle(raw, bus)
        events = bus.trace().events.set_index("event_id")
        assert events.loc["A1", "source"] == "go-svc" and events.loc["A1", "mode"] == "binary"
        assert str(events.loc["A1", "event_time"]) == "2026-11-26 10:00:00+00:00"
        # Not published through evtkit: the first sighting stands in for the publish time.
        assert events.loc["A1", "published_at"] == events.loc["A1", "first_seen_at"]
        assert events.loc["B1", "causation_id"] == "A1"
        assert events.loc["B1", "trace_id"] == TRACE
        assert set(events["correlation_id"]) == {"flow"}

    async def test_structured_mode(self, bus, raw):
        await bus.tap("st.>")
        envelope = {"specversion": "1.0", "id": "S1", "source": "java-svc", "type": "t.s",
                    "causationid": "P0", "correlationid": "F", "data": {"x": 1}}
        await raw.publish("st.x", json.dumps(envelope).encode(),
                          headers={"Content-Type": "application/cloudevents+json"})
        await settle(raw, bus)
        row = bus.trace().events.iloc[0]
        assert (row["event_id"], row["source"], row["causation_id"], row["mode"]) == (
            "S1", "java-svc", "P0", "structured")
        assert dict(row["headers"]) == {"Content-Type": "application/cloudevents+json"}

    async def test_traceparent_only_traffic_is_grouped_by_trace(self, bus, raw):
        await bus.tap("otel.>")
        for _ in range(3):
            await raw.publish("otel.x", b"{}", headers={"traceparent": f"00-{TRACE}-{SPAN}-01"})
        await settle(raw, bus)
        events = bus.trace().events
        assert (events["correlation_id"] == TRACE).all() and events["id_synthetic"].all()

    async def test_malformed_headers_make_root_events(self, bus, raw):
        await bus.tap("bad.>")
        await raw.publish("bad.x", b"{", headers={
            "ce-id": "M1", "ce-causationid": "", "traceparent": "00-nothex-zz-01",
            "ce-time": "last tuesday",
        })
        await raw.publish("bad.y", b"{", headers={"traceparent": f"ff-{TRACE}-{SPAN}-01"})
        await settle(raw, bus)
        events = bus.trace().events
        assert len(events) == 2
        assert events["causation_id"].isna().all() and events["trace_id"].isna().all()
        assert events.set_index("event_id").loc["M1", "correlation_id"] == "M1"

    async def test_near_max_payload_is_captured_intact(self, bus, raw):
        await bus.tap("huge")
        payload = bytes(range(256)) * ((raw.max_payload - 1024) // 256)
        await raw.publish("huge", payload)
        await settle(raw, bus)
        obs = bus.trace().observations
        assert obs.loc[obs["kind"] == "tap", "payload"].iloc[0] == payload

    async def test_only_the_tapped_subjects(self, bus, raw):
        await bus.tap("keep.*")
        await raw.publish("keep.a", b"1")
        await raw.publish("drop.a", b"2")
        await settle(raw, bus)
        assert bus.trace().events["subject"].tolist() == ["keep.a"]


class TestTapAndSubscriberAgree:
    async def test_bare_messages_seen_by_both_are_one_event(self, bus, raw):
        await bus.tap("both")
        seen = []
        sub = await bus.subscribe("both", lambda e: seen.append(e.id), consumer="c")
        for p in (b"a", b"a", b"b"):
            await raw.publish("both", p)
        await settle(raw, bus)
        await sub.idle()
        trace = bus.trace()
        assert len(trace.events) == 3
        assert set(seen) == set(trace.events["event_id"])
        assert trace.events["deliveries"].tolist() == [1, 1, 1]

    async def test_own_publishes_are_not_double_counted(self, bus):
        await bus.tap()
        for i in range(5):
            await bus.publish("own", {"i": i})
        await settle(bus)
        trace = bus.trace()
        obs = trace.observations
        assert (obs["kind"] == "tap").sum() == 5 and (obs["kind"] == "publish").sum() == 5
        assert len(trace.events) == 5 and (trace.events["producer"] == "test").all()
        # The tap saw each message after it was published.
        pub = obs[obs["kind"] == "publish"].set_index("event_id")["ts"]
        tap = obs[obs["kind"] == "tap"].set_index("event_id")["ts"]
        assert (tap.reindex(pub.index) >= pub).all()
