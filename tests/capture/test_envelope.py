"""The envelope: every header block evtkit builds, checked, and the events it publishes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import evtkit as ek
from evtkit import PublishError
from evtkit._headers import parse_block
from evtkit.capture.envelope import (
    Clock,
    block_from_dict,
    check_subject,
    encode_extra,
    encode_payload,
    envelope,
    header_block,
    quoted_block,
    with_header,
)


def _publish(**options):
    defaults = {"time_text": "2026-11-27T00:00:00.000000Z", "source": "shop", "type": None,
                "cause": None, "content_type": None, "headers": None}
    return envelope("orders.placed", {"order": 1}, **{**defaults, **options})


class TestHeaderBlock:
    def test_status_line_lines_and_blank_line(self):
        assert header_block("a: 1\r\n") == b"NATS/1.0\r\na: 1\r\n\r\n"

    def test_block_from_dict_round_trips(self):
        headers = {"a": "1", "B-c": "x y"}
        assert parse_block(block_from_dict(headers)).headers == headers
        assert block_from_dict({}) is None

    def test_quoted_block_cannot_gain_lines(self):
        block = quoted_block([("x", "1\r\nInjected: yes"), ("y\nz", "2")])
        assert block is not None
        assert parse_block(block).headers == {"x": "1  Injected: yes", "y z": "2"}
        assert quoted_block([]) is None

    @given(st.text(max_size=30), st.text(max_size=30))
    def test_quoted_block_keeps_one_line_per_pair(self, name, value):
        block = quoted_block([(name, value)])
        assert block is not None and block.count(b"\r\n") == 3  # status, the pair, blank

    def test_with_header_appends_to_a_block_or_makes_one(self):
        original = header_block("ce-id: 1\r\n")
        assert parse_block(with_header(original, "evtkit-replay-of", "1")).headers == {
            "ce-id": "1", "evtkit-replay-of": "1"}
        assert parse_block(with_header(None, "k", "v")).headers == {"k": "v"}
        unterminated = b"NATS/1.0\r\nce-id: 1"
        assert parse_block(with_header(unterminated, "k", "v")).headers == {
            "ce-id": "1", "k": "v"}

    def test_with_header_refuses_line_breaks(self):
        with pytest.raises(PublishError, match="line break"):
            with_header(None, "k", "v\r\nx: y")


class TestEncodeExtra:
    def test_encodes_lines(self):
        assert encode_extra({"X-Tenant": " acme "}) == "X-Tenant: acme\r\n"

    @pytest.mark.parametrize("key", ["", "has space", "colon:", "tab\t", "naïve"])
    def test_rejects_bad_names(self, key):
        with pytest.raises(PublishError, match="not allowed"):
            encode_extra({key: "v"})

    @pytest.mark.parametrize("value", ["a\r\nInjected: 1", "a\nb", "a\rb"])
    def test_rejects_line_breaks_in_values(self, value):
        with pytest.raises(PublishError, match="line break"):
            encode_extra({"k": value})

    def test_rejects_non_string_values(self):
        with pytest.raises(PublishError, match="must be str"):
            encode_extra({"k": 1})  # type: ignore[dict-item]


class TestPayloadAndSubject:
    @pytest.mark.parametrize(("data", "raw", "media"), [
        (b"\x00\xff", b"\x00\xff", "application/octet-stream"),
        ("héllo", "héllo".encode(), "text/plain; charset=utf-8"),
        ({"a": [1, 2]}, b'{"a":[1,2]}', "application/json"),
        (None, b"", "application/octet-stream"),
        (bytearray(b"ab"), b"ab", "application/octet-stream"),
    ])
    def test_payload_bytes_and_media_type(self, data, raw, media):
        assert encode_payload(data) == (raw, media)

    def test_unencodable_payload_is_a_publish_error(self):
        with pytest.raises(PublishError, match="cannot encode object"):
            encode_payload(object())

    @pytest.mark.parametrize("subject", ["", "a b", "a\tb", "a\r\nb"])
    def test_bad_subjects(self, subject):
        with pytest.raises(PublishError, match="empty or contains whitespace"):
            check_subject(subject)

    def test_clock_formats_rfc3339_with_microseconds(self):
        clock = Clock()
        assert clock.rfc3339(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456Z"
        assert clock.rfc3339(1_700_000_000_999_999_000) == "2023-11-14T22:13:20.999999Z"
        assert clock.rfc3339(1_700_000_001_000_000_000) == "2023-11-14T22:13:21.000000Z"


class TestEnvelope:
    def test_a_root_event_starts_its_own_flow(self):
        event = _publish()
        headers = parse_block(event.block).headers
        assert event.correlation_id == event.trace_id and event.causation_id is None
        assert headers["ce-id"] == event.id and headers["ce-source"] == "shop"
        assert headers["ce-type"] == "orders.placed"  # the subject by default
        assert headers["traceparent"] == f"00-{event.trace_id}-{event.id}-01"
        assert "ce-causationid" not in headers
        assert event.raw == b'{"order":1}' and event.content_type == "application/json"

    def test_a_caused_event_joins_its_causes_flow(self):
        cause = _publish()
        effect = _publish(cause=cause)
        assert effect.correlation_id == cause.correlation_id
        assert effect.causation_id == cause.id and effect.trace_id == cause.trace_id
        assert parse_block(effect.block).get("ce-causationid") == cause.id

    def test_a_cause_given_by_id_only(self):
        effect = _publish(cause="abc")
        assert effect.correlation_id == effect.causation_id == "abc"

    def test_the_block_agrees_with_what_a_receiver_decodes(self):
        event = _publish(headers={"X-Tenant": "acme"}, type="OrderPlaced")
        seen = ek.decode_message("orders.placed", event.raw, event.block)
        assert (seen.id, seen.type, seen.source, seen.correlation_id) == (
            event.id, "OrderPlaced", "shop", event.correlation_id)
        assert seen.headers["X-Tenant"] == "acme"

    def test_managed_headers_are_refused(self):
        with pytest.raises(PublishError, match="set by evtkit"):
            _publish(headers={"CE-ID": "mine"})

    @pytest.mark.parametrize("option", ["type", "content_type", "cause"])
    def test_line_breaks_in_attributes_are_refused(self, option):
        with pytest.raises(PublishError, match="line break"):
            _publish(**{option: "x\r\nInjected: 1"})
