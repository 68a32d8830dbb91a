"""Many processes, one trace: real service processes ship rows to a collector over NATS."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import msgpack
import nats
import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evtkit as ek
from evtkit.capture.telemetry import FORMAT, Collector
from tests.paths import ROOT
from tests.waiting import until

WIRE_INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)


def service(role: str, url: str, count: int = 0) -> subprocess.Popen[bytes]:
    """Start one link of the chain (tests/services/chain.py) and wait until it is ready."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("EVTKIT_TELEMETRY", None)
    proc = subprocess.Popen([sys.executable, "-m", "tests.services.chain", role, url,
                             str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            cwd=ROOT, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready", f"{role} did not start"
    return proc


def finish(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop the services upstream first (each finishes what it received, publishes what
    that causes and flushes its telemetry before the next one stops); bounded."""
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(30) == 0
        assert proc.stdout is not None
        proc.stdout.close()


async def finish_async(procs: list[subprocess.Popen[bytes]]) -> None:
    """:func:`finish` off the event loop, so a collector in this process keeps answering."""
    await asyncio.to_thread(finish, procs)


def publish_orders(gateway: subprocess.Popen[bytes]) -> None:
    assert gateway.stdin is not None and gateway.stdout is not None
    gateway.stdin.write(b"go\n")
    gateway.stdin.flush()
    assert gateway.stdout.readline().strip() == b"published"


class TestThreeProcesses:
    async def test_rows_from_three_processes_merge_with_causation_across_them(self, url):
        async with ek.connect(url, name="notebook") as bus:
            collector = await bus.collect()
            procs = [service("gateway", url, 150), service("billing", url),
                     service("mailer", url)]
            try:
                await asyncio.to_thread(publish_orders, procs[0])
            finally:
                await finish_async(procs)
            await until(lambda: collector.rows >= 150 * 6, what="every row")
            trace = bus.trace()
        assert len(collector.sources) == 3
        assert collector.rows == 150 * 6  # publish, receive, handled for each of 2 hops
        ev = trace.events
        orders = ev[ev["subject"] == "orders.placed"]
        charges = ev[ev["subject"] == "billing.charged"]
        assert len(orders) == len(charges) == 150
        assert set(orders["producer"]) == {"gateway"}
        # Each charge was caused by an order, published by billing's handler of exactly it.
        assert set(charges["causation_id"]) == set(orders["event_id"])
        assert set(charges["emitted_by"]) == {"billing"}
        dv = trace.deliveries
        by_seq = dv.set_index("seq")
        emitting = by_seq.loc[charges["emitted_seq"].astype(int)]
        assert list(emitting["event_id"]) == list(charges["causation_id"])
        assert set(dv["consumer"]) == {"billing", "mailer"}
        assert (dv["outcome"] == "ok").all() and len(dv) == 300
        chains = trace.chains()
        assert len(chains) == 150 and set(chains["depth"]) == {2}
        assert set(chains["consumers"]) == {2}
        assert trace.drops == 0
        assert set(trace.observations["observer"]) == {"gateway", "billing", "mailer"}
        assert len(trace.metadata["collected"]) == 3
        assert "collected    from 3 processes: billing, gateway, mailer" in trace.describe()

    def test_record_collect_writes_one_trace_from_the_services(self, url, tmp_path):
        out = tmp_path / "collected.parquet"
        # Even with telemetry switched on around it, the recorder does not ship its own rows.
        recorder = subprocess.Popen(
            [sys.executable, "-m", "evtkit", "record", "--collect", "--server", url,
             "--duration", "120", "--out", str(out), "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
            env={**os.environ, "EVTKIT_TELEMETRY": "0.05"})
        assert recorder.stderr is not None
        assert b"recording from" in recorder.stderr.readline()
        procs = [service("gateway", url, 40), service("billing", url)]
        try:
            publish_orders(procs[0])
        finally:
            finish(procs)
        # Each service exits only after the collector answered its last batch: stop now.
        recorder.send_signal(signal.SIGINT)
        stdout, stderr = recorder.communicate(timeout=30)
        assert recorder.returncode == 0, stderr.decode()
        trace = ek.load(out)
        counts = trace.events["subject"].value_counts().to_dict()
        assert counts == {"orders.placed": 40, "billing.charged": 40}
        assert len(trace.metadata["collected"]) == 2
        assert set(trace.deliveries["consumer"]) == {"billing"}


class TestCollectorCost:
    async def test_busy_and_span_measure_the_merging(self, bus):
        collector = await bus.collect()
        assert (collector.busy_s, collector.span_s) == (0.0, 0.0)
        rows = [("publish", 1_000 + i, "svc", None, None, b"s", None, b"{}", None, None)
                for i in range(20_000)]
        for first in (0, 20_000):
            collector.sink(b"_EVTKIT.telemetry.svc", b"", msgpack.packb({
                "format": FORMAT, "source": "h/1/svc/0", "name": "svc", "batch": 0,
                "first": first, "rows": rows, "lost": 0, "stripped": [], "metadata": None},
                use_bin_type=True), None)
        assert collector.rows == 40_000
        assert collector.busy_s > 0 and collector.span_s > 0


class TestNothingLost:
    async def test_missing_batches_and_lost_rows_become_drop_rows(self, bus):
        collector = await bus.collect()

        def batch(first: int, n: int, lost: int = 0) -> bytes:
            rows = [("publish", 1_000 + first + i, "svc", None, None, b"s", None, b"{}",
                     None, None) for i in range(n)]
            return msgpack.packb({"format": FORMAT, "source": "h/1/svc/0", "name": "svc",
                                  "batch": 0, "first": first, "rows": rows, "lost": lost,
                                  "stripped": [], "metadata": None}, use_bin_type=True)

        collector.sink(b"_EVTKIT.telemetry.svc", b"", batch(0, 3), None)
        collector.sink(b"_EVTKIT.telemetry.svc", b"", batch(5, 2), None)
        collector.sink(b"_EVTKIT.telemetry.svc", b"", batch(7, 1, lost=4), None)
        obs = bus.trace().observations
        drops = obs[obs["kind"] == "drop"]
        assert list(drops["count"]) == [2, 4]
        assert "2 rows from svc never reached the collector" in drops["detail"].iloc[0]
        assert bus.trace().drops == 6
        assert (obs["kind"] == "publish").sum() == 6

    async def test_without_a_collector_rows_wait_and_arrive_once_one_is_there(self, url):
        async with ek.connect(url, name="svc") as svc, ek.connect(url, name="home") as home:
            sender = await svc.send_telemetry(interval=60)
            sender.ack_timeout = 0.5
            for i in range(3):
                await svc.publish("wait.x", {"i": i})
            assert await sender.flush() == 0  # nobody answered: the rows stay queued
            assert sender.rows == 0 and sum(len(r) for _, r in sender._backlog) == 3
            collector = await home.collect()
            sender.ack_timeout = 10  # the answer now comes; a loaded machine may be slow
            await svc.publish("wait.x", {"i": 3})
            assert await sender.flush() == 4
            assert collector.rows == 4 and not sender._backlog
            payloads = home.trace().events["payload"]
            assert sorted(orjson.loads(p)["i"] for p in payloads) == [0, 1, 2, 3]

    async def test_a_full_backlog_is_counted_and_reported_as_lost(self, url):
        async with ek.connect(url, name="svc") as svc, ek.connect(url, name="home") as home:
            sender = await svc.send_telemetry(interval=60)
            sender.ack_timeout, sender.max_backlog = 0.5, 4
            for i in range(10):
                await svc.publish("full.x", {"i": i})
            await sender.flush()
            assert sender.lost == 10  # one batch of 10 rows did not fit in 4
            collector = await home.collect()
            sender.ack_timeout = 10  # the answer now comes; a loaded machine may be slow
            await svc.publish("full.x", {"i": 10})
            await sender.flush()
            trace = home.trace()
        assert collector.rows == 1
        drops = trace.observations[trace.observations["kind"] == "drop"]
        assert list(drops["count"]) == [10] and "could not send 10 rows" in drops["detail"].iloc[0]

    @pytest.mark.parametrize("data", [b"\xff\x00garbage", msgpack.packb({"format": 99})])
    async def test_unreadable_batches_become_error_rows(self, bus, data):
        collector = await bus.collect()
        collector.sink(b"_EVTKIT.telemetry.x", b"", data, None)
        obs = bus.trace().observations
        assert obs["detail"].str.contains("unreadable telemetry batch").any()
        assert collector.rows == 0

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(rows=st.lists(st.one_of(  # msgpack's own range: signed and unsigned 64-bit
        st.tuples(st.sampled_from(["publish", "handled", "tap", "hop", "nonsense"]),
                  WIRE_INTS, st.text(max_size=5), st.none(), st.none(),
                  st.binary(max_size=5), st.none(), st.binary(max_size=5), st.none(),
                  st.one_of(st.none(), WIRE_INTS, st.tuples(WIRE_INTS), st.text())),
        WIRE_INTS, st.text(max_size=5), st.lists(WIRE_INTS, max_size=3)), max_size=5))
    async def test_malformed_rows_become_an_error_row_not_a_broken_trace(self, bus, rows):
        collector = Collector(bus)
        before = len(bus.recorder.rows)
        collector.sink(b"_EVTKIT.telemetry.x", b"", msgpack.packb(
            {"format": FORMAT, "source": "s", "name": "x", "first": 0, "rows": rows},
            use_bin_type=True), None)
        added = bus.recorder.rows[before:]
        if collector.rows:  # all well-formed: merged as they were (references to rows
            # this collector never got are reported in one error row beside them)
            merged = [r for r in added if not (r[0] == "error" and "refer to rows" in r[9])]
            assert len(merged) == collector.rows == len(rows)
            assert len(added) - len(merged) <= 1
        else:  # anything malformed: the batch becomes one error row
            assert [row[0] for row in added] == (["error"] if rows else [])
        assert len(bus.trace().observations) == len(bus.recorder.rows)  # still builds

    async def test_a_row_too_big_to_forward_travels_without_payload_and_says_so(self, url):
        async with ek.connect(url, name="collector") as home, \
                ek.connect(url, name="big") as big:
            collector = await home.collect()
            sender = await big.send_telemetry(interval=60)
            sender.ack_timeout = 30  # a loaded machine must not turn this into a resend
            room = big.nc.max_payload - 600
            await big.publish("big.blob", b"x" * room)
            await big.publish("big.small", b"ok")
            await sender.flush()
            await big.flush()
            await until(lambda: collector.rows >= 2, what="both rows")
            trace = home.trace()
        assert sender.stripped == 1
        obs = trace.observations
        assert obs["error"].str.contains("too large to forward").any()
        payloads = dict(zip(trace.events["subject"], trace.events["payload"], strict=True))
        assert payloads["big.small"] == b"ok" and pd.isna(payloads["big.blob"])

    async def test_the_environment_variable_turns_telemetry_on(self, url, monkeypatch):
        monkeypatch.setenv("EVTKIT_TELEMETRY", "0.05")
        async with ek.connect(url, name="home") as home:
            collector = await home.collect()
            async with ek.connect(url, name="svc") as svc:
                await svc.publish("env.x", {})
                await until(lambda: collector.rows, what="a row")
            assert "env.x" in set(home.trace().events["subject"])

    async def test_zero_turns_telemetry_off_whatever_the_environment_says(self, url,
                                                                        monkeypatch):
        monkeypatch.setenv("EVTKIT_TELEMETRY", "0.05")
        async with ek.connect(url, name="quiet", telemetry=0) as bus:
            assert not any(isinstance(o, ek.TelemetrySender) for o in bus.features)
        with pytest.raises(ValueError, match="telemetry must be seconds"):
            await ek.connect(url, name="bad", telemetry=-1)

    @pytest.mark.parametrize("value", ["soon", "0", "-1"])
    async def test_a_bad_environment_value_is_a_clear_error(self, url, monkeypatch, value):
        monkeypatch.setenv("EVTKIT_TELEMETRY", value)
        with pytest.raises(ValueError, match="EVTKIT_TELEMETRY"):
            await ek.connect(url, name="svc")


def _batch(**fields) -> bytes:
    good = {"format": FORMAT, "source": "h/1/svc/0", "name": "svc", "batch": 0, "first": 0,
            "rows": [("publish", 1_000, "svc", None, None, b"s", None, b"{}", None, None)],
            "lost": 0, "stripped": [], "metadata": {"client": "svc"}}
    return msgpack.packb({**good, **fields}, use_bin_type=True)


class TestUntrustedBatches:
    """A batch is untrusted input: any field of the wrong type or range is refused with an
    error row, the collector carries on, and the trace stays loadable."""

    @pytest.mark.parametrize("fields", [
        {"source": {"a": 1}}, {"source": b"bytes"}, {"source": ""}, {"source": "x" * 301},
        {"lost": "abc"}, {"lost": 2**64 - 1}, {"lost": -1}, {"metadata": [1, 2]},
        {"stripped": 5}, {"stripped": [99]}, {"first": float("inf")}, {"first": -5},
        {"first": True},
        {"rows": [("publish", -(2**63), "svc", None, None, b"s", None, b"", None, None)]},
        {"rows": [("drop", 5, "svc", None, None, None, None, None, None, (2**62, "x"))]},
    ], ids=lambda f: f"{next(iter(f))}={next(iter(f.values()))!r:.20}")
    async def test_a_bad_field_is_refused_and_collecting_goes_on(self, bus, tmp_path, fields):
        collector = await bus.collect()
        collector.sink(b"_EVTKIT.telemetry.svc", b"", _batch(**fields), None)
        assert collector.rows == 0 and collector.refused == 1
        collector.sink(b"_EVTKIT.telemetry.svc", b"", _batch(source="h/2/ok/0"), None)
        assert collector.rows == 1
        trace = bus.trace()
        errors = trace.observations[trace.observations["kind"] == "error"]
        assert errors["error"].str.contains("refused").sum() == 1
        assert trace.drops >= 0
        assert len(ek.load(trace.save(tmp_path / "t.parquet")).events) == len(trace.events)

    async def test_a_batch_from_another_connection_cannot_speak_for_a_sender(self, url):
        async with ek.connect(url, name="home") as home, ek.connect(url, name="svc") as svc:
            collector = await home.collect()
            sender = await svc.send_telemetry(interval=60)
            await svc.publish("trust.x", {"i": 0})
            assert await sender.flush() == 1
            forger = await nats.connect(url, name="forger")
            try:
                answer = await forger.request(
                    sender.subject, _batch(source=sender.source, first=2**31), timeout=5)
            finally:
                await forger.close()
            assert answer.data.startswith(b"-ERR") and b"another connection" in answer.data
            await svc.publish("trust.x", {"i": 1})
            assert await sender.flush() == 1  # the real sender's rows still count
            trace = home.trace()
        assert collector.refused == 1 and trace.drops == 0
        assert sorted(orjson.loads(p)["i"] for p in trace.events["payload"]) == [0, 1]

    async def test_rows_that_refer_to_unknown_rows_are_reported(self, bus):
        collector = await bus.collect()
        handled = ("handled", 2_000, "svc", "c", None, None, None, None, None,
                   (12345, 1_500, "ok", None))
        collector.sink(b"_EVTKIT.telemetry.svc", b"", _batch(rows=[handled]), None)
        assert collector.rows == 1
        errors = bus.trace().observations.query("kind == 'error'")
        assert errors["error"].str.contains("1 rows from svc refer to rows").any()

    @settings(max_examples=200, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.recursive(
        st.none() | st.booleans() | WIRE_INTS | st.floats() | st.text(max_size=8)
        | st.binary(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
            st.sampled_from(["format", "source", "name", "first", "rows", "lost",
                             "stripped", "metadata", "batch"]) | st.text(max_size=4),
            inner, max_size=9),
        max_leaves=30))
    async def test_any_messagepack_never_breaks_the_collector(self, bus, value):
        collector = Collector(bus)
        collector.sink(b"_EVTKIT.telemetry.x", b"", msgpack.packb(value, use_bin_type=True),
                       None)
        assert collector.rows + collector.refused == 1 or collector.rows == 0
        assert len(bus.trace().observations) == len(bus.recorder.rows)
