"""Hostile traffic against the real capture path: no message stops a handler, a tap or a
trace, and nothing secret reaches a log. Messages come from a plain nats-py client, as from
any publisher evtkit does not control; the fuzzed ones go out byte for byte."""

from __future__ import annotations

import asyncio
import logging

import nats
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evtkit as ek
from evtkit.capture.envelope import header_block
from tests.waiting import flushed

STRUCTURED = "application/cloudevents+json"
HOSTILE_TIMES = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00",
                 "9999-12-31T23:59:59Z", "1500-01-01T00:00:00Z", "2262-04-12T00:00:00Z"]


async def _capture(url: str, send) -> tuple[ek.Trace, list[ek.Event]]:
    """Subscribe and tap ``hostile.>``, let ``send(nc)`` publish from a foreign client,
    then a last ``sentinel`` message; return the trace and what the handler saw."""
    seen: list[ek.Event] = []
    async with ek.connect(url, name="victim") as bus:
        sub = await bus.subscribe("hostile.>", seen.append, consumer="victim")
        await bus.tap("hostile.>")
        nc = await nats.connect(url, name="attacker")
        try:
            await send(nc)
            await nc.publish("hostile.sentinel", b"last")
            await flushed(nc)
        finally:
            await nc.close()
        await bus.flush()
        await asyncio.wait_for(sub.idle(), 30)
        trace = bus.trace()
    return trace, seen


class TestOneMessageStopsNothing:
    @pytest.mark.parametrize("when", HOSTILE_TIMES)
    async def test_binary_mode_time_out_of_range(self, url, when):
        async def send(nc):
            await nc.publish("hostile.t", b"x", headers={"ce-specversion": "1.0",
                                                         "ce-id": "t1", "ce-time": when})
        trace, seen = await _capture(url, send)
        assert [e.subject for e in seen] == ["hostile.t", "hostile.sentinel"]
        assert seen[0].time is None and seen[0].id == "t1"
        events = trace.events.set_index("event_id")
        assert events.loc["t1", "event_time"] is pd_nat()
        assert list(trace.deliveries["outcome"]) == ["ok", "ok"]

    @pytest.mark.parametrize("when", HOSTILE_TIMES[:2])
    async def test_structured_mode_time_out_of_range(self, url, when):
        body = orjson.dumps({"specversion": "1.0", "id": "s1", "source": "x", "type": "t",
                             "time": when, "datacontenttype": "application/json",
                             "data": {"a": 1}})

        async def send(nc):
            await nc.publish("hostile.s", body, headers={"content-type": STRUCTURED})
        trace, seen = await _capture(url, send)
        assert seen[0].id == "s1" and seen[0].time is None and seen[0].data == {"a": 1}
        assert trace.events.set_index("event_id").loc["s1", "mode"] == "structured"

    async def test_json_nested_too_deep(self, url):
        deep = b"[" * 200_000 + b"]" * 200_000

        async def send(nc):
            await nc.publish("hostile.deep", deep, headers={"content-type": STRUCTURED})
            await nc.publish("hostile.deep2", deep, headers={"content-type": "application/json"})
        trace, seen = await _capture(url, send)
        assert [e.subject for e in seen] == ["hostile.deep", "hostile.deep2", "hostile.sentinel"]
        assert seen[1].data == deep  # undecodable JSON comes back as bytes, no exception
        assert (trace.deliveries["outcome"] == "ok").all()

    async def test_a_trace_with_hostile_times_saves_and_loads(self, url, tmp_path):
        async def send(nc):
            for i, when in enumerate(HOSTILE_TIMES):
                await nc.publish("hostile.t", b"x", headers={"ce-id": f"t{i}", "ce-time": when})
        trace, _ = await _capture(url, send)
        for name in ("t.parquet", "t.jsonl"):
            loaded = ek.load(trace.save(tmp_path / name))
            assert len(loaded.events) == len(trace.events) == len(HOSTILE_TIMES) + 1
            assert loaded.events["event_time"].isna().sum() == len(HOSTILE_TIMES) + 1


