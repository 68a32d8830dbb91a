"""Plots: the right traces, nodes, links and axis titles — and escaped text."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

import evtkit as ek
from evtkit.observation import build_observations


@pytest.fixture(scope="module")
def trace() -> ek.Trace:
    return ek.testing.make_trace(300, depth=3, fanout=3, seed=5, slow="search")


@pytest.fixture(autouse=True)
def _never_show(monkeypatch):
    def refuse(self, *a, **k):  # pragma: no cover - only runs if a plot calls show()
        raise AssertionError("plot functions must return figures, not show them")

    monkeypatch.setattr(go.Figure, "show", refuse)


def flow_of(trace):
    return next(iter(trace.metadata["truth"]["critical_paths"].values()))


def test_latency_box_and_ecdf(trace):
    fig = ek.plot_latency(trace)
    assert [t.type for t in fig.data] == ["box", "box"]
    assert [t.name for t in fig.data] == ["queue", "processing"]
    assert fig.layout.xaxis.title.text == "consumer"
    assert fig.layout.yaxis.title.text == "milliseconds"
    assert fig.layout.yaxis.type == "log"  # the slow consumer spans orders of magnitude
    assert ek.plot_latency(trace, log=False).layout.yaxis.type is None
    assert len(set(fig.data[0].x)) == 9
    ecdf = ek.plot_latency(trace, kind="ecdf")
    assert len(ecdf.data) == 18 and all(t.type == "scatter" for t in ecdf.data)
    assert max(ecdf.data[0].y) == 1.0
    with pytest.raises(ValueError):
        ek.plot_latency(trace, kind="pie")


def test_backlog(trace):
    fig = ek.plot_backlog(trace)
    assert len(fig.data) == 18  # a messages and an age line per consumer
    assert fig.layout.yaxis.title.text == "messages"
    assert fig.layout.yaxis2.title.text == "seconds"
    search = [t for t in fig.data if t.name == "search"][0]
    assert max(search.y) > 10  # the slow consumer's backlog shows


def test_waterfall_marks_the_critical_path(trace):
    expected = flow_of(trace)
    fig = ek.plot_waterfall(trace, expected["flow"])
    assert [t.type for t in fig.data] == ["bar", "bar"]
    assert len(fig.data[0].x) == 9 and len(fig.data[1].x) == 9
    hot = sum(sum(w > 0 for w in t.marker.line.width) for t in fig.data)
    assert hot == 2 * len(expected["path"])
    assert fig.layout.xaxis.title.text == "milliseconds since the flow began"


def test_dag(trace):
    fig = ek.plot_dag(trace, flow_of(trace)["flow"])
    markers = {t.name: len(t.x) for t in fig.data if t.mode == "markers"}
    assert markers == {"event": 3, "delivery": 9, "handler": 9}
    assert any(t.name == "critical path" for t in fig.data)


def test_fanout_sankey(trace):
    fig = ek.plot_fanout(trace)
    (sankey,) = fig.data
    assert sankey.type == "sankey"
    # 3 subjects + 9 consumers; links: 9 delivers + 2 emits.
    assert len(sankey.node.label) == 12 and len(sankey.link.value) == 11
    assert sum(sankey.link.value) == 9 * 100 + 2 * 100


def test_dependencies(trace):
    fig = ek.plot_dependencies(trace)
    nodes = [t for t in fig.data if t.mode == "markers+text"][0]
    assert set(nodes.text) == {"shop", "inventory", "notifications", "analytics", "billing",
                               "audit", "search", "shipping", "fraud", "email"}
    assert len([t for t in fig.data if t.mode == "lines"]) == 9


def test_compare(trace):
    fig = ek.plot_compare(ek.compare(ek.testing.make_trace(300, seed=6), trace))
    assert [t.name for t in fig.data] == ["base", "other"]
    assert "WARN" in fig.data[1].text
    assert fig.layout.yaxis.title.text == "queue p95 (ms)"


def test_text_from_the_traffic_is_escaped():
    evil = "<img src=x onerror=alert(1)>"
    t = 1_900_000_000 * 10**9
    block = b"NATS/1.0\r\nce-id: e1\r\nce-source: s\r\n\r\n"
    rows = [("publish", t, "p", None, None, evil.encode(), None, b"", block, None),
            ("receive", t + 1000, "c", evil, None, evil.encode(), None, b"", block, None),
            ("handled", t + 5000, "c", evil, None, None, None, None, None,
             (1, t + 2000, "error", f"ValueError: {evil}"))]
    trace = ek.Trace(build_observations(rows))
    flow = trace.chains()["correlation_id"].iloc[0]
    for fig in (ek.plot_latency(trace), ek.plot_dag(trace, flow), ek.plot_fanout(trace),
                ek.plot_waterfall(trace, flow), ek.plot_backlog(trace)):
        text = fig.to_json()
        assert "<img" not in text and "&lt;img" in text
