"""The Recorder: seq numbering, add(), drain() in batches (keeping the list the hot path
appends to), incremental stats(), and the trace built from what is left (no server)."""

from __future__ import annotations

import time

import evtkit as ek
from evtkit.capture.recorder import Recorder, Stats
from evtkit.schema import OBSERVATIONS

BLOCK = b"NATS/1.0\r\nce-id: %s\r\n\r\n"


def publish(eid: bytes, subject: bytes = b"orders.placed") -> tuple:
    return ("publish", time.time_ns(), "shop", None, None, subject, None, b"{}", BLOCK % eid,
            None)


def tap(eid: bytes, subject: bytes = b"orders.placed") -> tuple:
    return ("tap", time.time_ns(), "tap", None, None, subject, None, b"{}", BLOCK % eid, None)


def receive(eid: bytes, consumer: str, subject: bytes = b"orders.placed") -> tuple:
    return ("receive", time.time_ns(), "w", consumer, None, subject, None, b"{}", BLOCK % eid,
            None)


class TestSeq:
    def test_a_new_recorder_starts_at_zero(self):
        recorder = Recorder()
        assert recorder.next_seq() == 0 and recorder.rows == [] and recorder.drops == 0

    def test_next_seq_counts_appended_rows(self):
        recorder = Recorder()
        recorder.rows.append(publish(b"e1"))
        recorder.rows.append(receive(b"e1", "billing"))
        assert recorder.next_seq() == 2

    def test_add_returns_the_seq_of_its_row(self):
        recorder = Recorder()
        recorder.rows.append(publish(b"e1"))
        assert recorder.add("disconnect", "w", extra="down") == 1
        assert recorder.add("reconnect", "w", extra="up") == 2
        assert recorder.next_seq() == 3

    def test_add_builds_a_row_in_the_field_layout(self):
        recorder = Recorder()
        before = time.time_ns()
        recorder.add("drop", "w", consumer="billing", queue="g", subject=b"s", extra=(2, "x"))
        (row,) = recorder.rows
        assert row[0] == "drop" and before <= row[1] <= time.time_ns()
        assert row[2:] == ("w", "billing", "g", b"s", None, None, None, (2, "x"))

    def test_drop_rows_add_their_count_to_drops(self):
        recorder = Recorder()
        recorder.add("drop", "w", consumer="c", extra=(3, "slow consumer"))
        recorder.add("error", "w", extra="not a drop")
        recorder.add("drop", "w", consumer="c", extra=(1, None))
        assert recorder.drops == 4


class TestDrain:
    def test_returns_the_first_seq_and_the_rows(self):
        recorder = Recorder()
        rows = [publish(b"e1"), receive(b"e1", "billing")]
        recorder.rows.extend(rows)
        assert recorder.drain() == (0, rows)
        assert recorder.rows == [] and recorder.next_seq() == 2

    def test_seq_numbering_continues_across_drains(self):
        recorder = Recorder()
        recorder.rows.extend([publish(b"e1"), publish(b"e2"), publish(b"e3")])
        assert recorder.drain()[0] == 0
        assert recorder.add("error", "w", extra="x") == 3
        recorder.rows.append(publish(b"e4"))
        first, rows = recorder.drain()
        assert first == 3 and len(rows) == 2
        assert recorder.drain() == (5, [])  # nothing new: the next seq, no rows
        assert recorder.next_seq() == 5

    def test_keeps_the_list_so_a_bound_append_still_feeds_it(self):
        recorder = Recorder()
        rows, append = recorder.rows, recorder.rows.append
        append(publish(b"e1"))
        first, taken = recorder.drain()
        assert first == 0 and [row[8] for row in taken] == [BLOCK % b"e1"]
        append(publish(b"e2"))
        first, taken = recorder.drain()
        assert recorder.rows is rows
        assert first == 1 and [row[8] for row in taken] == [BLOCK % b"e2"]

    def test_drained_rows_are_a_separate_list(self):
        recorder = Recorder()
        recorder.rows.append(publish(b"e1"))
        _, taken = recorder.drain()
        recorder.rows.append(publish(b"e2"))
        assert len(taken) == 1 and len(recorder.rows) == 1

    def test_frames_after_a_drain_keep_their_seq(self):
        recorder = Recorder()
        recorder.rows.extend([publish(b"e1"), publish(b"e2")])
        recorder.drain()
        recorder.rows.append(receive(b"e2", "billing"))
        recorder.add("handled", "w", consumer="billing", extra=(2, time.time_ns(), "ok", None))
        frame = recorder.observations()
        assert frame["seq"].tolist() == [2, 3]
        assert OBSERVATIONS.problems(frame) == []
        trace = recorder.trace()
        assert trace.deliveries.loc[0, "outcome"] == "ok"  # ref 2 found the receive


