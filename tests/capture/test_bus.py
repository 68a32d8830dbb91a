"""Publish and subscribe through a real nats-server, and what the recorder makes of it."""

from __future__ import annotations

import asyncio

import nats
import pandas as pd
import pytest

import evtkit as ek
from evtkit import Recorder
from tests.waiting import flushed, until


async def settle(bus: ek.Bus, *subs: ek.Subscription) -> None:
    """Wait until the server has delivered what was published and handlers are done."""
    await bus.settle()


class TestRoundTrip:
    async def test_every_publish_and_delivery_is_recorded_exactly(self, bus):
        seen = []
        sub = await bus.subscribe("rt.>", lambda e: seen.append(e.id), consumer="counter")
        published = [await bus.publish("rt.one", {"n": i}) for i in range(250)]
        await settle(bus, sub)
        trace = bus.trace()
        assert seen == [e.id for e in published]
        events, deliveries = trace.events, trace.deliveries
        assert len(events) == 250 and events["event_id"].is_unique
        assert set(events["event_id"]) == {e.id for e in published}
        assert len(deliveries) == 250
        assert (deliveries["outcome"] == "ok").all()
        assert (deliveries["consumer"] == "counter").all()
        assert deliveries["event_id"].tolist() == [e.id for e in published]
        # Times are ordered: published ≤ received ≤ started ≤ done, all in ns UTC.
        assert (deliveries["received_at"] >= deliveries["published_at"]).all()
        assert (deliveries["started_at"] >= deliveries["received_at"]).all()
        assert (deliveries["done_at"] >= deliveries["started_at"]).all()
        assert (deliveries["queue_s"] >= 0).all() and (deliveries["processing_s"] >= 0).all()
        assert str(deliveries["published_at"].dtype) == "datetime64[ns, UTC]"
        assert events["payload"].iloc[0] == b'{"n":0}'
        assert (events["producer"] == "test").all()

    async def test_publish_sets_cloudevents_and_traceparent_headers(self, bus):
        received = []
        sub = await bus.nc.subscribe("hdr.x", cb=collect(received))
        event = await bus.publish("hdr.x", {"a": 1}, type="hdr.made", source="svc",
                                  headers={"X-Tenant": "acme"})
        await bus.flush()
        await until(lambda: received, what="the raw subscriber's copy")
        await sub.unsubscribe()
        headers = received[0].headers
        assert headers["ce-specversion"] == "1.0"
        assert headers["ce-id"] == event.id
        assert headers["ce-type"] == "hdr.made" and headers["ce-source"] == "svc"
        assert headers["ce-datacontenttype"] == "application/json"
        assert headers["ce-correlationid"] == event.correlation_id
        assert "ce-causationid" not in headers  # a root event
        assert headers["traceparent"] == f"00-{event.trace_id}-{event.id}-01"
        assert ek.parse_traceparent(headers["traceparent"]) == (event.trace_id, event.id, True)
        assert ek.event.parse_time(headers["ce-time"]) is not None
        assert headers["X-Tenant"] == "acme"

    @pytest.mark.parametrize(
        ("data", "raw", "content_type"),
        [
            ({"k": [1, 2]}, b'{"k":[1,2]}', "application/json"),
            ([1, "a"], b'[1,"a"]', "application/json"),
            ("héllo", "héllo".encode(), "text/plain; charset=utf-8"),
            (b"\x00\xff", b"\x00\xff", "application/octet-stream"),
            (None, b"", "application/octet-stream"),
        ],
    )
    async def test_payload_encoding(self, bus, data, raw, content_type):
        event = await bus.publish("enc", data)
        assert (event.raw, event.content_type) == (raw, content_type)
        row = bus.trace().events.iloc[-1]
        assert (row["payload"], row["content_type"]) == (raw, content_type)


