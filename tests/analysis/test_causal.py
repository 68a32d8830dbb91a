"""Causal chains, critical paths and inference, checked against generated ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import evtkit as ek
from evtkit.observation import build_observations

US = 1e-6


@pytest.fixture(scope="module")
def trace() -> ek.Trace:
    return ek.testing.make_trace(600, depth=3, fanout=3, orphans=2, cycle=True,
                                 skew={"analytics": -0.01}, seed=3)


class TestChains:
    def test_one_row_per_flow_with_exact_shape(self, trace):
        truth = trace.metadata["truth"]
        chains = trace.chains()
        assert len(chains) == truth["flows"]
        regular = chains[chains["correlation_id"].str.startswith("flow-")]
        assert len(regular) == truth["regular_flows"]
        assert (regular["events"] == 3).all() and (regular["depth"] == 3).all()
        assert (regular["deliveries"] == 9).all() and (regular["consumers"] == 9).all()
        assert (regular["errors"] == 0).all()
        # Longest first, and the critical path never exceeds the flow.
        assert chains["duration_s"].is_monotonic_decreasing
        assert (regular["critical_path_s"] <= regular["duration_s"] + US).all()

    def test_root_and_times_of_known_flows(self, trace):
        chains = trace.chains().set_index("correlation_id")
        for root, expected in trace.metadata["truth"]["critical_paths"].items():
            row = chains.loc[expected["flow"]]
            assert row["root_event_id"] == root
            assert row["ended_at"].value == expected["end_ns"]
            assert abs(row["critical_path_s"] - expected["duration_s"]) < US

    def test_problem_flows_are_reported_not_hidden(self, trace):
        chains = trace.chains().set_index("correlation_id")
        assert pd.isna(chains.loc["cycle-flow", "depth"])  # no root: it is a loop
        assert chains.loc["orphan-flow-0000", "events"] == 1


    def test_a_delivery_without_a_consumer_name_counts_for_no_consumer(self):
        """Counted among nobody's, and in its own flow: it was counted as one more
        consumer of the flow before it (flow 0 had 2 deliveries and "3 consumers")."""
        trace = ek.testing.make_trace(3, seed=1, depth=1, fanout=2)
        obs = trace.observations.copy()
        receive = obs.index[(obs["kind"] == "receive").to_numpy()][2]
        unnamed_flow = obs.loc[receive, "correlation_id"]
        obs.loc[receive, "consumer"] = None
        chains = ek.Trace(obs).chains().set_index("correlation_id")
        assert (chains["deliveries"] == 2).all()
        assert chains.loc[unnamed_flow, "consumers"] == 1
        assert (chains.drop(unnamed_flow)["consumers"] == 2).all()

    def test_a_delivery_of_an_unknown_event_counts_in_no_flow(self):
        """(it was counted in the flow of the trace's last event)"""
        trace = ek.testing.make_trace(3, seed=1, depth=1, fanout=2)
        obs = trace.observations.copy()
        obs.loc[obs.index[(obs["kind"] == "receive").to_numpy()][0], "event_id"] = None
        chains = ek.Trace(obs).chains()
        assert chains["deliveries"].sum() == 5 and chains["consumers"].max() == 2

    def test_durations_are_exactly_end_minus_start_and_unknown_ones_come_last(self):
        """Seconds as pandas gives them for the time between the two instants (to the
        last bit, as the engines do); a flow whose start is unknown has none and sorts
        last, not as a huge negative number."""
        trace = ek.testing.make_trace(200, seed=2, depth=2, fanout=1, processing_s=1.5)
        obs = trace.observations.copy()
        first = obs.index[(obs["kind"] == "publish").to_numpy()][0]
        unknown = obs.loc[first, "correlation_id"]
        obs.loc[first, "ts"] = pd.NaT
        chains = ek.Trace(obs).chains()
        want = (chains["ended_at"] - chains["started_at"]).dt.total_seconds()
        assert chains["duration_s"].equals(want)
        assert chains["correlation_id"].iloc[-1] == unknown
        assert pd.isna(chains["duration_s"].iloc[-1])
        assert chains["duration_s"].iloc[:-1].is_monotonic_decreasing

    def test_flows_of_equal_duration_keep_the_order_they_started_in(self):
        trace = ek.testing.make_trace(40, seed=4, depth=1, fanout=1)
        obs = trace.observations
        published = ek.Trace(obs[(obs["kind"] == "publish").to_numpy()])  # flows of 0 s
        chains = published.chains()
        assert (chains["duration_s"] == 0).all() and len(chains) == 40
        assert chains["started_at"].is_monotonic_increasing


class TestCriticalPath:
    def test_segments_follow_the_true_chain_and_add_up(self, trace):
        for expected in trace.metadata["truth"]["critical_paths"].values():
            path = trace.critical_path(expected["flow"])
            handled = path[path["kind"] == "queue"]
            assert list(zip(handled["event_id"], handled["consumer"], strict=True)) == [
                tuple(p) for p in expected["path"]]
            assert path["kind"].tolist() == ["queue", "processing"] * len(expected["path"])
            assert abs(path["duration_s"].sum() - expected["duration_s"]) < US
            # Contiguous: each segment starts where the previous ended.
            assert (path["start"].iloc[1:].to_numpy() == path["end"].iloc[:-1].to_numpy()).all()
            assert path["end"].iloc[-1].value == expected["end_ns"]

    def test_unknown_flow(self, trace):
        with pytest.raises(KeyError, match="no flow"):
            trace.critical_path("nope")

    def test_cycle_terminates(self, trace):
        path = trace.critical_path("cycle-flow")
        assert len(path) <= 3 and set(path["kind"]) <= {"publish"}


class TestChainDag:
    def test_nodes_and_typed_edges(self, trace):
        flow = trace.metadata["truth"]["critical_paths"]
        expected = next(iter(flow.values()))
        chain = trace.chain(expected["flow"])
        kinds = chain.nodes["kind"].value_counts().to_dict()
        assert kinds == {"event": 3, "delivery": 9, "handler": 9}
        edges = chain.edges["kind"].value_counts().to_dict()
        assert edges == {"queue": 9, "processing": 9, "cause": 2}
        hot = chain.edges[chain.edges["on_critical_path"]]
        assert len(hot[hot["kind"].isin(["queue", "processing"])]) == 2 * len(expected["path"])
        # Queue edges go from the event to a delivery, cause edges into the child event.
        causes = chain.edges[chain.edges["kind"] == "cause"]
        assert set(causes["target"]) <= set(chain.nodes.loc[chain.nodes["kind"] == "event",
                                                            "node_id"])
        assert "critical path" in chain._repr_html_()


class TestProblems:
    def test_cycle_orphans_skew_and_unreceived(self, trace):
        found = trace.problems().set_index("problem")
        truth = trace.metadata["truth"]
        assert found.loc["cycle", "count"] == len(truth["cycle"])
        assert found.loc["orphan", "count"] == len(truth["orphans"])
        assert found.loc["clock_skew", "observer"] == "analytics"
        assert found.loc["clock_skew", "count"] == truth["consumers"]["analytics"]["deliveries"]
        unreceived = trace.problems().query("problem == 'unreceived'")
        assert set(unreceived["subject"]) == {"cycle.step", "orphans.seen"}
        links = trace.lineage()["link"].value_counts()
        assert links["cycle"] == 3 and links["orphan"] == 2


SEC = 1_000_000_000


def _tap(t, eid, source, subject, cause=None):
    headers = f"NATS/1.0\r\nce-id: {eid}\r\nce-source: {source}\r\n"
    if cause:
        headers += f"ce-causationid: {cause}\r\nce-correlationid: flow-{cause}\r\n"
    return ("tap", t, "tap", None, None, subject.encode(), None, b"{}",
            (headers + "\r\n").encode(), None)


def _handled(t_recv, t_start, t_done, eid, source, consumer, seq):
    headers = f"NATS/1.0\r\nce-id: {eid}\r\nce-source: {source}\r\n\r\n".encode()
    return [
        ("receive", t_recv, consumer, consumer, None, b"a", None, b"{}", headers, None),
        ("handled", t_done, consumer, consumer, None, None, None, None, None,
         (seq, t_start, "ok", None)),
    ]


class TestInference:
    def rows(self):
        t = 1_900_000_000 * SEC
        return [
            _tap(t, "A", "shop", "a"),                                  # seq 0
            *_handled(t + SEC // 10, t + SEC // 5, t + SEC, "A", "shop", "billing", 1),
            _tap(t + SEC // 2, "B", "billing", "b"),                     # during handling
            _tap(t + 3 * SEC // 2, "C", "billing", "c"),                 # 0.5 s after
            _tap(t + 10 * SEC, "D", "billing", "d"),                     # far too late
            _tap(t + SEC // 2, "E", "billing", "e", cause="Z"),          # explicit (orphan)
        ]

    def test_proposes_scored_links_for_headerless_causality(self):
        trace = ek.Trace(build_observations(self.rows()))
        lin = trace.lineage().set_index("event_id")
        assert lin.loc["B", "link"] == "inferred" and lin.loc["B", "cause_id"] == "A"
        assert lin.loc["B", "score"] == 1.0
        assert lin.loc["C", "link"] == "inferred"
        assert lin.loc["C", "score"] == pytest.approx(np.exp(-0.5))
        assert lin.loc["D", "link"] == "root"
        assert lin.loc["E", "link"] == "orphan"  # an explicit cause wins, even unknown
        # Inferred children join the flow of their cause.
        assert lin.loc["B", "flow_id"] == lin.loc["A", "flow_id"] == "A"
        chains = trace.chains().set_index("correlation_id")
        assert chains.loc["A", "events"] == 3 and chains.loc["A", "links_inferred"] == 2
        path = trace.critical_path("A")
        assert path["inferred"].any()

    def test_can_be_switched_off(self):
        trace = ek.Trace(build_observations(self.rows()))
        assert (trace.lineage(infer=False)["link"] != "inferred").all()
        assert "B" in set(trace.chains(infer=False)["correlation_id"])


async def test_live_capture_two_hops_has_the_right_critical_path(bus):
    """End to end through a real server: the path crosses both asynchronous hops."""
    import asyncio

    async def inventory(event):
        await asyncio.sleep(0.02)  # the handler's own work
        await bus.publish("inventory.reserved", {}, source="inventory")

    async def billing(event):
        await asyncio.sleep(0.03)  # the handler's own work

    await bus.subscribe("orders.placed", inventory, consumer="inventory")
    await bus.subscribe("inventory.reserved", billing, consumer="billing")
    root = await bus.publish("orders.placed", {"order": 1}, source="shop")
    await bus.settle()  # both hops handled, however long each takes
    trace = bus.trace()
    path = trace.critical_path(root.correlation_id)
    assert path["kind"].tolist() == ["queue", "processing", "queue", "processing"]
    assert path["consumer"].tolist() == ["inventory", "inventory", "billing", "billing"]
    assert path.loc[1, "duration_s"] >= 0.02 and path.loc[3, "duration_s"] >= 0.03
    row = trace.chains().set_index("correlation_id").loc[root.correlation_id]
    assert row["depth"] == 2 and abs(row["critical_path_s"] - path["duration_s"].sum()) < US
