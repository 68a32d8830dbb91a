"""Reading one message into an Event, and the bulk observation builder agreeing with it."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evtkit import decode_message, parse_traceparent
from evtkit.event import SyntheticIds, decode_data, parse_time
from evtkit.observation import build_observations
from tests.hostile import rfc3339

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def block(**headers: str) -> bytes:
    lines = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return f"NATS/1.0\r\n{lines}\r\n".encode()


class TestTraceparent:
    def test_valid(self):
        assert parse_traceparent(f"00-{TRACE}-{SPAN}-01") == (TRACE, SPAN, True)
        assert parse_traceparent(f"00-{TRACE}-{SPAN}-00") == (TRACE, SPAN, False)

    def test_future_versions_may_append_fields(self):
        assert parse_traceparent(f"01-{TRACE}-{SPAN}-01-extra") == (TRACE, SPAN, True)
        assert parse_traceparent(f"00-{TRACE}-{SPAN}-01-extra") is None

    def test_invalid_ones_are_none(self):
        for bad in [
            "", "garbage", f"ff-{TRACE}-{SPAN}-01", f"00-{'0' * 32}-{SPAN}-01",
            f"00-{TRACE}-{'0' * 16}-01", f"00-{TRACE.upper()}-{SPAN}-01", f"00-{TRACE}-{SPAN}",
        ]:
            assert parse_traceparent(bad) is None, bad


class TestDecodeMessage:
    def test_binary_mode(self):
        event = decode_message(
            "orders.placed",
            b'{"order": 1}',
            block(ce_specversion="1.0", ce_id="e1", ce_source="shop", ce_type="orders.placed",
                  ce_time="2026-11-26T10:00:00.123456Z", ce_datacontenttype="application/json",
                  ce_correlationid="flow-1", ce_causationid="e0",
                  traceparent=f"00-{TRACE}-{SPAN}-01"),
        )
        assert (event.id, event.type, event.source) == ("e1", "orders.placed", "shop")
        assert (event.correlation_id, event.causation_id) == ("flow-1", "e0")
        assert (event.trace_id, event.parent_id, event.sampled) == (TRACE, SPAN, True)
        assert event.time == datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC)
        assert event.data == {"order": 1}
        assert event.mode == "binary" and not event.synthetic_id and not event.is_root
        assert event.headers["ce-source"] == "shop"

    def test_structured_mode(self):
        envelope = {
            "specversion": "1.0", "id": "s1", "source": "legacy", "type": "t",
            "time": "2026-11-26T10:00:00Z", "datacontenttype": "application/json",
            "correlationid": "c", "causationid": "p", "data": {"x": 1},
        }
        event = decode_message(
            "s", json.dumps(envelope).encode(),
            block(Content_Type="application/cloudevents+json; charset=utf-8"),
        )
        assert (event.id, event.source, event.causation_id, event.mode) == (
            "s1", "legacy", "p", "structured")
        assert event.data == {"x": 1}

    def test_structured_base64_data(self):
        envelope = {"id": "b", "data_base64": base64.b64encode(b"\x00\xff").decode()}
        event = decode_message("s", json.dumps(envelope).encode(),
                               block(Content_Type="application/cloudevents+json"))
        assert event.raw == b"\x00\xff"

    def test_bare_message_gets_a_synthetic_root_identity(self):
        event = decode_message("a.b", b"\xff\xfe", None)
        assert event.id.startswith("syn-") and event.synthetic_id
        assert event.correlation_id == event.id and event.is_root
        assert event.mode == "bare" and event.data == b"\xff\xfe"

    def test_traceparent_alone_gives_the_flow(self):
        event = decode_message("a", b"", block(traceparent=f"00-{TRACE}-{SPAN}-01"))
        assert event.correlation_id == TRACE and event.is_root

    def test_malformed_attributes_make_a_root_not_an_error(self):
        event = decode_message(
            "a", b"{not json",
            block(ce_id="x", ce_causationid="", ce_time="yesterday", traceparent="00-zz",
                  ce_datacontenttype="application/json") + b"junk line\r\n",
        )
        assert event.is_root and event.time is None and event.trace_id is None
        assert event.data == b"{not json"  # undecodable JSON stays bytes

    def test_structured_with_broken_json_falls_back_to_binary_rules(self):
        event = decode_message("a", b"{oops", block(Content_Type="application/cloudevents+json"))
        assert event.mode == "bare" and event.synthetic_id


class TestSyntheticIds:
    def test_same_bytes_same_ids_per_observer(self):
        first, second = SyntheticIds(), SyntheticIds()
        a = [first(b"s", None, b"x") for _ in range(3)]
        b = [second(b"s", None, b"x") for _ in range(3)]
        assert a == b and len(set(a)) == 3
        assert first(b"s", None, b"y") != a[0]


class TestDecodeData:
    def test_by_content_type(self):
        assert decode_data(b"hi", "text/plain; charset=utf-8") == "hi"
        assert decode_data(b"\xff", "text/plain") == b"\xff"
        assert decode_data(b"[1]", "application/vnd.x+json") == [1]
        assert decode_data(b"\x00", None) == b"\x00"


class TestParseTime:
    def test_nanoseconds_are_cut_to_microseconds(self):
        assert parse_time("2026-01-02T03:04:05.123456789+01:00") == datetime(
            2026, 1, 2, 2, 4, 5, 123456, tzinfo=UTC)

    def test_needs_a_zone(self):
        assert parse_time("2026-01-02T03:04:05") is None
        assert parse_time("2026-02-30T03:04:05Z") is None


# --- the bulk builder gives the same identity as decode_message ------------------------------

_ids = st.one_of(st.none(), st.just(""), st.text("abcdef0123456789-", min_size=1, max_size=12))
_traceparents = st.one_of(
    st.none(),
    st.just(f"00-{TRACE}-{SPAN}-01"),
    st.just(f"00-{TRACE}-{SPAN}-00"),
    st.just(f"01-{TRACE}-{SPAN}-03-more"),
    st.just(f"ff-{TRACE}-{SPAN}-01"),
    st.text(max_size=10),
)
_times = st.one_of(
    st.none(),
    st.sampled_from(["2026-11-26T10:00:00Z", "2026-11-26T10:00:00.5+02:00", "nope", "",
                     "2026-11-26T10:00:00", "2026-13-01T00:00:00Z", "2026-11-28t10:00:00z",
                     "2024-02-29T23:59:59.999999999-23:59", "2262-04-11T23:47:16.854775807Z"]),
    rfc3339,
)


@st.composite
def _messages(draw):
    headers = {}
    for name, strategy in (
        ("ce-id", _ids), ("ce-specversion", st.sampled_from([None, "1.0", ""])),
        ("ce-type", _ids), ("ce-source", _ids), ("ce-correlationid", _ids),
        ("ce-causationid", _ids), ("traceparent", _traceparents), ("ce-time", _times),
        ("ce-datacontenttype", st.sampled_from([None, "application/json", ""])),
        ("Content-Type", st.sampled_from([None, "text/plain", "application/cloudevents+json"])),
    ):
        value = draw(strategy)
        if value is not None:
            headers[draw(st.sampled_from([name, name.upper()]))] = value
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    raw = (f"NATS/1.0\r\n{lines}\r\n".encode() if headers else None)
    if draw(st.booleans()) and raw is not None:
        raw += draw(st.binary(max_size=10))
    payload = draw(st.one_of(
        st.binary(max_size=30),
        st.builds(lambda i: json.dumps({"id": i, "source": "j", "causationid": "q"}).encode(),
                  _ids),
    ))
    subject = draw(st.text("abc.>*", min_size=1, max_size=8)).encode()
    return subject, payload, raw


class TestBulkAgreesWithDecodeMessage:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_messages(), min_size=1, max_size=10))
    def test_identity_columns(self, messages):
        ids = SyntheticIds()
        rows = []
        for subject, payload, raw in messages:
            syn = ids(subject, raw, payload)
            rows.append(("tap", time.time_ns(), "t", None, None, subject, None, payload, raw, syn))
        frame = build_observations(rows)
        for (subject, payload, raw), row, (_, _, _, _, _, _, _, _, _, syn) in zip(
            messages, frame.itertuples(), rows, strict=True
        ):
            event = decode_message(subject.decode("utf-8", "replace"), payload, raw,
                                   synthetic=syn)
            got = {
                "id": row.event_id, "type": _none(row.type), "source": _none(row.source),
                "correlation_id": row.correlation_id,
                "causation_id": _none(row.causation_id), "trace_id": _none(row.trace_id),
                "parent_id": _none(row.parent_id), "sampled": _none(row.sampled),
                "mode": row.mode, "synthetic_id": bool(row.id_synthetic),
                "time": None if pd.isna(row.event_time) else row.event_time.floor("us"),
            }
            want = {
                "id": event.id, "type": event.type, "source": event.source,
                "correlation_id": event.correlation_id, "causation_id": event.causation_id,
                "trace_id": event.trace_id, "parent_id": event.parent_id,
                "sampled": event.sampled, "mode": event.mode,
                "synthetic_id": event.synthetic_id,
                "time": None if event.time is None else pd.Timestamp(event.time),
            }
            assert got == want, raw


def _none(value):
    return None if pd.isna(value) else value
