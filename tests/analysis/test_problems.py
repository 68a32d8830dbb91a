"""Problems in a trace: every kind problems() reports (cycle, clock_skew, failed, dropped,
orphan, unreceived, gave_up, terminated), from hand-built rows with known answers."""

from __future__ import annotations

import pandas as pd

import evtkit as ek
from evtkit.analysis.problems import COLUMNS, problems
from evtkit.observation import build_observations

SEC = 1_000_000_000
T = 1_900_000_000 * SEC
ORDER = ["cycle", "clock_skew", "failed", "dropped", "orphan", "unreceived", "gave_up",
         "terminated"]


def block(eid: str, cause: str | None = None) -> bytes:
    headers = f"NATS/1.0\r\nce-id: {eid}\r\nce-source: shop\r\n"
    if cause:
        headers += f"ce-causationid: {cause}\r\n"
    return (headers + "\r\n").encode()


def pub(t: float, eid: str, subject: str, cause: str | None = None) -> tuple:
    return ("publish", T + int(t * SEC), "shop", None, None, subject.encode(), None, b"{}",
            block(eid, cause), None)


def recv(t: float, eid: str, subject: str, consumer: str, observer: str | None = None
         ) -> tuple:
    return ("receive", T + int(t * SEC), observer or consumer, consumer, None,
            subject.encode(), None, b"{}", block(eid), None)


def handled(t: float, ref: int, consumer: str, outcome: str = "ok", error: str | None = None,
            started: float | None = None, observer: str | None = None) -> tuple:
    start = T + int((t if started is None else started) * SEC)
    return ("handled", T + int(t * SEC), observer or consumer, consumer, None, None, None,
            None, None, (ref, None if outcome == "dropped" else start, outcome, error))


def advisory(t: float, which: str, stream: str, consumer: str, stream_seq: int) -> tuple:
    subject = f"$JS.EVENT.ADVISORY.CONSUMER.{which}.{stream}.{consumer}".encode()
    return ("advisory", T + int(t * SEC), "watch", consumer, None, subject, None, b"{}", None,
            (which, stream, stream_seq, 3))


def found(rows: list[tuple]) -> pd.DataFrame:
    return problems(ek.Trace(build_observations(rows)))


def delivered(i: int, subject: str = "orders.placed", consumer: str = "billing",
              outcome: str = "ok", error: str | None = None) -> list[tuple]:
    """Event ``e<i>`` published, received and handled; its rows start at seq 3 * i."""
    t = 10.0 * i
    return [pub(t, f"e{i}", subject), recv(t + 1, f"e{i}", subject, consumer),
            handled(t + 2, 3 * i + 1, consumer, outcome, error)]


class TestClean:
    def test_a_healthy_trace_has_no_problems(self):
        frame = found(delivered(0) + delivered(1))
        assert frame.empty
        assert list(frame.columns) == COLUMNS

    def test_an_empty_trace_has_no_problems(self):
        frame = found([])
        assert frame.empty and list(frame.columns) == COLUMNS

    def test_a_generated_healthy_trace_has_no_problems(self):
        assert ek.testing.make_trace(300, seed=2).problems().empty

    def test_the_trace_method_gives_the_same_frame(self):
        trace = ek.Trace(build_observations(delivered(0, outcome="error", error="E")))
        pd.testing.assert_frame_equal(trace.problems(), problems(trace))

    def test_column_types(self):
        frame = found(delivered(0, outcome="error", error="E") + [pub(50, "x", "lost")])
        assert frame["count"].dtype == "int64"
        for column in ("problem", "subject", "consumer", "observer", "event_id", "detail"):
            assert frame[column].dtype == pd.StringDtype(na_value=float("nan")), column


