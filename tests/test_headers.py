"""Header blocks read: the one-message parser and the bulk parser agreeing."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evtkit._headers import CLOUDEVENTS, KNOWN, header_name, joined, parse_block, parse_blocks
from tests.hostile import blocks as _blocks


class TestParseBlock:
    def test_splits_lines_and_keeps_first_value(self):
        parsed = parse_block(b"NATS/1.0\r\nce-id: 1\r\nX: a\r\nce-id: 2\r\n\r\n")
        assert parsed.headers == {"ce-id": "1", "X": "a"}
        assert parsed.get("ce-id") == "1"
        assert parsed.malformed == 0

    def test_matches_known_names_ignoring_ascii_case(self):
        assert parse_block(b"NATS/1.0\r\nCE-ID:  7 \r\n\r\n").get("ce-id") == "7"

    def test_lines_without_colon_are_counted_not_raised(self):
        parsed = parse_block(b"NATS/1.0\r\ngarbage\r\nok: 1\r\n\r\n")
        assert parsed.headers == {"ok": "1"}
        assert parsed.malformed == 1

    def test_status_line_and_non_utf8_never_raise(self):
        assert parse_block(b"NATS/1.0 503\r\n\r\n").headers == {}
        assert parse_block(b"NATS/1.0\r\nk: \xff\xfe\r\n\r\n").headers == {"k": "\ufffd\ufffd"}
        assert parse_block(None).headers == {}


class TestBulkAgreesWithOneByOne:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_blocks, max_size=12), st.integers(1, 5))
    def test_known_values_lines_and_malformed(self, blocks, chunk):
        bulk = parse_blocks(blocks, chunk=chunk)
        for i, block in enumerate(blocks):
            one = parse_block(block)
            for name in KNOWN:
                assert bulk.known[name][i].as_py() == one.get(name), (name, block)
            assert bulk.malformed[i] == one.malformed
            has_other = any(header_name(k) not in CLOUDEVENTS for k in one.headers)
            assert (bulk.extra[i] > 0) == has_other

    def test_empty_input(self):
        bulk = parse_blocks([])
        assert all(len(a) == 0 for a in bulk.known.values())

    def test_blocks_are_split_where_they_meet(self):
        """Blocks lie back to back in one buffer: a CR ending one and an LF starting the
        next are no line break, and a block without a final CRLF ends its last line."""
        blocks = [b"NATS/1.0\r\nce-id: a\r", b"\nce-id: b\r\n", b"NATS/1.0\r\nce-type: t",
                  b"", None, b"\r\nce-id: c\r\n\r\n", b"NATS/1.0\r\nbroken\r\nce-id:  d "]
        bulk = parse_blocks(blocks, chunk=2)
        for i, block in enumerate(blocks):
            one = parse_block(block)
            for name in KNOWN:
                assert bulk.known[name][i].as_py() == one.get(name), (i, name)
            assert bulk.malformed[i] == one.malformed, i


class TestJoined:
    def test_the_arrow_array_holds_the_values_and_the_missing_ones(self):
        values = [b"ab", None, b"", b"\x00\xff"]
        array, raw, offsets = joined(values)
        assert array.to_pylist() == values
        assert bytes(raw[offsets[0]:offsets[-1]]) == b"ab\x00\xff"
        assert raw[:offsets[0]].tolist() == [0] * 8 and raw[offsets[-1]:].tolist() == [0] * 8

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.one_of(st.none(), st.binary(max_size=20))))
    def test_round_trips(self, values):
        array, _, _ = joined(values)
        assert array.to_pylist() == values
