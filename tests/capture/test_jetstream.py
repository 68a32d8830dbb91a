"""JetStream through the bus: acked publish, durable consumers, ConsumerInfo samples,
advisories and the lag built on them — against the session's real nats-server."""

from __future__ import annotations

import asyncio
import itertools

import pandas as pd
import pytest

import evtkit as ek
from evtkit.event import js_position
from tests.waiting import until

_names = (f"S{i}" for i in itertools.count())


async def server_state(bus, stream: str, durable: str, check, what: str,
                       timeout: float = 10.0):
    """Ask the server for the consumer's state every 50 ms until ``check(info)`` holds;
    fail after ``timeout`` seconds (as ``until``, for a question that needs a request)."""
    js = bus.nc.jetstream()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check(info := await js.consumer_info(stream, durable)):
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s: {info}")
        await asyncio.sleep(0.05)
    return info


@pytest.fixture
async def stream(bus):
    """A fresh stream storing ``<name>.>``; yields its name."""
    name = next(_names)
    await bus.add_stream(name, [f"{name.lower()}.>"])
    yield name


class TestPublish:
    async def test_acked_publish_records_stream_and_sequence(self, bus, stream):
        events = [await bus.publish(f"{stream.lower()}.x", {"i": i}, jetstream=True)
                  for i in range(3)]
        assert [(e.stream, e.stream_seq) for e in events] == [(stream, 1), (stream, 2),
                                                              (stream, 3)]
        obs = bus.trace().observations
        pubs = obs[obs["kind"] == "publish"]
        assert list(pubs["stream"]) == [stream] * 3
        assert list(pubs["stream_seq"]) == [1, 2, 3]

    async def test_no_stream_for_the_subject_is_a_clear_error(self, bus):
        with pytest.raises(ek.PublishError, match="no JetStream stream stores 'nowhere.x'"):
            await bus.publish("nowhere.x", {}, jetstream=True, timeout=2)

    async def test_consuming_a_missing_stream_is_a_clear_error(self, bus):
        with pytest.raises(ek.JetStreamError, match="stream 'MISSING' does not exist"):
            await bus.consume("MISSING", lambda e: None, consumer="c")