class TestFailed:
    def test_counts_failures_per_consumer_with_the_most_common_error(self):
        rows = (delivered(0, outcome="error", error="ValueError: bad")
                + delivered(1, outcome="error", error="ValueError: bad")
                + delivered(2, outcome="error", error="KeyError: 'x'")
                + delivered(3))
        frame = found(rows)
        assert frame["problem"].tolist() == ["failed"]
        row = frame.iloc[0]
        assert row["count"] == 3 and row["consumer"] == "billing"
        assert row["subject"] == "orders.placed" and row["event_id"] == "e0"
        assert row["detail"] == ("3 of 4 deliveries to 'billing' failed; most common: "
                                 "ValueError: bad")

    def test_one_row_per_failing_consumer_sorted_by_name(self):
        rows = (delivered(0, consumer="zeta", outcome="error", error="E1")
                + delivered(1, subject="payments.due", consumer="alpha", outcome="error",
                            error="E2")
                + delivered(2, consumer="alpha"))
        frame = found(rows)
        assert frame["consumer"].tolist() == ["alpha", "zeta"]
        assert frame["count"].tolist() == [1, 1]
        alpha, zeta = frame.iloc[0], frame.iloc[1]
        assert alpha["subject"] == "payments.due" and "1 of 2 deliveries to 'alpha'" in (
            alpha["detail"])
        assert zeta["subject"] == "orders.placed" and "'zeta'" in zeta["detail"]

    def test_subjects_of_all_failures_are_listed(self):
        rows = (delivered(0, subject="b.two", outcome="error", error="E")
                + delivered(1, subject="a.one", outcome="error", error="E"))
        assert found(rows).loc[0, "subject"] == "a.one, b.two"

    def test_a_failure_without_error_text_has_no_example(self):
        frame = found(delivered(0, outcome="error"))
        assert frame.loc[0, "detail"] == "1 of 1 deliveries to 'billing' failed"


class TestDropped:
    def test_counts_drops_per_consumer(self):
        rows = (delivered(0, consumer="audit", outcome="dropped",
                          error="pending limit reached: handler fell behind")
                + delivered(1, consumer="audit", outcome="dropped",
                            error="pending limit reached: handler fell behind")
                + delivered(2, consumer="audit"))
        frame = found(rows)
        assert frame["problem"].tolist() == ["dropped"]
        row = frame.iloc[0]
        assert row["count"] == 2 and row["consumer"] == "audit"
        assert row["subject"] == "orders.placed"
        assert row["detail"] == ("2 of 3 deliveries to 'audit' were dropped; most common: "
                                 "pending limit reached: handler fell behind")

    def test_failed_and_dropped_are_separate_findings(self):
        rows = (delivered(0, outcome="error", error="E")
                + delivered(1, outcome="dropped", error="limit"))
        frame = found(rows).set_index("problem")
        assert frame.loc["failed", "count"] == 1 and frame.loc["dropped", "count"] == 1
        assert "1 of 2 deliveries to 'billing' failed" in frame.loc["failed", "detail"]
        assert "1 of 2 deliveries to 'billing' were dropped" in frame.loc["dropped", "detail"]


class TestUnreceived:
    def test_counts_events_no_consumer_received_per_subject(self):
        rows = delivered(0) + [pub(20, "x1", "orders.lost"), pub(21, "x2", "orders.lost"),
                               pub(22, "y1", "audit.lost")]
        frame = found(rows)
        assert frame["problem"].tolist() == ["unreceived", "unreceived"]
        assert frame["subject"].tolist() == ["audit.lost", "orders.lost"]
        assert frame["count"].tolist() == [1, 2]
        assert frame["event_id"].tolist() == ["y1", "x1"]
        assert frame.loc[1, "detail"] == "2 events on 'orders.lost' reached no recorded consumer"

    def test_a_trace_without_consumers_reports_none(self):
        tap = ("tap", T, "tap", None, None, b"x.y", None, b"{}", block("t1"), None)
        assert found([pub(0, "x1", "orders.lost"), tap]).empty