class TestStats:
    def test_counts_messages_per_subject_and_deliveries_per_consumer(self):
        recorder = Recorder()
        recorder.rows.extend([
            publish(b"e1"), tap(b"e2", b"payments.due"), publish(b"e3"),
            receive(b"e1", "billing"), receive(b"e1", "audit"), receive(b"e3", "billing"),
        ])
        stats = recorder.stats()
        assert isinstance(stats, Stats)
        assert stats.messages == 3  # publishes and taps; a receive is a delivery
        assert stats.by_subject["orders.placed"] == 2
        assert stats.by_subject["payments.due"] == 1
        assert dict(stats.by_consumer) == {"billing": 2, "audit": 1}

    def test_counts_handler_errors_and_drops(self):
        recorder = Recorder()
        recorder.add("handled", "w", consumer="c", extra=(0, 1, "error", "ValueError: x"))
        recorder.add("handled", "w", consumer="c", extra=(1, 1, "ok", None))
        recorder.add("handled", "w", consumer="c", extra=(2, 1, "dropped", "pending limit"))
        recorder.add("drop", "w", consumer="c", extra=(5, "slow consumer"))
        stats = recorder.stats()
        assert stats.errors == 1 and stats.drops == 5

    def test_counts_each_row_once_across_calls(self):
        recorder = Recorder()
        recorder.rows.extend([publish(b"e1"), receive(b"e1", "billing")])
        recorder.add("handled", "w", consumer="billing", extra=(1, 1, "error", "E"))
        first = recorder.stats()
        assert (first.messages, first.errors, first.by_consumer["billing"]) == (1, 1, 1)
        recorder.rows.extend([publish(b"e2"), receive(b"e2", "billing")])
        recorder.add("handled", "w", consumer="billing", extra=(4, 1, "error", "E"))
        recorder.add("drop", "w", extra=(2, None))
        second = recorder.stats()
        assert (second.messages, second.errors, second.drops) == (2, 2, 2)
        assert second.by_consumer["billing"] == 2
        assert second.by_subject["orders.placed"] == 2
        third = recorder.stats()  # nothing new: the same totals
        assert (third.messages, third.errors, third.drops) == (2, 2, 2)

    def test_drained_rows_are_counted_once(self):
        recorder = Recorder()
        recorder.rows.extend([publish(b"e1"), receive(b"e1", "billing")])
        recorder.drain()  # counts them on the way out
        recorder.rows.append(publish(b"e2", b"payments.due"))
        stats = recorder.stats()
        assert stats.messages == 2
        assert stats.by_subject["orders.placed"] == 1 and stats.by_subject["payments.due"] == 1
        assert stats.by_consumer["billing"] == 1
        recorder.drain()
        recorder.drain()
        assert recorder.stats().messages == 2

    def test_rows_appended_and_drained_between_calls_are_counted(self):
        recorder = Recorder()
        recorder.stats()
        recorder.rows.extend([publish(b"e1"), publish(b"e2")])
        recorder.drain()
        recorder.rows.append(publish(b"e3"))
        assert recorder.stats().messages == 3

    def test_a_message_without_subject_counts_under_the_empty_name(self):
        recorder = Recorder()
        recorder.rows.append(("tap", 1, "tap", None, None, None, None, b"", None, None))
        assert recorder.stats().by_subject[""] == 1


