"""diagnose(): the right finding, the right window, cause told from symptom, and no alarm
on healthy traffic."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evtkit as ek
from evtkit._units import duration
from evtkit.analysis import diagnose as diagnose_module
from evtkit.analysis.finding import COLUMNS, KINDS, NAT, SEVERITIES
from evtkit.analysis.pace import (
    centred_count,
    moments,
    running_median,
    running_median_reaches,
    start_order,
)
from evtkit.observation import build_observations

SEC = 1_000_000_000
ALARMS = ("critical", "warning")


@pytest.fixture(scope="module")
def generated() -> ek.Trace:
    # 10 s, 100 flows/s; anomalies on consumers that do not publish.
    return ek.testing.make_trace(
        3000, rate=100, slow="search", stall=("audit", 3, 3), stop=("notifications", 6, 2),
        failing={"fraud": 0.3}, seed=7)


@pytest.fixture(scope="module")
def incident() -> ek.Trace:
    return ek.datasets.load("shop-incident")


def seconds(trace: ek.Trace, ts: pd.Timestamp) -> float:
    return (ts - trace.observations["ts"].min()).total_seconds()


def only(findings: pd.DataFrame, kind: str, consumer: str) -> pd.Series:
    rows = findings[(findings["kind"] == kind) & (findings["consumer"] == consumer)]
    assert len(rows) == 1, findings[["kind", "consumer", "evidence"]]
    return rows.iloc[0]


class TestFrame:
    def test_columns_order_and_ids(self, generated):
        found = generated.diagnose()
        assert list(found.columns) == COLUMNS
        assert list(found["finding_id"]) == [f"F{i}" for i in range(1, len(found) + 1)]
        ranks = found["severity"].map(SEVERITIES.index)
        assert ranks.is_monotonic_increasing, "worst first"
        assert set(found["kind"]) <= set(KINDS)
        causes = found.loc[~found["root_cause"], "caused_by"]
        assert causes.isin(found["finding_id"]).all()
        assert found.loc[found["root_cause"], "caused_by"].isna().all()
        assert str(found["start"].dtype) == "datetime64[ns, UTC]"
        assert (found["end"] >= found["start"]).all()

    def test_every_kind_is_documented_with_its_rule(self):
        doc = diagnose_module.__doc__
        for kind in KINDS:
            assert f"``{kind}``" in doc, kind

    def test_evidence_is_one_readable_sentence(self, generated, incident):
        for trace in (generated, incident):
            for text in trace.diagnose()["evidence"]:
                assert text and "nan" not in text and "e+0" not in text and "\n" not in text

    def test_empty_and_tap_only_traces(self):
        empty = ek.Trace(build_observations([]))
        assert list(empty.diagnose().columns) == COLUMNS and empty.diagnose().empty
        block = b"NATS/1.0\r\nce-id: e1\r\n\r\n"
        rows = [("tap", 1_900_000_000 * SEC, "t", None, None, b"s", None, b"{}", block, None)]
        assert ek.Trace(build_observations(rows)).diagnose()["severity"].isin(["info"]).all()


class TestGenerated:
    """A generated trace whose faults and windows are known exactly."""

    def test_each_fault_is_found_as_a_root_cause(self, generated):
        found = generated.diagnose()
        roots = found[found["root_cause"] & found["severity"].isin(ALARMS)]
        assert set(zip(roots["kind"], roots["consumer"], strict=True)) == {
            ("stalled_consumer", "audit"), ("stopped_consumer", "notifications"),
            ("failing_handler", "fraud"), ("backlog_growth", "search")}

    def test_windows_match_the_injected_ones(self, generated):
        found = generated.diagnose()
        stall = only(found, "stalled_consumer", "audit")
        assert abs(seconds(generated, stall["start"]) - 3) < 0.1
        assert abs(stall["duration_s"] - 3) < 0.1
        stop = only(found, "stopped_consumer", "notifications")
        assert abs(seconds(generated, stop["start"]) - 6) < 0.1
        assert abs(stop["duration_s"] - 2) < 0.1

    def test_magnitudes_match_the_data(self, generated):
        found = generated.diagnose()
        dv = generated.deliveries
        stop = only(found, "stopped_consumer", "notifications")
        ev = generated.events
        missed = ev[(ev["subject"] == "orders.placed") & (ev["published_at"] >= stop["start"])
                    & (ev["published_at"] <= stop["end"])]
        got = dv[(dv["consumer"] == "notifications")]["event_id"]
        assert stop["lost"] == (~missed["event_id"].isin(got)).sum() > 0
        fraud = only(found, "failing_handler", "fraud")
        mine = dv[dv["consumer"] == "fraud"]
        inside = mine[(mine["started_at"] >= fraud["start"]) & (mine["started_at"]
                                                                <= fraud["start"] + pd.Timedelta(
                                                                    seconds=fraud["duration_s"]))]
        assert fraud["error_rate"] == pytest.approx((inside["outcome"] == "error").mean())
        assert f"({fraud['error_rate']:.0%})" in fraud["evidence"]
        stall = only(found, "stalled_consumer", "audit")
        audit = dv[dv["consumer"] == "audit"]
        waited = audit[(audit["started_at"] >= stall["start"])
                       & (audit["published_at"] <= stall["end"])]["queue_s"].max()
        assert stall["peak_age_s"] == pytest.approx(waited)

    def test_lag_statuses_agree_with_the_findings(self, generated):
        truth = {k: v["status"] for k, v in generated.metadata["truth"]["consumers"].items()}
        lag = generated.lag().set_index("consumer")
        assert lag["status"].to_dict() == truth
        found = generated.diagnose()
        for consumer, row in lag.iterrows():
            mine = found[(found["consumer"] == consumer) & found["severity"].isin(ALARMS)]
            if row["status"] == "OK":
                assert mine.empty
            else:
                assert row["reason"].startswith(mine.iloc[0]["evidence"]) or any(
                    row["reason"].startswith(e) for e in mine["evidence"])

    def test_a_healthy_trace_raises_no_alarm(self):
        for seed in (1, 2, 3):
            found = ek.testing.make_trace(1500, rate=100, seed=seed).diagnose()
            assert not found["severity"].isin(ALARMS).any(), found["evidence"].tolist()

    def test_a_baseline_makes_a_constant_slowdown_visible(self):
        healthy = ek.testing.make_trace(1500, rate=100, seed=4)
        slow = ek.testing.make_trace(1500, rate=100, seed=4, slow="search")
        assert not (slow.diagnose()["kind"] == "slow_consumer").any()
        found = slow.diagnose(baseline=healthy)
        row = only(found, "slow_consumer", "search")
        ratio = (slow.deliveries.query("consumer == 'search'")["processing_s"].median()
                 / healthy.deliveries.query("consumer == 'search'")["processing_s"].median())
        assert row["slowdown"] == pytest.approx(ratio)
        assert "baseline" in row["evidence"]


class TestSampleIncident:
    """The kit's own incident: billing 15× slower and failing 20 % from 8 s to 18 s,
    shipping hung from 20 s to 24 s (data/README.md)."""

    def test_the_injected_faults_lead(self, incident):
        found = incident.diagnose()
        top = found[found["root_cause"]].head(3)
        assert set(zip(top["kind"], top["consumer"], strict=True)) == {
            ("slow_consumer", "billing"), ("failing_handler", "billing"),
            ("stalled_consumer", "shipping")}
        assert (top["severity"] == "critical").all()
        slow = only(found, "slow_consumer", "billing")
        assert abs(seconds(incident, slow["start"]) - 8) < 0.5
        assert abs(slow["duration_s"] - 10) < 0.8
        assert 10 < slow["slowdown"] < 20  # injected 15×
        stall = only(found, "stalled_consumer", "shipping")
        assert abs(seconds(incident, stall["start"]) - 20) < 0.3
        assert abs(stall["duration_s"] - 4) < 0.3

    def test_the_stall_evidence_states_the_data(self, incident):
        stall = only(incident.diagnose(), "stalled_consumer", "shipping")
        dv = incident.deliveries
        shipping = dv[(dv["consumer"] == "shipping") & (dv["started_at"] >= stall["start"])
                      & (dv["published_at"] <= stall["end"])]
        waited = duration(shipping["queue_s"].max())
        assert f"waited up to {waited}" in stall["evidence"]
        assert f"{int(stall['peak_backlog'])} messages waited" in stall["evidence"]
        assert stall["evidence"].endswith("cause: its handler, not its input")

    def test_end_of_chain_subjects_are_info(self, incident):
        found = incident.diagnose()
        lonely = found[found["subject"].isin(["shipments.created", "inventory.rejected"])]
        assert set(lonely["kind"]) == {"no_subscriber"}
        assert (lonely["severity"] == "info").all()

    def test_the_baseline_has_no_alarm(self):
        found = ek.datasets.load("shop-baseline").diagnose()
        assert not found["severity"].isin(ALARMS).any(), found["evidence"].tolist()

    def test_lag_says_the_same(self, incident):
        lag = incident.lag().set_index("consumer")
        assert lag.loc["billing", "status"] == "ERR"  # failing beats slow
        assert lag.loc["shipping", "status"] == "STALL"
        assert re.search(r"took 1\d(\.\d+)?× its typical", lag.loc["billing", "reason"])
        assert lag.loc[["inventory", "notifications"], "status"].eq("OK").all()


def _rows(calls: list[tuple[float, float | None, float | None]]) -> list[tuple]:
    """Rows for one consumer: (publish, start, done) seconds per message; a message whose
    start is None was received and never handled."""
    t = 1_900_000_000 * SEC
    rows: list[tuple] = []
    for i, (pub, start, done) in enumerate(calls):
        block = f"NATS/1.0\r\nce-id: e{i}\r\n\r\n".encode()
        rows.append(("publish", t + int(pub * SEC), "p", None, None, b"s", None, b"", block,
                     None))
        rows.append(("receive", t + int(pub * SEC) + 1000, "c", "c", None, b"s", None, b"",
                     block, None))
        if start is not None and done is not None:
            rows.append(("handled", t + int(done * SEC), "c", "c", None, None, None, None,
                         None, (len(rows) - 1, t + int(start * SEC), "ok", None)))
    return rows


def _fifo(took: list[float], every: float, free: float = 0.0
          ) -> list[tuple[float, float | None, float | None]]:
    """A first-in-first-out consumer: one message each ``every`` s, handler times ``took``,
    the first call not before ``free``."""
    calls: list[tuple[float, float | None, float | None]] = []
    for i, seconds in enumerate(took):
        pub = i * every
        start = max(pub, free)
        free = start + seconds
        calls.append((pub, start, free))
    return calls


class TestHiccups:
    def test_a_65_ms_hiccup_is_not_a_stall(self):
        """A healthy in-process consumer (3 ms calls, 100/s) that hangs 65 ms once."""
        calls = _fifo([0.065 if i == 250 else 0.003 for i in range(500)], 0.01)
        trace = ek.Trace(build_observations(_rows(calls)))
        assert not trace.diagnose()["severity"].isin(ALARMS).any()
        assert trace.lag().set_index("consumer").loc["c", "status"] == "OK"

    def test_the_same_consumer_hung_for_a_second_is_a_stall(self):
        calls = _fifo([1.0 if i == 250 else 0.003 for i in range(500)], 0.01)
        trace = ek.Trace(build_observations(_rows(calls)))
        stall = only(trace.diagnose(), "stalled_consumer", "c")
        assert stall["duration_s"] == pytest.approx(1.0, abs=1e-6)
        assert stall["peak_backlog"] >= 99
        assert trace.lag().set_index("consumer").loc["c", "status"] == "STALL"


def test_rules_are_relative_to_the_consumer():
    """A slow-by-design consumer (200 ms per call, with room) is not slow; the same pace
    change on it (3×) is."""
    calls = []
    for i in range(120):
        pub = i * 1.0
        took = 0.62 if 40 <= i < 80 else 0.2
        calls.append((pub, pub + 0.001, pub + 0.001 + took))
    trace = ek.Trace(build_observations(_rows(calls)))
    slow = only(trace.diagnose(), "slow_consumer", "c")
    assert abs((slow["start"] - trace.observations["ts"].min()).total_seconds() - 40) < 1.1
    assert slow["slowdown"] == pytest.approx(3.1, rel=0.01)
    assert "kept up" in slow["evidence"] and slow["severity"] == "warning"
    steady = ek.Trace(build_observations(_rows([(i * 1.0, i + 0.001, i + 0.201)
                                                for i in range(120)])))
    assert not steady.diagnose()["severity"].isin(ALARMS).any()


def test_failures_too_seldom_for_a_finding_are_not_called_nothing(tmp_path):
    """A handler failing 1.5 % of its calls, evenly, makes no finding (the rule asks 5 % in
    a stretch); the verdict must not say nothing went wrong, in memory or on disk."""
    trace = ek.testing.make_trace(3_000, seed=7, failing={"audit": 0.02})
    assert not trace.diagnose()["severity"].isin(ALARMS).any()
    d = trace.deliveries
    audit = d[d["consumer"] == "audit"]
    failed = int((audit["outcome"] == "error").sum())
    assert failed == int((d["outcome"] == "error").sum()) > 0  # audit's only
    want = (f"No warning or critical finding, but handlers failed {failed} times, too "
            f"seldom for a finding: audit {failed} of its {len(audit):,} deliveries "
            f"({failed / len(audit) * 100:g}%).")
    assert trace.verdict() == [want]
    trace.save(tmp_path / "t.parquet")
    with ek.open(tmp_path / "t.parquet") as ds:
        assert ds.verdict() == [want]
    calm = ek.testing.make_trace(3_000, seed=7)
    assert calm.verdict() == ["Nothing went wrong: no warning or critical finding."]


def test_rules_can_be_tightened():
    calls = _fifo([0.2 if i == 50 else 0.003 for i in range(200)], 0.01)
    trace = ek.Trace(build_observations(_rows(calls)))
    assert not (trace.diagnose()["kind"] == "stalled_consumer").any()
    strict = trace.diagnose(rules=ek.Rules(min_duration_s=0.1, stall_factor=20))
    assert (strict["kind"] == "stalled_consumer").any()
    assert np.isclose(only(strict, "stalled_consumer", "c")["duration_s"], 0.2, atol=0.011)


class TestDemoFaults:
    """Faults injected into the running demo shop (embedded server): the diagnosis names
    them, and tells the consumers that only suffered from them apart."""

    async def test_an_upstream_stall_is_the_cause_downstream_lag_the_symptom(self):
        trace = await ek.demo.run_shop(duration=4, seed=5, faults=["stall:inventory@1+1.5"],
                                       progress=False)
        score = ek.testing.score_diagnosis(trace)
        assert score.rank == 1 and score.iou >= 0.7, trace.diagnose()["evidence"].tolist()
        found = trace.diagnose()
        stall = only(found, "stalled_consumer", "inventory")
        symptoms = found[found["caused_by"] == stall["finding_id"]]
        assert not symptoms.empty and not symptoms["root_cause"].any()
        assert set(symptoms["consumer"]) <= {"billing", "shipping", "notifications"}

    async def test_a_jetstream_consumer_that_gives_up_is_never_ok(self):
        trace = await ek.demo.run_shop(duration=4, seed=5, jetstream=True,
                                       faults=["errors:ledger:1@1+1.5"], progress=False)
        found = trace.diagnose()
        failing = only(found, "failing_handler", "ledger")
        gave_up = only(found, "gave_up", "ledger")
        assert failing["root_cause"] and gave_up["caused_by"] == failing["finding_id"]
        advisories = trace.advisories
        assert gave_up["lost"] == (advisories["advisory"] == "MAX_DELIVERIES").sum() > 0
        assert trace.lag().set_index("consumer").loc["ledger", "status"] == "ERR"

    async def test_a_burst_is_the_cause_of_the_lag_it_brings(self):
        trace = await ek.demo.run_shop(duration=3, seed=6, faults=["burst:orders:250@1"],
                                       progress=False)
        found = trace.diagnose()
        burst = found[found["kind"] == "producer_burst"]
        assert len(burst) >= 1 and burst["root_cause"].all()
        # Held to the trace, not to a wall-clock window of ~4 ms: the 250 orders published
        # in the injected window are the burst's, all but an edge order or two that a
        # pause of the machine (≥ 1.9 ms, past the rule's spacing) set apart; no order
        # outside the window is counted in (and a pause of ≥ 19 ms would split the burst).
        fault = trace.metadata["injected"][0]
        placed = trace.events.loc[trace.events["subject"] == "orders.placed", "published_at"]
        placed = placed.array.asi8
        ms = 2_000_000
        injected = placed[(placed >= fault["start"] - ms) & (placed <= fault["end"] + ms)]
        assert len(injected) >= 250
        counted = sum(((placed >= b.value) & (placed <= e.value)).sum()
                      for b, e in zip(burst["start"], burst["end"], strict=True))
        assert counted >= len(injected) - 5 and counted == burst["affected"].sum()
        assert (burst["start"].array.asi8 >= fault["start"] - ms).all()
        assert (burst["end"].array.asi8 <= fault["end"] + ms).all()
        lagging = found[found["kind"] == "backlog_growth"]
        assert "inventory" in set(lagging["consumer"])
        cause = found.set_index("finding_id")["caused_by"]
        for finding in lagging["finding_id"]:  # each leads back to the burst
            while cause[finding] in cause.index:
                finding = cause[finding]
            assert finding in set(burst["finding_id"])
        assert ek.testing.score_diagnosis(trace).rank == 1

    async def test_a_whole_queue_group_slowing_down_is_not_pinned_on_one_worker(self):
        trace = await ek.demo.run_shop(duration=4, seed=7, faults=["slow:billing:8@1+2"],
                                       progress=False)
        slow = only(trace.diagnose(), "slow_consumer", "billing")
        assert pd.isna(slow["worker"])  # the group, not one of its workers
        assert ek.testing.score_diagnosis(trace).rank == 1

    async def test_one_slow_worker_of_a_queue_group_is_named(self):
        trace = await ek.demo.run_shop(duration=4, seed=2, faults=["slow:billing-1:10@1+2"],
                                       progress=False)
        slow = only(trace.diagnose(), "slow_consumer", "billing")
        assert slow["worker"] == "billing-1" and slow["slowdown"] > 5
        assert ek.testing.score_diagnosis(trace).rank == 1

    async def test_one_stopped_worker_of_a_queue_group(self):
        trace = await ek.demo.run_shop(duration=4, seed=2, faults=["stop:billing-1@1+2"],
                                       progress=False)
        stop = only(trace.diagnose(), "stopped_consumer", "billing")
        assert stop["worker"] == "billing-1" and stop["severity"] == "warning"
        assert stop["lost"] == 0 and "nothing was lost" in stop["evidence"]
        score = ek.testing.score_diagnosis(trace)
        assert score.rank == 1 and score.iou >= 0.5
        # Its window in the trace: the server picks a worker of the group at random, so
        # the worker's idle stretch runs from its last delivery before the stop to its
        # first after (a run of the other's picks stretches it: IoU 0.70 against the
        # injected window once). The finding spans the group's deliveries in between —
        # all that the others got while it got none, those in the injected window included.
        # (Its edges are the trace's: a message in flight at the unsubscribe still reaches
        # it, and the server may pick it again before subscribe() returns: 50 ms of slack.)
        fault = trace.metadata["injected"][0]
        got = trace.deliveries.loc[trace.deliveries["consumer"] == "billing"]
        mine = np.sort(got.loc[got["observer"] == "billing-1", "received_at"].array.asi8)
        group = np.sort(got["received_at"].array.asi8)
        k = int(np.argmax(np.diff(mine)))  # its longest idle stretch: the stop
        left, resumed = mine[k], mine[k + 1]
        assert left < fault["start"] + 50e6 and resumed > fault["end"] - 50e6
        inside = group[(group > left) & (group < resumed)]
        assert (stop["start"].value, stop["end"].value) == (inside[0], inside[-1])

    async def test_a_stop_cut_short_by_the_end_of_the_run_is_recorded(self):
        trace = await ek.demo.run_shop(duration=3, seed=2,
                                       faults=["stop:notifications@2+5"], progress=False)
        [injected] = trace.metadata["injected"]
        assert injected["service"] == "notifications"
        assert 0.5 < (injected["end"] - injected["start"]) / SEC < 5  # cut short by the end


@st.composite
def _messy_rows(draw: st.DrawFn) -> list[tuple]:
    """Deliveries with times in any order (clock skew, handlers 'done' before they start),
    outcomes of every kind, consumers and workers from a small set."""
    t = 1_900_000_000 * SEC
    rows: list[tuple] = []
    for _ in range(draw(st.integers(0, 40))):
        block = f"NATS/1.0\r\nce-id: e{draw(st.integers(0, 25))}\r\n\r\n".encode()
        pub = t + draw(st.integers(-2 * SEC, 20 * SEC))
        consumer = draw(st.sampled_from(["a", "b", "c"]))
        worker = draw(st.sampled_from([consumer, f"{consumer}-2"]))
        subject = draw(st.sampled_from([b"s.one", b"s.two"]))
        rows.append(("publish", pub, "p", None, None, subject, None, b"", block, None))
        if draw(st.booleans()):
            received = pub + draw(st.integers(-SEC, 5 * SEC))
            rows.append(("receive", received, worker, consumer, None, subject, None, b"",
                         block, None))
            start = received + draw(st.integers(-SEC, 5 * SEC))
            outcome = draw(st.sampled_from(["ok", "error", "dropped"]))
            rows.append(("handled", start + draw(st.integers(-SEC, 3 * SEC)), worker, consumer,
                         None, None, None, None, None,
                         (len(rows) - 1, start, outcome, "boom" if outcome == "error" else None)))
    return rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_messy_rows())
def test_diagnose_never_fails_on_messy_traces(rows):
    """Whatever a trace file holds, diagnose() answers with its frame and lag() agrees."""
    trace = ek.Trace(build_observations(rows))
    found = trace.diagnose()
    assert list(found.columns) == COLUMNS
    assert found["severity"].isin(SEVERITIES).all() and found["kind"].isin(list(KINDS)).all()
    assert not found["evidence"].str.contains("nan|e\\+0", regex=True).any()
    if len(trace.deliveries):
        lag = trace.lag()
        assert set(lag["status"]) <= {"OK", "WARN", "ERR", "STALL", "STOP"}


def _diagnosed(calls: list[tuple[float, float | None, float | None]]) -> pd.DataFrame:
    return ek.Trace(build_observations(_rows(calls))).diagnose()


class TestProbed:
    """Wrong answers found by probing diagnose() as an engineer in an incident would; each
    test failed before its fix."""

    def test_a_backlog_that_began_first_is_not_blamed_on_a_later_stall(self):
        trace = ek.testing.make_trace(3000, rate=100, seed=3, slow="search",
                                      stall=("inventory", 5, 1))
        found = trace.diagnose()
        search = found[(found["consumer"] == "search") & (found["kind"] == "backlog_growth")]
        first = search.sort_values("start").iloc[0]
        assert first["root_cause"] and seconds(trace, first["start"]) < 1
        stall = only(found, "stalled_consumer", "inventory")
        blamed = search[search["caused_by"] == stall["finding_id"]]
        assert (blamed["start"] >= stall["start"] - pd.Timedelta(seconds=1)).all()

    def test_a_healthy_jetstream_consumer_known_from_samples_is_not_stalled(self):
        """One message every 2 s, 0.8 s to handle it, sampled every 0.1 s."""
        t = 1_900_000_000 * SEC
        rows = []
        for k in range(100):
            at = k * 0.1
            done, busy = int(at // 2), (at - int(at // 2) * 2) < 0.8
            rows.append(("consumer_info", t + int(at * SEC), "w", "ledger", None, None, None,
                         None, None, ("S", 0, 1 if busy else 0, 0, 0, done + 1, done + 1,
                                      done if busy else done + 1, None, None)))
        trace = ek.Trace(build_observations(rows))
        assert not trace.diagnose()["severity"].isin(ALARMS).any()
        assert trace.lag().set_index("consumer").loc["ledger", "status"] == "OK"

    def test_a_handler_hung_when_the_capture_began_is_a_stall(self):
        found = _diagnosed(_fifo([0.003] * 500, 0.01, free=2.0))
        stall = only(found, "stalled_consumer", "c")
        assert stall["root_cause"] and stall["duration_s"] == pytest.approx(2.0, abs=0.011)
        assert not (found["kind"] == "backlog_growth").any()

    def test_a_slowdown_over_most_of_the_trace_is_still_a_slowdown(self):
        found = _diagnosed(_fifo([0.016 if i < 600 else 0.005 for i in range(1000)], 0.02))
        slow = only(found, "slow_consumer", "c")
        assert slow["slowdown"] == pytest.approx(3.2)
        assert slow["duration_s"] == pytest.approx(599 * 0.02 + 0.016, abs=1e-6)

    def test_messages_still_waiting_at_the_end_are_counted(self):
        calls = _fifo([0.003] * 300, 0.01) + [(3.0 + i * 0.01, None, None) for i in range(100)]
        stall = only(_diagnosed(calls), "stalled_consumer", "c")
        assert stall["peak_backlog"] == 100 and stall["ongoing"]
        assert "100 messages waited" in stall["evidence"] and "still stalled" in stall["evidence"]

    def test_three_errors_in_a_few_milliseconds_are_no_alarm(self):
        rows = _rows(_fifo([0.003] * 1000, 0.01))
        for k, row in enumerate(rows):
            if row[0] == "handled" and 500 <= k // 3 <= 502:
                rows[k] = (*row[:9], (row[9][0], row[9][1], "error", "boom"))
        found = ek.Trace(build_observations(rows)).diagnose()
        blip = only(found, "failing_handler", "c")
        assert blip["severity"] == "info"
        assert ek.Trace(build_observations(rows)).lag()["status"].eq("OK").all()

    def test_a_producer_that_always_sends_batches_is_not_bursting(self):
        """25-message batches every second into a consumer too slow for them."""
        pubs = [k + j * 0.001 for k in range(20) for j in range(25)]
        calls, free = [], 0.0
        for pub in pubs:
            start = max(pub, free)
            free = start + 0.045
            calls.append((pub, start, free))
        found = _diagnosed(calls)
        assert not (found["kind"] == "producer_burst").any()
        lag = only(found, "backlog_growth", "c")
        assert lag["root_cause"] and "its input outran it" in lag["evidence"]

    def test_status_now_agrees_with_the_evidence(self):
        trace = ek.Trace(build_observations(_rows(
            _fifo([4.5 if i == 50 else 0.003 for i in range(100)], 0.1))))
        row = trace.lag().set_index("consumer").loc["c"]
        assert row["status"] == "STALL" and "then it recovered" in row["reason"]
        assert row["status_now"] == "OK"

    @pytest.mark.parametrize(("skew", "severity"), [(-0.0003, "info"), (-0.5, "warning")])
    def test_clocks_a_fraction_of_a_millisecond_apart_are_no_alarm(self, skew, severity):
        trace = ek.testing.make_trace(600, rate=100, seed=5, queue_s=0.0001,
                                      skew={"audit": skew})
        skewed = only(trace.diagnose(), "clock_skew", "audit")
        assert skewed["severity"] == severity

    def test_errors_with_an_unlucky_pause_are_one_failing_stretch(self):
        """A quarter of the calls fail from 10 s to 13 s, but by chance none for 2.2 s."""
        rows = _rows(_fifo([0.003] * 2000, 0.07))
        fail = {int(s / 0.07) for s in (10.0, 10.1, 10.2, 12.4, 12.5, 12.6, 12.7, 12.75,
                                        12.8, 12.9, 13.0)}
        for k, row in enumerate(rows):
            if row[0] == "handled" and k // 3 in fail:
                rows[k] = (*row[:9], (row[9][0], row[9][1], "error", "boom"))
        failing = only(ek.Trace(build_observations(rows)).diagnose(), "failing_handler", "c")
        assert failing["severity"] == "critical"
        assert failing["duration_s"] == pytest.approx(3.0, abs=0.1)

    def test_a_consumer_whose_clock_runs_ahead_is_not_stalled(self):
        """Half a second ahead: every event seems to wait 0.5 s; that is the clock."""
        trace = ek.testing.make_trace(1500, rate=100, seed=5, skew={"audit": 0.5})
        found = trace.diagnose()
        alarms = found[found["severity"].isin(ALARMS)]
        assert list(alarms["kind"]) == ["clock_skew"] and alarms["service"].iloc[0] == "audit"
        assert "501 ms" in alarms["evidence"].iloc[0]
        assert trace.lag().set_index("consumer").loc["audit", "status"] == "OK"

    def test_each_incident_gets_a_slow_flow_through_its_consumer(self, generated):
        flows = generated.slowest_flows(top=3)
        found = generated.diagnose().set_index("finding_id")
        stall = only(generated.diagnose(), "stalled_consumer", "audit")
        mine = flows[flows["finding_id"] == stall["finding_id"]]
        assert len(mine) == 1 and mine["bottleneck"].iloc[0] == "audit"
        assert set(flows["finding_id"].dropna()) <= set(found.index)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.sampled_from([0.5, 1.0, 2.9, 3.0, 3.1, 10.0, float("nan")]),
                       max_size=60),
       window=st.integers(1, 12), data=st.data())
def test_running_median_shortcut_equals_the_running_median(values: list[float], window: int,
                                                           data: st.DataObject) -> None:
    """The slow rule skips the running median where no window can reach the level: the
    answer is pandas' centred running median compared with the level, everywhere (a
    median of too few known values counting as 0: at a level of 0 or less, reached)."""
    min_periods = data.draw(st.integers(1, window))
    level = data.draw(st.sampled_from([3.0, 0.5, 0.0, -1.0]))
    x = np.array(values, float)
    expected = np.nan_to_num(pd.Series(x).rolling(window, center=True, min_periods=min_periods)
                             .median().to_numpy(), nan=0.0) >= level
    got = running_median_reaches(x, window, min_periods, level)
    assert got.tolist() == expected.tolist()


@settings(max_examples=200, deadline=None)
@given(times=st.lists(st.lists(st.one_of(st.integers(-10, 10), st.none()), max_size=30),
                      min_size=1, max_size=3))
def test_moments_are_the_known_times_sorted(times: list[list[int | None]]) -> None:
    """The stall rule's moments: every known time of every array (NaT left out, repeats
    kept), sorted."""
    arrays = [np.array([NAT if t is None else t for t in ts], np.int64) for ts in times]
    expected = sorted(t for ts in times for t in ts if t is not None)
    assert moments(*arrays).tolist() == expected


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))), max_size=80),
       window=st.integers(1, 30), data=st.data())
def test_running_median_equals_pandas(values: list[float], window: int,
                                      data: st.DataObject) -> None:
    """bottleneck's running median, padded to centre its windows, is pandas' centred one,
    number for number: windows longer than the values, even and odd, NaN skipped."""
    min_periods = data.draw(st.integers(1, window))
    x = np.array(values, float)
    expected = pd.Series(x).rolling(window, center=True, min_periods=min_periods).median()
    np.testing.assert_array_equal(running_median(x, window, min_periods), expected.to_numpy())


@settings(max_examples=300, deadline=None)
@given(times=st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 4)),
                                st.one_of(st.none(), st.integers(0, 4))), max_size=40),
       data=st.data())
def test_start_order_sorts_rows_given_in_any_order(times: list[tuple[int | None, int | None]],
                                                   data: st.DataObject) -> None:
    """A consumer's rows come from an engine unsorted: the diagnosis orders them by handler
    start, then receive, then ``seq`` (missing times last), ties and all, as a stable sort
    of the capture-ordered rows does."""
    seq = data.draw(st.permutations(range(len(times))))
    stamp = [[None if t is None else pd.Timestamp(1_700_000_000_000_000_000 + t, tz="UTC")
              for t in column] for column in zip(*times, strict=True)] or [[], []]
    rows = pd.DataFrame({"started_at": pd.Series(stamp[0], dtype="datetime64[ns, UTC]"),
                         "received_at": pd.Series(stamp[1], dtype="datetime64[ns, UTC]"),
                         "seq": pd.array(seq, dtype="Int64")})
    want = rows.sort_values(["started_at", "received_at", "seq"], na_position="last")
    got = rows.iloc[start_order(rows)]
    assert got["seq"].tolist() == want["seq"].tolist()


@settings(max_examples=300, deadline=None)
@given(flags=st.lists(st.booleans(), max_size=60), window=st.integers(1, 70))
def test_centred_count_equals_pandas(flags: list[bool], window: int) -> None:
    """Running counts by differences of a running total are pandas' centred sums, windows
    longer than the flags, even and odd."""
    x = np.array(flags, bool)
    expected = pd.Series(x).rolling(window, center=True, min_periods=1).sum().to_numpy()
    np.testing.assert_array_equal(centred_count(x, window), np.nan_to_num(expected))


@pytest.mark.parametrize(("other", "named"), [(1.1, "billing-2"), (2.9, None), (8.0, None)])
def test_a_slow_worker_is_named_only_when_the_others_kept_their_pace(other, named):
    """(a group slowed 8× was once pinned on one worker: the other's median in the
    window, edges included, was 2.9× typical)"""
    from types import SimpleNamespace

    from evtkit.analysis import workers
    from evtkit.analysis.finding import Finding

    rows = pd.DataFrame({"observer": ["billing-1"] * 5 + ["billing-2"] * 5,
                         "started_at": pd.to_datetime(np.arange(10) * 10**8, utc=True),
                         "processing_s": [0.01] * 5 + [0.08] * 5})
    rows.loc[:4, "processing_s"] = 0.01 * other
    consumer = SimpleNamespace(name="billing", typical=0.01, workers=["billing-1", "billing-2"])
    d = diagnose_module.Diagnosis.__new__(diagnose_module.Diagnosis)
    d.rules = diagnose_module.Rules()
    f = Finding(kind="slow_consumer", severity="warning", consumer="billing", start=0,
                end=10**9)
    workers.slow(d, consumer, rows, f)
    assert f.worker == named