class TestClockSkew:
    def test_receives_before_the_publish_name_the_observer(self):
        rows = [
            pub(10, "e1", "orders.placed"),
            recv(9, "e1", "orders.placed", "billing", observer="box-1"),  # 1 s early
            handled(12, 1, "billing", started=11, observer="box-1"),
            pub(20, "e2", "orders.placed"),
            recv(21, "e2", "orders.placed", "billing", observer="box-1"),
            handled(22, 4, "billing", started=19.5, observer="box-1"),  # started 0.5 s early
            recv(21, "e2", "orders.placed", "audit", observer="box-2"),  # on time
            handled(22, 6, "audit", observer="box-2"),
        ]
        frame = found(rows)
        assert frame["problem"].tolist() == ["clock_skew"]
        row = frame.iloc[0]
        assert row["observer"] == "box-1" and row["consumer"] == "billing"
        assert row["count"] == 2 and row["event_id"] == "e1"
        assert row["detail"].startswith("observer 'box-1' saw 2 events before they were "
                                        "published (up to 1 s early)")
        assert "not trustworthy" in row["detail"]

    def test_one_row_per_skewed_observer_listing_its_consumers(self):
        rows = [
            pub(10, "e1", "s"),
            recv(9, "e1", "s", "billing", observer="box-1"),
            recv(9.9, "e1", "s", "audit", observer="box-1"),
            recv(9.5, "e1", "s", "search", observer="box-2"),
        ]
        frame = found(rows)
        skew = frame[frame["problem"] == "clock_skew"]
        assert skew["observer"].tolist() == ["box-1", "box-2"]
        assert skew["consumer"].tolist() == ["audit, billing", "search"]
        assert skew["count"].tolist() == [2, 1]
        assert "up to 500 ms early" in skew.iloc[1]["detail"]

    def test_the_generator_skew_is_found(self):
        trace = ek.testing.make_trace(300, seed=4, skew={"analytics": -0.5})
        frame = trace.problems()
        skew = frame[frame["problem"] == "clock_skew"]
        truth = trace.metadata["truth"]["consumers"]["analytics"]
        assert skew["observer"].tolist() == ["analytics"]
        assert skew.iloc[0]["count"] == truth["deliveries"]


class TestCausality:
    def test_orphans_are_counted_with_an_example_cause(self):
        rows = [pub(0, "root", "a"), pub(1, "child", "a", cause="root"),
                pub(2, "o1", "b", cause="missing-1"), pub(3, "o2", "b", cause="missing-2")]
        frame = found(rows)
        assert frame["problem"].tolist() == ["orphan"]
        row = frame.iloc[0]
        assert row["count"] == 2 and row["event_id"] == "o1"
        assert "2 events name a cause that is not in the trace (e.g. missing-1)" in (
            row["detail"])

    def test_a_causation_cycle_is_reported_once_with_its_events(self):
        rows = [pub(0, "a", "loop", cause="c"), pub(1, "b", "loop", cause="a"),
                pub(2, "c", "loop", cause="b")]
        frame = found(rows)
        assert frame["problem"].tolist() == ["cycle"]
        row = frame.iloc[0]
        assert row["count"] == 3 and row["event_id"] == "a"
        assert row["detail"] == ("causation ids form a cycle: a → b → c → a (each causes the "
                                 "next)")

    def test_separate_cycles_are_separate_rows_in_causal_order(self):
        rows = [pub(0, "a", "loop", cause="b"), pub(1, "x", "loop", cause="y"),
                pub(2, "b", "loop", cause="a"), pub(3, "y", "loop", cause="x")]
        frame = found(rows)
        assert frame["problem"].tolist() == ["cycle", "cycle"]
        assert frame["count"].tolist() == [2, 2]
        assert [d.split(": ")[1] for d in frame["detail"]] == [
            "a → b → a (each causes the next)", "x → y → x (each causes the next)"]

    def test_an_id_published_twice_is_a_duplicate(self):
        rows = [pub(0, "same", "s"), pub(1, "same", "s"), pub(2, "other", "s")]
        frame = found(rows)
        assert frame["problem"].tolist() == ["duplicate_id"]
        assert frame["count"].iloc[0] == 1 and frame["event_id"].iloc[0] == "same"
        assert "published more than once" in frame["detail"].iloc[0]

    def test_the_generator_cycle_and_orphans_are_found(self):
        trace = ek.testing.make_trace(300, seed=5, orphans=4, cycle=True)
        frame = trace.problems().set_index("problem")
        truth = trace.metadata["truth"]
        assert frame.loc["cycle", "count"] == len(truth["cycle"]) == 3
        assert frame.loc["orphan", "count"] == len(truth["orphans"]) == 4
        for event_id in truth["cycle"]:
            assert event_id in frame.loc["cycle", "detail"]


