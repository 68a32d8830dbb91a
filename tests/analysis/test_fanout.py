"""Fan-out per subject and the observed service graph, against generated ground truth."""

from __future__ import annotations

import pytest

import evtkit as ek

US = 1e-6


@pytest.fixture(scope="module")
def trace() -> ek.Trace:
    return ek.testing.make_trace(900, depth=3, fanout=3, seed=11)


def test_fanout_per_subject(trace):
    truth = trace.metadata["truth"]["consumers"]
    fan = trace.fanout().set_index("subject")
    flows = trace.metadata["truth"]["regular_flows"]
    for subject in ("orders.placed", "inventory.reserved", "payments.captured"):
        row = fan.loc[subject]
        names = sorted(n for n, c in truth.items() if c["subject"] == subject)
        assert row["events"] == flows and row["deliveries"] == 3 * flows
        assert row["consumers"] == 3 and row["consumer_names"] == ", ".join(names)
        assert row["mean_fanout"] == 3.0
        emits = {c["emits"] for c in truth.values() if c["subject"] == subject} - {None}
        assert row["emitted_types"] == ", ".join(sorted(emits))


def test_flow_graph_edges_counts_and_latencies(trace):
    truth = trace.metadata["truth"]["consumers"]
    graph = trace.flow_graph()
    delivers = graph[graph["kind"] == "delivers"].set_index("target")
    for name, expected in truth.items():
        edge = delivers.loc[name]
        assert edge["source"] == expected["subject"]
        assert edge["count"] == expected["deliveries"]
        assert abs(edge["p50_s"] - expected["queue_p50_s"]) < US
        assert abs(edge["p95_s"] - expected["queue_p95_s"]) < US
    emits = graph[graph["kind"] == "emits"]
    assert set(zip(emits["source"], emits["target"], strict=True)) == {
        (n, c["emits"]) for n, c in truth.items() if c["emits"]}
    publishes = graph[graph["kind"] == "publishes"].set_index("target")
    assert publishes.loc["orders.placed", "source"] == "shop"