class TestCausality:
    async def test_handlers_publish_caused_events_two_hops_deep(self, bus):
        async def inventory(event):
            await bus.publish("inventory.reserved", {"order": event.data["order"]})

        async def billing(event):
            # Events published from a task the handler starts inherit the cause too.
            await asyncio.create_task(bus.publish("payments.captured", {"ok": True}))

        subs = [
            await bus.subscribe("orders.placed", inventory, consumer="inventory"),
            await bus.subscribe("inventory.reserved", billing, consumer="billing"),
        ]
        root = await bus.publish("orders.placed", {"order": 7}, source="shop")
        await settle(bus, *subs)
        await settle(bus, *subs)
        trace = bus.trace()
        events = trace.events.set_index("subject")
        reserved, captured = events.loc["inventory.reserved"], events.loc["payments.captured"]
        # Each emitted event points at the exact delivery whose handler published it.
        deliveries = trace.deliveries.set_index("seq")
        assert reserved["emitted_by"] == "inventory"
        assert deliveries.loc[reserved["emitted_seq"], "event_id"] == root.id
        assert captured["emitted_by"] == "billing"
        assert deliveries.loc[captured["emitted_seq"], "event_id"] == reserved["event_id"]
        assert pd.isna(events.loc["orders.placed", "emitted_by"])
        assert reserved["causation_id"] == root.id
        assert captured["causation_id"] == reserved["event_id"]
        assert {reserved["correlation_id"], captured["correlation_id"]} == {root.correlation_id}
        assert {reserved["trace_id"], captured["trace_id"]} == {root.trace_id}
        assert ek.current_event() is None  # nothing leaks outside handlers

    async def test_explicit_cause_event_or_id(self, bus):
        root = await bus.publish("c.root", {})
        child = await bus.publish("c.child", {}, cause=root)
        orphan = await bus.publish("c.orphan", {}, cause="external-42")
        assert child.causation_id == root.id and child.correlation_id == root.correlation_id
        assert child.trace_id == root.trace_id
        assert orphan.causation_id == "external-42" and orphan.correlation_id == "external-42"

    async def test_current_event_inside_handler(self, bus):
        seen = []
        sub = await bus.subscribe("cur", lambda e: seen.append(ek.current_event()), consumer="c")
        event = await bus.publish("cur", "x")
        await settle(bus, sub)
        assert seen[0].id == event.id


class TestQueueGroups:
    async def test_members_share_the_messages(self, url):
        recorder = Recorder()
        async with ek.connect(url, name="shop", recorder=recorder) as shop, \
                ek.connect(url, name="worker-1", recorder=recorder) as w1, \
                ek.connect(url, name="worker-2", recorder=recorder) as w2:
            subs = [
                await w.subscribe("jobs", lambda e: None, consumer="billing", queue="billing")
                for w in (w1, w2)
            ]
            for i in range(200):
                await shop.publish("jobs", {"i": i})
            await settle(shop, *subs)
            await settle(w1)
            await settle(w2)
            deliveries = recorder.trace().deliveries
        assert len(deliveries) == 200 and deliveries["event_id"].is_unique
        per_worker = deliveries.groupby("observer").size()
        assert set(per_worker.index) == {"worker-1", "worker-2"}
        assert per_worker.min() > 0
        assert (deliveries["queue"] == "billing").all()


class TestSettle:
    async def test_settle_waits_for_handlers_and_what_they_publish(self, bus):
        async def first(event):
            await asyncio.sleep(0.01)  # the handler's own work
            await bus.publish("settle.second", {"from": event.id})

        seen = []
        subs = [await bus.subscribe("settle.first", first, consumer="one"),
                await bus.subscribe("settle.second", seen.append, consumer="two")]
        for i in range(20):
            await bus.publish("settle.first", {"i": i})
        await bus.settle()
        assert len(seen) == 20 and all(s.pending == 0 for s in subs)
        dv = bus.trace().deliveries
        assert (dv["outcome"] == "ok").all() and len(dv) == 40

    async def test_settle_says_who_is_still_busy_at_the_deadline(self, bus):
        release = asyncio.Event()

        async def stuck(event):
            await release.wait()

        sub = await bus.subscribe("settle.stuck", stuck, consumer="sloth")
        for _ in range(3):
            await bus.publish("settle.stuck", {})
        # (all three here before the deadline starts: on a loaded machine the last two
        # could still be on their way 0.3 s later)
        await until(lambda: sub.pending == 2)
        with pytest.raises(ek.SettleTimeoutError) as caught:
            await bus.settle(timeout=0.3)
        assert caught.value.pending == {"sloth": 2}  # one in the handler, two queued
        assert "sloth: 2" in str(caught.value) and isinstance(caught.value, TimeoutError)
        release.set()
        await bus.settle()


class TestHandlerFailures:
    async def test_exceptions_are_recorded_and_the_subscription_goes_on(self, bus):
        def handler(event):
            if event.data["i"] % 3 == 0:
                raise ValueError(f"bad item {event.data['i']}")

        sub = await bus.subscribe("fail", handler, consumer="picky")
        for i in range(9):
            await bus.publish("fail", {"i": i})
        await settle(bus, sub)
        deliveries = bus.trace().deliveries
        assert len(deliveries) == 9
        errors = deliveries[deliveries["outcome"] == "error"]
        assert sorted(errors["error"]) == [f"ValueError: bad item {i}" for i in (0, 3, 6)]
        assert (deliveries.loc[deliveries["outcome"] == "ok", "error"].isna()).all()
        assert sub.failed == 3 and sub.delivered == 9
        assert bus.trace().errors == 3