class TestJetStream:
    def test_max_deliveries_per_stream_and_consumer(self):
        rows = [advisory(0, "MAX_DELIVERIES", "ORDERS", "worker", 5),
                advisory(1, "MAX_DELIVERIES", "ORDERS", "worker", 7),
                advisory(2, "MAX_DELIVERIES", "PAY", "worker", 9),
                advisory(3, "MSG_NAKED", "ORDERS", "worker", 11)]  # not a problem
        frame = found(rows)
        assert frame["problem"].tolist() == ["gave_up", "gave_up"]
        assert frame["consumer"].tolist() == ["worker", "worker"]
        assert frame["count"].tolist() == [2, 1]
        assert frame.loc[0, "detail"] == (
            "2 messages of stream 'ORDERS' for consumer 'worker' reached max deliveries: "
            "JetStream will not redeliver them (stream sequences 5, 7...)")
        assert "stream 'PAY'" in frame.loc[1, "detail"]

    def test_terminated_messages(self):
        rows = [advisory(0, "MSG_TERMINATED", "ORDERS", "billing", 3),
                advisory(1, "MSG_TERMINATED", "ORDERS", "audit", 4)]
        frame = found(rows)
        assert frame["problem"].tolist() == ["terminated", "terminated"]
        assert frame["consumer"].tolist() == ["audit", "billing"]
        assert frame["count"].tolist() == [1, 1]
        assert "consumer 'audit' were terminated by the consumer" in frame.loc[0, "detail"]
        assert "(stream sequences 4...)" in frame.loc[0, "detail"]

    def test_only_the_first_five_sequences_are_quoted(self):
        rows = [advisory(i, "MAX_DELIVERIES", "S", "c", 100 + i) for i in range(7)]
        row = found(rows).iloc[0]
        assert row["count"] == 7
        assert "(stream sequences 100, 101, 102, 103, 104...)" in row["detail"]


class TestOrder:
    def test_every_kind_at_once_in_severity_order(self):
        rows = [
            # cycle
            pub(0, "a", "loop", cause="b"), pub(0.1, "b", "loop", cause="a"),
            # orphan
            pub(1, "o", "orph", cause="gone"),
            # clock skew on box-9 (billing), a failure and a drop
            pub(10, "e1", "orders.placed"),
            recv(9, "e1", "orders.placed", "billing", observer="box-9"),
            handled(12, 4, "billing", "error", "E", started=11, observer="box-9"),
            recv(11, "e1", "orders.placed", "audit"),
            handled(12, 6, "audit", "dropped", "limit"),
            # JetStream
            advisory(20, "MAX_DELIVERIES", "S", "worker", 1),
            advisory(21, "MSG_TERMINATED", "S", "worker", 2),
        ]
        frame = found(rows)
        # Events on "loop" and "orph" reached no consumer: one unreceived row per subject.
        assert frame["problem"].tolist() == [*ORDER[:6], "unreceived", *ORDER[6:]]
        unreceived = frame[frame["problem"] == "unreceived"]
        assert unreceived["subject"].tolist() == ["loop", "orph"]
        by_kind = frame.drop(unreceived.index).set_index("problem")
        assert by_kind.loc["failed", "consumer"] == "billing"
        assert by_kind.loc["dropped", "consumer"] == "audit"
        assert by_kind.loc["clock_skew", "observer"] == "box-9"
        assert by_kind.loc["gave_up", "consumer"] == by_kind.loc["terminated", "consumer"]