class TestIdentity:
    async def test_identical_messages_whose_header_value_mentions_ce_id_stay_apart(self, url):
        async def send(nc):
            for _ in range(3):
                await nc.publish("hostile.same", b"x", headers={"X-Note": "ce-id: not mine"})
        trace, seen = await _capture(url, send)
        ids = [e.id for e in seen[:3]]
        assert len(set(ids)) == 3 and all(i.startswith("syn-") for i in ids)
        assert (trace.events["subject"] == "hostile.same").sum() == 3

    async def test_a_ce_id_in_any_case_is_the_id(self, url):
        async def send(nc):
            await nc.publish("hostile.case", b"x", headers={"Ce-Id": "mixed-1"})
        trace, seen = await _capture(url, send)
        assert seen[0].id == "mixed-1" and "mixed-1" in set(trace.events["event_id"])


def pd_nat():
    import pandas as pd

    return pd.NaT


class TestNothingSecretInLogs:
    async def test_a_failing_handlers_traceback_is_logged_without_credentials(self, bus, caplog):
        async def handle(event):
            raise ConnectionError("cannot reach nats://admin:hunter2@10.0.0.1:4222")

        sub = await bus.subscribe("hostile.log", handle, consumer="logger")
        with caplog.at_level(logging.DEBUG, logger="evtkit"):
            await bus.publish("hostile.log", b"")
            await bus.flush()
            await asyncio.wait_for(sub.idle(), 10)
        text = caplog.text
        assert "handler of logger failed" in text and "Traceback" in text
        assert "hunter2" not in text and "nats://10.0.0.1:4222" in text
        assert "hunter2" not in str(bus.trace().deliveries["error"].iloc[0])


# -- fuzzing: any header lines and payloads, pushed through the real capture path ----------

_NAMES = st.one_of(
    st.sampled_from(["ce-id", "CE-ID", "ce-time", "ce-specversion", "ce-source", "ce-type",
                     "ce-correlationid", "ce-causationid", "traceparent", "content-type",
                     "ce-datacontenttype", "evtkit-replay-of", "X-Other"]),
    st.text(st.characters(codec="ascii", exclude_characters="\r\n:\x00"), min_size=1,
            max_size=12),
)
_VALUES = st.one_of(
    st.sampled_from([*HOSTILE_TIMES, "", "  ", "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
                     "00-" + "0" * 32 + "-" + "0" * 16 + "-01", STRUCTURED, "application/json",
                     "x" * 5000, "ce-id: inside a value", "1e999", "-0"]),
    st.text(st.characters(exclude_characters="\r\n", exclude_categories=("Cs",)),
            max_size=40),
)
_PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=4)
                 | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                 max_leaves=20).map(lambda v: orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS)
                                    if _jsonable(v) else b"{}"),
    st.builds(lambda t: orjson.dumps({"specversion": "1.0", "id": "f", "time": t,
                                      "data": {"k": t}}), st.sampled_from(HOSTILE_TIMES)),
)
_MESSAGES = st.lists(st.tuples(st.lists(st.tuples(_NAMES, _VALUES), max_size=6), _PAYLOADS),
                     min_size=1, max_size=8)


def _jsonable(value) -> bool:
    try:
        orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(messages=_MESSAGES)
def test_fuzzed_messages_are_all_accounted_for(nats_server, tmp_path, messages):
    """Whatever the headers and payloads: the handler keeps running (it sees the sentinel),
    every message is received and handled once, and trace(), save(), load() and close()
    succeed."""
    async def send(nc):
        sender = ek.Bus(nats_server.url, name="fuzzer")
        await sender.open()
        try:
            for lines, payload in messages:
                text = "".join(f"{name.strip()}: {value}\r\n" for name, value in lines
                               if name.strip())
                block = header_block(text, "surrogateescape") if text else None
                await sender.send_raw("hostile.fuzz", payload, block)
            await sender.flush()
        finally:
            await sender.close()

    trace, seen = asyncio.run(_capture(nats_server.url, send))
    assert len(seen) == len(messages) + 1 and seen[-1].subject == "hostile.sentinel"
    dv = trace.deliveries
    assert len(dv) == len(messages) + 1 and (dv["outcome"] == "ok").all()
    taps = trace.observations[trace.observations["kind"] == "tap"]
    assert len(taps) == len(messages) + 1
    for name in ("f.parquet", "f.jsonl"):
        path = tmp_path / name
        assert len(ek.load(trace.save(path)).deliveries) == len(dv)
        path.unlink()