class TestConsume:
    @pytest.mark.parametrize("pull", [False, True])
    async def test_every_message_is_delivered_acked_and_positioned(self, bus, stream, pull):
        seen = []
        published = [await bus.publish(f"{stream.lower()}.a", {"i": i}, jetstream=True)
                     for i in range(12)]
        sub = await bus.consume(stream, lambda e: seen.append(e), consumer="worker",
                                pull=pull, batch=5)
        await until(lambda: sub.acked == 12)
        assert [e.stream_seq for e in seen] == list(range(1, 13))
        assert {e.delivery_count for e in seen} == {1}
        assert [e.id for e in seen] == [e.id for e in published]
        dv = bus.trace().deliveries
        assert len(dv) == 12 and set(dv["ack"]) == {"ack"} and set(dv["outcome"]) == {"ok"}
        obs = bus.trace().observations
        receives = obs[obs["kind"] == "receive"]
        assert list(receives["stream_seq"]) == list(range(1, 13))
        assert list(receives["consumer_seq"]) == list(range(1, 13))
        assert (receives["stream"] == stream).all()

    async def test_a_failing_handler_is_redelivered_until_max_deliver_with_advisory(
            self, bus, stream, tmp_path):
        watch = await bus.watch_jetstream(stream, interval=0.2)
        async def fail(event):
            raise ValueError("cannot bill")
        sub = await bus.consume(stream, fail, consumer="billing", max_deliver=3, ack_wait=0.5)
        event = await bus.publish(f"{stream.lower()}.x", {}, jetstream=True)

        def advised():
            adv = bus.trace().advisories
            return (adv["advisory"] == "MAX_DELIVERIES").any()

        await until(advised)
        assert sub.naked == 3 and sub.acked == 0
        dv = bus.trace().deliveries
        assert list(dv["delivery_count"]) == [1, 2, 3]
        assert list(dv["ack"]) == ["nak"] * 3
        assert (dv["event_id"] == event.id).all()
        adv = bus.trace().advisories
        maxed = adv[adv["advisory"] == "MAX_DELIVERIES"].iloc[0]
        assert maxed["stream"] == stream and maxed["consumer"] == "billing"
        assert maxed["stream_seq"] == event.stream_seq and maxed["deliveries"] == 3
        assert (adv["advisory"] == "MSG_NAKED").sum() >= 2
        assert watch.advisories >= 3
        found = bus.trace().problems().set_index("problem")
        assert found.loc["gave_up", "consumer"] == "billing"
        assert found.loc["gave_up", "count"] == 1
        assert f"stream {stream!r}" in found.loc["gave_up", "detail"]
        assert bus.trace().summary()["advisories"] >= 3
        page = ek.report(bus.trace(), tmp_path / "r.html", progress=False).read_text()
        assert "<h2>JetStream</h2>" in page and "<td>MAX_DELIVERIES</td>" in page
        await watch.sample()  # the naks may all have come before the first periodic sample
        fig = ek.plot_jetstream(bus.trace())
        names = {t.name for t in fig.data}
        assert f"{stream}/billing" in names and "MAX_DELIVERIES" in names
        marker = next(t for t in fig.data if t.name == "MAX_DELIVERIES")
        assert list(marker.text) == [f"MAX_DELIVERIES: billing seq {event.stream_seq}"]

    async def test_term_stops_redelivery_and_is_advised(self, bus, stream):
        await bus.watch_jetstream(stream, interval=0.2)
        async def reject(event):
            raise ek.Term("malformed order")
        # (ack_wait long enough that a slow +TERM is never overtaken by a redelivery)
        sub = await bus.consume(stream, reject, consumer="strict", ack_wait=5)
        await bus.publish(f"{stream.lower()}.x", {}, jetstream=True)
        await until(lambda: (bus.trace().advisories["advisory"] == "MSG_TERMINATED").any())
        # The server's word that it is done with the message: one delivery in all
        # (consumer sequence 1), nothing waiting for an ack or to be sent. From that state
        # it never redelivers, so there is no need to wait out ack_wait.
        await server_state(bus, stream, "strict",
                           lambda i: i.delivered.consumer_seq == 1 and i.num_ack_pending == 0
                           and i.num_pending == 0 and i.num_redelivered == 0,
                           "the terminated message settled on the server")
        assert sub.termed == 1
        dv = bus.trace().deliveries
        assert list(dv["ack"]) == ["term"] and list(dv["delivery_count"]) == [1]
        found = bus.trace().problems()
        assert list(found.loc[found["problem"] == "terminated", "consumer"]) == ["strict"]

    async def test_a_durable_of_another_kind_or_already_bound_is_a_clear_error(self, bus,
                                                                                 stream):
        await bus.consume(stream, lambda e: None, consumer="once")
        with pytest.raises(ek.JetStreamError, match="already bound to a subscription"):
            await bus.consume(stream, lambda e: None, consumer="once")
        with pytest.raises(ek.JetStreamError, match="could not create consumer 'once'"):
            await bus.consume(stream, lambda e: None, consumer="once", pull=True)

    async def test_a_push_consumer_shared_by_a_queue_group_splits_the_messages(self, url,
                                                                               stream):
        async with ek.connect(url, name="w1") as one, ek.connect(url, name="w2") as two:
            subs = [await b.consume(stream, lambda e: None, consumer="pool", queue="pool")
                    for b in (one, two)]
            for i in range(40):
                await one.publish(f"{stream.lower()}.x", {"i": i}, jetstream=True)
            await until(lambda: sum(s.acked for s in subs) == 40)
            assert all(s.acked > 0 for s in subs)  # both members worked
            ids = [*one.trace().deliveries["event_id"], *two.trace().deliveries["event_id"]]
            assert len(ids) == len(set(ids)) == 40  # each message exactly once

    async def test_nak_with_delay_is_redelivered_later(self, bus, stream):
        tries = []
        async def later(event):
            tries.append(asyncio.get_running_loop().time())
            if event.delivery_count == 1:
                raise ek.Nak("not yet", delay=0.4)
        sub = await bus.consume(stream, later, consumer="patient")
        await bus.publish(f"{stream.lower()}.x", {}, jetstream=True)
        await until(lambda: sub.acked == 1)
        assert sub.naked == 1 and tries[1] - tries[0] >= 0.35


