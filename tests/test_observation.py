"""Observation rows: Row positions agree with ROW_FIELDS, check_rows() refuses malformed rows
(telemetry input), and build_observations() makes a conforming frame from every kind."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evtkit.capture.recorder import Recorder
from evtkit.event import decode_message, parse_traceparent, synthetic_id
from evtkit.observation import (
    CONSUMER_INFO_FIELDS,
    MESSAGE_KINDS,
    ROW_FIELDS,
    Row,
    build_observations,
    check_rows,
)
from evtkit.schema import KINDS, OBSERVATIONS, as_dicts
from tests.hostile import HEXES, traceparents

SEC = 1_000_000_000
T = 1_700_000_000 * SEC
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
BLOCK = (b"NATS/1.0\r\nce-id: e1\r\nce-type: order.placed\r\nce-source: shop\r\n"
         b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
         b"x-tenant: acme\r\n\r\n")
ACK = b"$JS.ACK.ORDERS.worker.2.15.7.1700000000000000000.3"


def message_rows() -> list[tuple]:
    """publish, receive and tap rows shaped as the capture code appends them."""
    return [
        ("publish", T, "shop", None, None, b"orders.placed", None, b'{"n":1}', BLOCK, None),
        ("receive", T + 1, "w1", "billing", "g", b"orders.placed", None, b'{"n":1}', BLOCK,
         None),
        ("tap", T + 2, "tap", None, None, b"orders.placed", b"_INBOX.x", b"hi", None,
         "syn-stored-0"),
        ("publish", T + 3, "w1", "billing", None, b"payments.due", None, b"{}", None,
         (1, "PAY", 42)),
        ("receive", T + 4, "w2", "worker", None, b"payments.due", ACK, b"{}", None, None),
    ]


def other_rows() -> list[tuple]:
    """One row of every non-message kind, as the capture code appends them."""
    return [
        ("handled", T + 5, "w1", "billing", "g", None, None, None, None,
         (1, T + 4, "error", "ValueError: nope")),
        ("handled", T + 6, "w2", "worker", None, None, None, None, None,
         (4, T + 5, "ok", None, "ack")),
        ("drop", T + 7, "w1", "billing", None, b"orders.placed", None, None, None,
         (3, "slow consumer")),
        ("disconnect", T + 8, "w1", None, None, None, None, None, None, "down"),
        ("reconnect", T + 9, "w1", None, None, None, None, None, None, "back"),
        ("error", T + 10, "w1", None, None, None, None, None, None, "TimeoutError: x"),
        ("consumer_info", T + 11, "w2", "worker", None, None, None, None, None,
         ("PAY", 5, 2, 1, 0, 9, 10, 8, T, "n1")),
        ("advisory", T + 12, "w2", "worker", None,
         b"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.PAY.worker", None, b"{}", None,
         ("MAX_DELIVERIES", "PAY", 10, 5)),
        ("hop", T + 13, "w2", "billing", "g", b"orders.placed", None, None, BLOCK,
         ("n1", "eg", None)),
    ]


def all_rows() -> list[tuple]:
    return message_rows() + other_rows()


def replaced(row: tuple, field: int, value: object) -> tuple:
    return row[:field] + (value,) + row[field + 1:]


class TestRow:
    def test_positions_agree_with_the_field_names(self):
        for i, name in enumerate(ROW_FIELDS):
            assert getattr(Row, name.upper()) == i, name
        assert ROW_FIELDS[Row.SUBJECT] == "subject"
        assert ROW_FIELDS[Row.EXTRA] == "extra"

    def test_one_position_per_field(self):
        positions = [v for k, v in vars(Row).items() if k.isupper()]
        assert sorted(positions) == list(range(len(ROW_FIELDS)))

    def test_consumer_info_fields_are_observation_columns(self):
        assert set(CONSUMER_INFO_FIELDS) <= set(OBSERVATIONS.names)

    def test_message_kinds_are_kinds(self):
        assert set(MESSAGE_KINDS) <= set(KINDS)


class TestCheckRows:
    def test_accepts_every_kind_as_capture_makes_it(self):
        rows = all_rows()
        assert {row[Row.KIND] for row in rows} == set(KINDS)
        check_rows(tuple(rows))

    def test_accepts_rows_the_recorder_adds(self):
        recorder = Recorder()
        recorder.add("drop", "w", consumer="c", subject=b"s", extra=(1, "slow consumer"))
        recorder.add("error", "w", extra="boom")
        recorder.add("disconnect", "w", extra="down")
        recorder.add("reconnect", "w", extra="up")
        recorder.add("handled", "w", consumer="c", extra=(0, T, "ok", None))
        check_rows(tuple(recorder.rows))

    def test_accepts_no_rows(self):
        check_rows(())

    def test_accepts_the_int64_limits(self):
        row = message_rows()[0]
        check_rows((replaced(row, Row.TS, INT64_MIN), replaced(row, Row.TS, INT64_MAX)))

    def test_refuses_a_list_of_rows(self):
        with pytest.raises(ValueError, match="rows must be a tuple of rows, not list"):
            check_rows(list(all_rows()))

    @pytest.mark.parametrize("length", [0, 9, 11])
    def test_refuses_rows_of_the_wrong_length(self, length):
        row = (message_rows()[0] + (None,))[:length]
        with pytest.raises(ValueError, match="not a capture row"):
            check_rows((row,))

    def test_refuses_a_row_that_is_not_a_tuple(self):
        with pytest.raises(ValueError, match="not a capture row"):
            check_rows((list(message_rows()[0]),))

    @pytest.mark.parametrize("kind", ["bogus", "PUBLISH", "", None, 1])
    def test_refuses_an_unknown_kind(self, kind):
        with pytest.raises(ValueError, match="not a capture row"):
            check_rows((replaced(message_rows()[0], Row.KIND, kind),))

    @pytest.mark.parametrize(("field", "value"), [
        (Row.TS, 1.5),
        (Row.TS, True),  # a bool is not an int here
        (Row.TS, None),
        (Row.TS, "1700000000"),
        (Row.OBSERVER, None),
        (Row.OBSERVER, b"shop"),
        (Row.CONSUMER, b"billing"),
        (Row.QUEUE, 3),
        (Row.SUBJECT, "orders.placed"),  # bytes on the wire, not str
        (Row.REPLY, "inbox"),
        (Row.PAYLOAD, "{}"),
        (Row.HEADERS, "NATS/1.0"),
        (Row.EXTRA, 5.0),
    ])
    def test_refuses_wrong_types(self, field, value):
        with pytest.raises(ValueError, match="not a capture row"):
            check_rows((replaced(message_rows()[0], field, value),))

    @pytest.mark.parametrize(("kind", "extra"), [
        ("handled", (1, T, "ok")),  # too short
        ("handled", (1, T, "ok", None, "ack", "more")),  # too long
        ("handled", [1, T, "ok", None]),  # a list, not a tuple
        ("handled", ("1", T, "ok", None)),
        ("drop", (None, "x")),  # the count is required
        ("drop", 3),
        ("receive", 7),  # a receive keeps a synthetic id, not a number
        ("publish", (1, "S")),
        ("publish", "ref"),
        ("disconnect", 1),
        ("consumer_info", ("S", 1, 2, 3, 4, 5, 6, 7, 8)),  # one field short
        ("consumer_info", ("S", "1", 2, 3, 4, 5, 6, 7, 8, None)),
        ("advisory", ("MAX_DELIVERIES", "S", "10", 5)),
        ("hop", ("n1", "eg")),
    ])
    def test_refuses_extras_of_the_wrong_shape(self, kind, extra):
        row = ("receive", T, "w", None, None, b"s", None, b"", None, None)
        with pytest.raises(ValueError, match="not a capture row"):
            check_rows((replaced(replaced(row, Row.KIND, kind), Row.EXTRA, extra),))

    @pytest.mark.parametrize("value", [2**63, INT64_MIN - 1, 2**64])
    def test_refuses_ints_outside_int64(self, value):
        ts = replaced(message_rows()[0], Row.TS, value)
        ref = replaced(message_rows()[0], Row.EXTRA, value)
        handled = replaced(other_rows()[0], Row.EXTRA, (value, T, "ok", None))
        info = other_rows()[6]
        pending = replaced(info, Row.EXTRA, ("PAY", value, *info[Row.EXTRA][2:]))
        for row in (ts, ref, handled, pending):
            with pytest.raises(ValueError, match="not a capture row"):
                check_rows((row,))

    def test_one_bad_row_refuses_the_batch_and_is_quoted(self):
        bad = replaced(message_rows()[0], Row.KIND, "bogus")
        with pytest.raises(ValueError) as caught:
            check_rows((*all_rows(), bad))
        message = str(caught.value)
        assert message.startswith("not a capture row: ('bogus',")
        assert len(message) <= len("not a capture row: ") + 80

    @settings(max_examples=200)
    @given(st.integers(min_value=-(2**70), max_value=2**70))
    def test_an_int_is_accepted_exactly_when_it_fits_int64(self, value):
        row = replaced(message_rows()[0], Row.TS, value)
        if INT64_MIN <= value <= INT64_MAX:
            check_rows((row,))
        else:
            with pytest.raises(ValueError):
                check_rows((row,))


class TestBuildObservations:
    def test_conforms_to_the_schema_for_every_kind(self):
        frame = build_observations(all_rows())
        assert OBSERVATIONS.problems(frame) == []
        assert list(frame.columns) == OBSERVATIONS.names
        assert frame["kind"].tolist() == [row[Row.KIND] for row in all_rows()]

    @pytest.mark.parametrize("first_seq", [0, 1, 1000, 2**40])
    def test_seq_counts_up_from_first_seq(self, first_seq):
        rows = all_rows()
        frame = build_observations(rows, first_seq=first_seq)
        assert frame["seq"].tolist() == list(range(first_seq, first_seq + len(rows)))

    def test_no_rows_gives_the_empty_frame(self):
        frame = build_observations([])
        assert len(frame) == 0 and OBSERVATIONS.problems(frame) == []

    def test_common_columns(self):
        frame = build_observations(message_rows())
        assert [ts.value - T for ts in frame["ts"]] == [0, 1, 2, 3, 4]
        assert frame["observer"].tolist() == ["shop", "w1", "tap", "w1", "w2"]
        assert frame.loc[1, "consumer"] == "billing" and frame.loc[1, "queue"] == "g"
        assert frame.loc[0, "subject"] == "orders.placed"
        assert frame.loc[2, "reply"] == "_INBOX.x"
        assert frame["size"].tolist() == [7, 7, 2, 2, 2]
        assert frame.loc[0, "payload"] == b'{"n":1}'
        assert frame.loc[0, "header_block"] == BLOCK

    def test_cloudevents_and_traceparent_headers_are_read(self):
        frame = build_observations(message_rows())
        row = frame.loc[0]
        assert row["event_id"] == "e1" and row["type"] == "order.placed"
        assert row["source"] == "shop" and row["mode"] == "binary"
        assert row["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
        assert row["parent_id"] == "b7ad6b7169203331" and row["sampled"]
        assert row["correlation_id"] == row["trace_id"]  # no ce-correlationid: the trace
        assert not row["id_synthetic"]
        assert as_dicts(frame["headers"])[0] == {"x-tenant": "acme"}

    def test_ids_of_messages_without_one(self):
        frame = build_observations(message_rows())
        assert frame.loc[2, "event_id"] == "syn-stored-0"  # the id capture stored
        made = synthetic_id(b"payments.due", None, b"{}", 0)
        assert frame.loc[3, "event_id"] == made == frame.loc[4, "event_id"]
        assert frame.loc[2, "id_synthetic"] and frame.loc[3, "mode"] == "bare"

    def test_agrees_with_decode_message(self):
        frame = build_observations(message_rows())
        for i, row in enumerate(message_rows()):
            stored = row[Row.EXTRA] if isinstance(row[Row.EXTRA], str) else None
            event = decode_message(row[Row.SUBJECT].decode(), row[Row.PAYLOAD],
                                   row[Row.HEADERS], synthetic=stored)
            if event.synthetic_id and stored is None:
                continue  # decode_message has no occurrence count; checked above
            got = frame.loc[i]
            assert got["event_id"] == event.id
            assert got["mode"] == event.mode
            assert got["correlation_id"] == event.correlation_id

    def test_event_columns_are_empty_on_rows_without_a_message(self):
        frame = build_observations(all_rows()).set_index("kind")
        for kind in ("handled", "drop", "disconnect", "consumer_info", "advisory"):
            assert frame.loc[[kind], "event_id"].isna().all(), kind
            assert frame.loc[[kind], "correlation_id"].isna().all(), kind
        assert frame.loc["hop", "event_id"] == "e1"  # a hop carries the traced message

    def test_kind_details_come_from_extra(self):
        frame = build_observations(all_rows()).set_index("kind")
        failed = frame[frame["consumer"] == "billing"].loc["handled"]
        assert failed["ref"] == 1 and failed["outcome"] == "error"
        assert failed["error"] == "ValueError: nope"
        assert failed["started_at"] == pd.Timestamp(T + 4, unit="ns", tz="UTC")
        acked = frame[frame["consumer"] == "worker"].loc["handled"]
        assert acked["ack"] == "ack" and pd.isna(failed["ack"])
        drop = frame.loc["drop"]
        assert drop["count"] == 3 and drop["detail"] == "slow consumer"
        assert frame.loc["disconnect", "detail"] == "down"
        assert frame.loc["reconnect", "detail"] == "back"
        assert frame.loc["error", "error"] == frame.loc["error", "detail"] == "TimeoutError: x"
        info = frame.loc["consumer_info"]
        assert [info[name] for name in CONSUMER_INFO_FIELDS if name != "last_active"] == [
            "PAY", 5, 2, 1, 0, 9, 10, 8, "n1"]
        assert info["last_active"] == pd.Timestamp(T, unit="ns", tz="UTC")
        advisory = frame.loc["advisory"]
        assert (advisory["detail"], advisory["stream"], advisory["stream_seq"],
                advisory["delivery_count"]) == ("MAX_DELIVERIES", "PAY", 10, 5)
        hop = frame.loc["hop"]
        assert (hop["server"], hop["detail"]) == ("n1", "eg") and pd.isna(hop["error"])

    def test_publish_refs_and_jetstream_positions(self):
        frame = build_observations(message_rows())
        assert pd.isna(frame.loc[0, "ref"])
        assert (frame.loc[3, "ref"], frame.loc[3, "stream"], frame.loc[3, "stream_seq"]) == (
            1, "PAY", 42)
        got = frame.loc[4]  # its reply is the $JS.ACK subject: where the message is
        assert (got["stream"], got["delivery_count"], got["stream_seq"], got["consumer_seq"],
                got["pending"]) == ("ORDERS", 2, 15, 7, 3)

    def test_invalid_utf8_subjects_are_replaced_not_refused(self):
        row = ("tap", T, "tap", None, None, b"bad.\xff", None, b"", None, None)
        frame = build_observations([row])
        assert frame.loc[0, "subject"] == "bad.\ufffd"


class TestTraceparentColumns:
    """The bulk traceparent reading (fixed positions when every value has 55 characters,
    else a regex) agrees with parse_traceparent, value by value."""

    def build(self, values: list[str | None]) -> pd.DataFrame:
        rows = [("tap", T + i, "tap", None, None, b"s", None, b"",
                 None if v is None else b"NATS/1.0\r\ntraceparent: " + v.encode() + b"\r\n",
                 "syn-" + str(i)) for i, v in enumerate(values)]
        return build_observations(rows)

    def check(self, values: list[str | None]) -> None:
        frame = self.build(values)
        for i, value in enumerate(values):
            want = parse_traceparent(value)
            got = frame.loc[i, ["trace_id", "parent_id", "sampled"]]
            if want is None:
                assert got.isna().all(), value
            else:
                assert (got["trace_id"], got["parent_id"], bool(got["sampled"])) == want, value

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.one_of(st.none(), traceparents()), min_size=1, max_size=8))
    def test_values_of_55_characters(self, values):
        self.check(values)

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.one_of(st.none(), traceparents(),
                              st.tuples(traceparents(), HEXES).map("".join)),
                    min_size=1, max_size=8))
    def test_values_of_other_lengths_too(self, values):
        self.check(values)