class TestEventStats:
    """Distinct events, counted once however many observations a message has."""

    def test_a_published_and_tapped_message_is_one_event(self):
        recorder = Recorder()
        recorder.count_events()
        recorder.rows.extend([publish(b"e1"), tap(b"e1"), publish(b"e2"), tap(b"e2"),
                              tap(b"e3", b"payments.due")])
        stats = recorder.stats()
        assert stats.messages == 5 and stats.by_subject["orders.placed"] == 4
        assert stats.events == 3
        assert dict(stats.events_by_subject) == {"orders.placed": 2, "payments.due": 1}
        assert stats.events == len(recorder.trace().events)

    def test_the_id_is_read_in_any_spelling_and_synthetic_ids_count(self):
        recorder = Recorder()
        recorder.count_events()
        shouted = b"NATS/1.0\r\nCE-ID:  e1 \r\n\r\n"
        bare = ("tap", 1, "tap", None, None, b"bare", None, b"x", None, "syn-abc-0")
        recorder.rows.extend([publish(b"e1"),
                              ("tap", 1, "tap", None, None, b"orders.placed", None, b"{}",
                               shouted, None),
                              bare, bare[:1] + ("tap2",) + bare[2:]])
        stats = recorder.stats()
        assert stats.events == 2 and stats.events_by_subject["bare"] == 1

    def test_rows_held_before_counting_was_asked_for_are_counted_at_once(self):
        recorder = Recorder()
        recorder.rows.extend([publish(b"e1"), tap(b"e1")])
        assert recorder.stats().events == 0  # not asked for: nothing read
        recorder.rows.append(tap(b"e2"))
        recorder.count_events()
        recorder.count_events()  # twice is fine
        recorder.rows.extend([tap(b"e2"), publish(b"e3")])
        stats = recorder.stats()
        assert stats.events == 3 and stats.messages == 5

    def test_repeats_are_recognised_across_drains(self):
        recorder = Recorder()
        recorder.count_events()
        recorder.rows.append(publish(b"e1"))
        recorder.drain()
        recorder.rows.extend([tap(b"e1"), tap(b"e2")])
        assert recorder.stats().events == 2

    def test_memory_is_bounded_to_two_generations(self, monkeypatch):
        import evtkit.capture.recorder as module

        monkeypatch.setattr(module, "EVENT_MEMORY", 2)
        recorder = Recorder()
        recorder.count_events()
        recorder.rows.extend(publish(b"e%d" % i) for i in range(10))
        recorder.stats()
        seen = recorder._events
        assert seen is not None and len(seen.new) + len(seen.old) <= 4
        recorder.rows.extend([tap(b"e9"), tap(b"e8")])  # recent repeats: still one event each
        assert recorder.stats().events == 10

    def test_per_consumer_handled_errors_and_pending(self):
        recorder = Recorder()
        recorder.rows.extend([receive(b"e1", "billing"), receive(b"e2", "billing"),
                              receive(b"e3", "billing"), receive(b"e1", "audit")])
        recorder.add("handled", "w", consumer="billing", extra=(0, 1, "ok", None))
        recorder.add("handled", "w", consumer="billing", extra=(1, 1, "error", "E"))
        recorder.add("handled", "w", consumer="audit", extra=(3, 1, "dropped", "limit"))
        stats = recorder.stats()
        assert stats.pending("billing") == 1 and stats.pending("audit") == 0
        assert stats.errors_by_consumer == {"billing": 1}
        assert stats.pending("nobody") == 0


class TestTrace:
    def test_carries_metadata_and_capture_times(self):
        before = time.time_ns()
        recorder = Recorder({"generator": "test", "seed": 3})
        recorder.rows.extend([publish(b"e1"), receive(b"e1", "billing")])
        trace = recorder.trace()
        after = time.time_ns()
        assert isinstance(trace, ek.Trace)
        meta = trace.metadata
        assert meta["generator"] == "test" and meta["seed"] == 3
        assert before <= meta["started_at_ns"] <= meta["ended_at_ns"] <= after
        assert meta["started_at_ns"] == recorder.started_ns
        assert len(trace.events) == 1 and len(trace.deliveries) == 1

    def test_a_given_start_time_is_kept(self):
        recorder = Recorder({"started_at_ns": 5})
        assert recorder.trace().metadata["started_at_ns"] == 5

    def test_the_trace_does_not_change_the_recorder(self):
        recorder = Recorder({"a": 1})
        recorder.rows.append(publish(b"e1"))
        recorder.trace()
        assert recorder.metadata == {"a": 1}
        assert len(recorder.rows) == 1 and recorder.next_seq() == 1

    def test_metadata_is_copied_from_the_argument(self):
        given = {"a": 1}
        recorder = Recorder(given)
        recorder.metadata["b"] = 2
        assert given == {"a": 1}

    def test_an_empty_recorder_gives_an_empty_trace(self):
        trace = Recorder().trace()
        assert len(trace.observations) == 0 and trace.events.empty
        assert OBSERVATIONS.problems(trace.observations) == []


def test_subjects_only_received_are_not_counted_as_messages():
    """A receive is a delivery, not a message on the bus: it adds no subject entry."""
    from evtkit.capture.recorder import Recorder

    recorder = Recorder()
    recorder.rows.append(("receive", 1, "o", "c", None, b"only.received", None, b"", None,
                          None))
    stats = recorder.stats()
    assert stats.by_consumer["c"] == 1 and "only.received" not in stats.by_subject
    assert stats.messages == 0