class TestSampling:
    async def test_pending_counts_match_published_minus_acked(self, bus, stream):
        """The server's backlog (pending + ack pending) is exactly published − acked."""
        release = asyncio.Event()
        async def handle(event):
            if event.data["i"] >= 12:
                await release.wait()
        watch = await bus.watch_jetstream(stream, interval=0.1)
        sub = await bus.consume(stream, handle, consumer="slow", pull=True, batch=5)
        for i in range(20):
            await bus.publish(f"{stream.lower()}.x", {"i": i}, jetstream=True)
        await until(lambda: sub.acked == 12)
        # Acks are fire-and-forget: wait until the server has applied all twelve.
        await server_state(bus, stream, "slow", lambda i: i.ack_floor.stream_seq >= 12,
                           "the twelve acks on the server")
        await watch.sample()
        info = bus.trace().consumer_info
        last = info[info["consumer"] == "slow"].iloc[-1]
        acked = int((bus.trace().deliveries["ack"] == "ack").sum())
        assert acked == 12
        assert last["backlog"] == 20 - acked == last["pending"] + last["ack_pending"]
        assert last["ack_pending"] >= 1 and last["ack_floor"] == 12
        assert last["delivered_stream_seq"] == last["delivered_seq"] >= 13
        assert last["last_active"] is not None and last["stream"] == stream
        # The lag analysis takes the server's count for this consumer and sees it stuck.
        lag = bus.trace().lag(freq="100ms")
        row = lag.set_index("consumer").loc["slow"]
        # (at least the 8 it is stuck on: a sample taken while the twenty were still
        # being published and handled, on a slow machine, saw more)
        assert row["backlog_source"] == "server" and row["backlog_max"] >= 8
        backlog = bus.trace().backlog("100ms")
        slow = backlog[backlog["consumer"] == "slow"]
        assert slow["from_server"].iloc[-1] and slow["backlog"].iloc[-1] == 8
        release.set()
        await until(lambda: sub.acked == 20)

    async def test_a_consumer_known_only_from_samples_gets_a_lag_row(self, bus, stream):
        """A durable consumer nobody in this process runs: the server's count is all we
        know, and a backlog that never moves is a STALL."""
        js = bus.nc.jetstream()
        await js.add_consumer(stream, durable_name="elsewhere", ack_policy="explicit")
        for i in range(5):
            await bus.publish(f"{stream.lower()}.x", {"i": i}, jetstream=True)
        watch = await bus.watch_jetstream(stream, interval=0.05, advisories=False)
        least = pd.Timedelta(seconds=ek.Rules().min_duration_s)

        def samples_cover_a_stall() -> bool:
            # A STALL needs the backlog stuck for the rules' minimum duration.
            ts = bus.trace().consumer_info["ts"]
            return len(ts) > 1 and ts.max() - ts.min() >= least

        await until(samples_cover_a_stall, what="samples over the minimum stall duration")
        await watch.stop()
        lag = bus.trace().lag(freq="100ms").set_index("consumer")
        row = lag.loc["elsewhere"]
        assert row["deliveries"] == 0 and row["backlog_source"] == "server"
        assert row["backlog_max"] == 5 and row["status"] == "STALL"
        fig = ek.plot_backlog(bus.trace(), "100ms")
        assert any(t.name == "elsewhere (JetStream)" for t in fig.data)

    async def test_sampling_errors_become_error_rows(self, bus):
        watch = await bus.watch_jetstream("NO_SUCH_STREAM", interval=10, advisories=False)
        assert await watch.sample() == 0
        obs = bus.trace().observations
        errors = obs[obs["kind"] == "error"]
        assert errors["detail"].str.contains("JetStream consumer sampling failed").any()


class TestAckSubjects:
    def test_both_ack_subject_forms(self):
        old = js_position(b"$JS.ACK.ORDERS.billing.2.15.7.1700000000000000000.3")
        new = js_position(b"$JS.ACK.hub.ACCHASH.ORDERS.billing.2.15.7.1700000000000000000.3.x")
        assert old == new
        assert (old.stream, old.consumer, old.delivery_count, old.stream_seq, old.consumer_seq,
                old.pending) == ("ORDERS", "billing", 2, 15, 7, 3)

    @pytest.mark.parametrize("reply", [b"_INBOX.x", b"$JS.ACK.S.c.x.1.1.1.1", b"$JS.ACK.a.b",
                                       b"$JS.ACK.S.c.1.2.3.4.5.6.7.8.9.10.11.12.13"[:20]])
    def test_lookalikes_are_not_positions(self, reply):
        assert js_position(reply) is None


class TestDescribe:
    async def test_the_summary_names_jetstream_consumers_and_their_backlog(self, bus, stream):
        js = bus.nc.jetstream()
        await js.add_consumer(stream, durable_name="idle", ack_policy="explicit")
        await bus.publish(f"{stream.lower()}.x", {}, jetstream=True)
        watch = await bus.watch_jetstream(stream, interval=10, advisories=False)
        await watch.stop()
        text = bus.trace().describe()
        assert f"jetstream    {stream}/idle (backlog 1)" in text