class TestBadInput:
    async def test_bad_subjects_headers_and_data(self, bus):
        with pytest.raises(ek.PublishError, match="whitespace"):
            await bus.publish("has space", {})
        with pytest.raises(ek.PublishError, match="empty"):
            await bus.publish("", {})
        with pytest.raises(ek.PublishError, match="line break"):
            await bus.publish("x", {}, type="evil\r\nce-id: forged")
        with pytest.raises(ek.PublishError, match="set by evtkit"):
            await bus.publish("x", {}, headers={"CE-ID": "mine"})
        with pytest.raises(ek.PublishError, match="cannot encode"):
            await bus.publish("x", object())
        assert len(bus.trace().events) == 0  # nothing half-published

    async def test_payload_too_large(self, bus):
        limit = bus.nc.max_payload
        with pytest.raises(ek.PayloadTooLargeError) as caught:
            await bus.publish("big", b"x" * limit)
        assert caught.value.max_payload == limit and caught.value.size > limit
        assert isinstance(caught.value, ValueError)

    async def test_handler_must_be_callable_and_consumer_named(self, bus):
        with pytest.raises(TypeError):
            await bus.subscribe("x", "not callable", consumer="c")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="consumer"):
            await bus.subscribe("x", lambda e: None, consumer="")


class TestConnecting:
    async def test_nats_url_is_used_when_no_url_is_given(self, url, monkeypatch):
        monkeypatch.setenv("NATS_URL", url)
        async with ek.connect(name="env") as bus:
            assert bus.server is None and bus.url == url

    async def test_embedded_server_when_nothing_is_configured(self, monkeypatch):
        monkeypatch.delenv("NATS_URL", raising=False)
        bus = await ek.connect(name="solo")
        server = bus.server
        assert server is not None and server.running and bus.url == server.url
        await bus.publish("x", "y")
        await bus.close()
        assert not server.running

    async def test_unreachable_server_is_a_clear_error(self):
        with pytest.raises(ek.ConnectError, match="could not connect to NATS at nats://"):
            await ek.connect("nats://127.0.0.1:1", connect_timeout=1)

    async def test_credentials_never_reach_bus_url_traces_or_errors(self, tmp_path):
        secret = "s3cret-pw-4711"
        config = f'authorization {{ user: alice, password: "{secret}" }}'
        async with ek.EmbeddedServer(config=config, accounts=False) as server:
            port = server.port
            authed = f"nats://alice:{secret}@127.0.0.1:{port}"
            async with ek.connect(authed, name="authed") as bus:
                assert bus.url == f"nats://127.0.0.1:{port}"
                await bus.tap()
                await bus.publish("x", {"hello": 1})
                await bus.flush()
                trace = bus.trace()
            for path in (tmp_path / "t.parquet", tmp_path / "t.jsonl"):
                trace.save(path)
                assert secret.encode() not in path.read_bytes()
            assert secret not in repr(trace.metadata) and secret not in trace.describe()
            with pytest.raises(ek.ConnectError) as caught:
                await ek.connect(f"nats://alice:wrong-{secret}@127.0.0.1:{port}",
                                 connect_timeout=2)
            assert secret not in str(caught.value)
            # Plain nats-py with the user/password options works the same way.
            async with ek.connect(f"nats://127.0.0.1:{port}", user="alice",
                                  password=secret) as bus:
                assert bus.nc.is_connected

    async def test_bus_is_usable_after_plain_await(self, url):
        bus = await ek.connect(url, name="plain")
        try:
            assert "plain" in repr(bus) and bus.nc.is_connected
        finally:
            await bus.close()
        assert bus.nc.is_closed

    async def test_using_a_bus_before_connecting_is_a_clear_error(self, url):
        bus = ek.connect(url)
        with pytest.raises(ek.ConnectError, match="not connected"):
            await bus.publish("x", {})


def collect(into: list):
    """A nats-py callback (they must be coroutines) that keeps each message."""

    async def callback(msg) -> None:
        into.append(msg)

    return callback


async def test_raw_nats_py_sees_evtkit_messages_unchanged(bus):
    nc = await nats.connect(bus.nc.connected_url.geturl(), name="raw")
    got = []
    sub = await nc.subscribe("raw.check", cb=collect(got))
    await flushed(nc)  # the server has the subscription before the bus publishes
    await bus.publish("raw.check", b"\x01\x02")
    await bus.flush()
    await until(lambda: got, what="the raw subscriber's copy")
    await sub.unsubscribe()
    await nc.close()
    assert got[0].data == b"\x01\x02"


async def test_close_does_not_hang_on_a_stuck_handler(url):
    bus = await ek.connect(url, name="stuck")
    never = asyncio.Event()

    async def stuck(event):
        await never.wait()

    await bus.subscribe("stuck", stuck, consumer="c")
    await bus.publish("stuck", {})
    await bus.publish("stuck", {})
    await bus.flush()  # both are in the handler's queue now (the first one is stuck)
    trace_before = bus.trace()
    await asyncio.wait_for(bus.close(timeout=0.2), 10)
    assert (trace_before.deliveries["outcome"] == "pending").all()
    with pytest.raises(ek.ConnectError, match="not connected"):
        await bus.publish("after", {})
