"""Plots: the right traces, nodes, links and axis titles — and escaped text."""

from __future__ import annotations

import re

import pandas as pd
import plotly.graph_objects as go
import pytest

import evtkit as ek
from evtkit._units import duration
from evtkit.observation import build_observations

UNIT = re.compile(r"\d (µs|ms|s|min|h)\b")


@pytest.fixture(scope="module")
def trace() -> ek.Trace:
    return ek.testing.make_trace(300, depth=3, fanout=3, seed=5, slow="search")


@pytest.fixture(scope="module")
def incident() -> ek.Trace:
    return ek.datasets.load("shop-incident")


@pytest.fixture(scope="module")
def baseline() -> ek.Trace:
    return ek.datasets.load("shop-baseline")


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
    assert len([t for t in fig.data if t.mode != "markers"]) == 18  # 2 lines per consumer
    assert fig.layout.yaxis.title.text == "messages"
    assert fig.layout.yaxis2.title.text == "seconds"
    search = [t for t in fig.data if t.name == "search"][0]
    assert max(search.y) > 10  # the slow consumer's backlog shows


def _findings(*rows):
    at = pd.Timestamp("2026-11-26 16:04:00", tz="UTC")
    return pd.DataFrame(
        [{"consumer": c, "start": at + pd.Timedelta(seconds=a),
          "end": at + pd.Timedelta(seconds=b) if b is not None else pd.NaT,
          "severity": sev, "kind": kind} for c, a, b, sev, kind in rows],
        columns=["consumer", "start", "end", "severity", "kind"])


def test_backlog_shades_warning_and_critical_findings(incident):
    findings = _findings(("billing", 6.2, 8.8, "critical", "failing_handler"),
                         ("shipping", 13.4, 17.4, "critical", "stalled_consumer"),
                         ("billing", 2.8, 3.8, "warning", "backlog_growth"),
                         ("inventory", 0.0, 1.0, "info", "hiccup"),
                         ("notifications", 20.0, None, "warning", "slow_consumer"))
    fig = ek.plot_backlog(incident, findings=findings)
    shapes = fig.layout.shapes
    assert len(shapes) == 4  # the info finding is not marked
    assert all(s.type == "rect" and s.xref == "x" and s.yref == "paper"
               and (s.y0, s.y1) == (0, 1) for s in shapes)  # across both panels
    fills = [s.fillcolor for s in shapes]
    assert sum(f.startswith("rgba(214, 39, 40") for f in fills) == 2  # red: critical
    assert sum(f.startswith("rgba(242, 163, 58") for f in fills) == 2  # orange: warning
    assert all(float(f.rsplit(",", 1)[1].rstrip(")")) < 0.5 for f in fills)  # see-through
    texts = {a.text for a in fig.layout.annotations}
    assert {"failing_handler billing", "stalled_consumer shipping", "backlog_growth billing",
            "slow_consumer notifications"} <= texts
    assert not any("hiccup" in t for t in texts)
    ongoing = [s for s in shapes if s.name == "warning: slow_consumer notifications"][0]
    assert pd.Timestamp(ongoing.x1) == incident.backlog()["time"].max()  # still going
    assert fig.layout.yaxis.title.text == "messages" and fig.layout.title.text


def test_backlog_uses_the_traces_own_diagnosis(incident, monkeypatch):
    found = _findings(("billing", 6.2, 8.8, "critical", "failing_handler"),
                      ("billing", 2.8, 3.8, "warning", "backlog_growth"))
    monkeypatch.setattr(ek.Trace, "diagnose", lambda self, *a, **k: found, raising=False)
    assert len(ek.plot_backlog(incident).layout.shapes) == 2
    assert len(ek.plot_backlog(incident, findings=found.iloc[:0]).layout.shapes) == 0
    monkeypatch.delattr(ek.Trace, "diagnose", raising=False)
    assert len(ek.plot_backlog(incident).layout.shapes) == 0  # a trace without diagnose()


def test_backlog_finding_labels_are_escaped(incident):
    evil = "<img src=x onerror=alert(1)>"
    fig = ek.plot_backlog(incident, findings=_findings((evil, 1, 2, "critical", evil)))
    assert "<img" not in fig.to_json() and "&lt;img" in fig.to_json()


def test_waterfall_marks_the_critical_path(trace):
    expected = flow_of(trace)
    fig = ek.plot_waterfall(trace, expected["flow"])
    assert [t.type for t in fig.data] == ["bar", "bar"]
    assert len(fig.data[0].x) == 9 and len(fig.data[1].x) == 9
    hot = sum(sum(w > 0 for w in t.marker.line.width) for t in fig.data)
    assert hot == 2 * len(expected["path"])
    assert fig.layout.xaxis.title.text == "milliseconds since the flow began"


def test_waterfall_bars_carry_their_durations(trace):
    fig = ek.plot_waterfall(trace, flow_of(trace)["flow"])
    queue, processing = fig.data
    for bar in (queue, processing):
        assert len(bar.text) == len(bar.x)
        for text, ms in zip(bar.text, bar.x, strict=True):
            assert text.startswith(duration(ms / 1e3)) and UNIT.search(text)
    assert queue.textposition == "inside" and processing.textposition == "outside"
    # A queue bar too short for its label: the row's processing label says the wait too.
    assert all("(waited " in text for text in processing.text)


def test_dag(trace):
    fig = ek.plot_dag(trace, flow_of(trace)["flow"])
    markers = {t.name: len(t.x) for t in fig.data if t.mode == "markers"}
    assert markers == {"event": 3, "delivery": 9, "handler": 9}
    assert any(t.name == "critical path" for t in fig.data)


def test_fanout_sankey(trace):
    fig = ek.plot_fanout(trace)
    sankey = fig.data[0]
    assert sankey.type == "sankey"
    # 3 subjects + 9 consumers; links: 9 delivers + 2 emits.
    assert len(sankey.node.label) == 12 and len(sankey.link.value) == 11
    assert sum(sankey.link.value) == 9 * 100 + 2 * 100
    # Counts are in the node labels, readable without hovering.
    assert all(label.endswith(" (100)") for label in sankey.node.label)
    assert "orders.placed (100)" in sankey.node.label


def test_fanout_counts_events_per_subject_and_deliveries_per_consumer(incident):
    labels = set(ek.plot_fanout(incident).data[0].node.label)
    graph = incident.flow_graph()
    events = graph[graph["kind"] == "publishes"].groupby("target")["count"].sum()
    received = graph[graph["kind"] == "delivers"].groupby("target")["count"].sum()
    assert f"orders.placed ({events['orders.placed']:,})" in labels
    assert f"shipping ({received['shipping']:,})" in labels
    assert f"notifications ({received['notifications']:,})" in labels
    assert any(re.fullmatch(r"notifications \(\d,\d{3}\)", label) for label in labels)


def test_fanout_has_a_legend_for_its_node_kinds(trace):
    fig = ek.plot_fanout(trace)
    sankey, legend = fig.data[0], fig.data[1:]
    assert fig.layout.showlegend
    assert {t.name for t in legend} == {"subject from a producer (events)",
                                        "subject emitted by a consumer (events)",
                                        "consumer (deliveries received)"}
    assert all(t.x == (None,) for t in legend)  # legend entries only, nothing drawn
    assert {t.marker.color for t in legend} == set(sankey.node.color)
    assert fig.layout.xaxis.visible is False and fig.layout.yaxis.visible is False


def node_traces(fig):
    return [t for t in fig.data if t.mode == "markers+text"]


def test_dependencies(trace):
    fig = ek.plot_dependencies(trace)
    names = {text.split(" · ")[0] for t in node_traces(fig) for text in t.text}
    assert names == {"shop", "inventory", "notifications", "analytics", "billing",
                     "audit", "search", "shipping", "fraud", "email"}
    assert len([t for t in fig.data if t.mode == "lines"]) == 9
    assert fig.layout.xaxis.title.text == "hops from the first producer"


def test_dependency_edges_have_arrows_and_labels(trace):
    fig = ek.plot_dependencies(trace)
    arrows = [a for a in fig.layout.annotations if a.showarrow and a.arrowhead]
    assert len(arrows) == 9  # one per edge
    assert all(a.axref == "x" and a.ayref == "y" and a.ax < a.x for a in arrows)  # →
    labels = [a.text for a in fig.layout.annotations if not a.showarrow and "msgs" in a.text]
    assert len(labels) == 9
    assert all("100 msgs" in label and "p95 queue" in label and UNIT.search(label)
               for label in labels)
    assert sum(label.startswith("inventory.reserved<br>") for label in labels) == 3


def test_dependency_nodes_are_coloured_by_lag_status(incident):
    fig = ek.plot_dependencies(incident)
    status = incident.lag().set_index("consumer")["status"]
    expected = {"OK": "#2ca02c", "WARN": "#f2a33a", "ERR": "#d62728", "STALL": "#d62728",
                "STOP": "#d62728"}
    colour = {text.split(" · ")[0]: t.marker.color for t in node_traces(fig)
              for text in t.text}
    assert set(status.index) < set(colour)
    for consumer, s in status.items():
        assert colour[consumer] == expected[s], consumer
    assert colour["orders"] == "#9a9a9a"  # publishes only: neutral
    # A status other than OK is written beside the name; the legend says what colours mean.
    texts = {text for t in node_traces(fig) for text in t.text}
    for consumer, s in status.items():
        assert (f"{consumer} · {s}" if s != "OK" else consumer) in texts
    assert fig.layout.showlegend and fig.layout.legend.title.text == "consumer lag status"
    assert {"OK", "producer only (no lag)"} <= {t.name for t in node_traces(fig)}


def test_parallel_dependency_edges_do_not_overlap(incident):
    fig = ek.plot_dependencies(incident)
    labels = [a for a in fig.layout.annotations if not a.showarrow and "msgs" in a.text]
    assert len({(a.x, a.y) for a in labels}) == len(labels)
    # billing → notifications twice (payments.captured and payments.failed), → shipping once.
    assert sum(a.text.startswith("payments.") for a in labels) == 3


def test_compare(trace):
    fig = ek.plot_compare(ek.compare(ek.testing.make_trace(300, seed=6), trace))
    assert [t.name for t in fig.data] == ["base", "other"]
    assert fig.layout.yaxis.type == "log"  # the slow consumer is ~150x its baseline
    assert fig.layout.yaxis.title.text == "queue p95 (ms, log scale)"
    linear = ek.plot_compare(ek.compare(ek.testing.make_trace(300, seed=6), trace), log=False)
    assert linear.layout.yaxis.type is None
    assert linear.layout.yaxis.title.text == "queue p95 (ms)"


def test_compare_shows_a_baseline_1000_times_smaller(baseline, incident):
    comparison = ek.compare(baseline, incident)
    c = comparison.consumers.sort_values("consumer")
    fig = ek.plot_compare(comparison)
    base, other = fig.data
    assert fig.layout.yaxis.type == "log"
    assert max(other.y) / min(base.y) > 1000 and min(base.y) > 0  # all bars have a height
    # Every bar is labelled in human units, never 1.83e+03.
    for bar, run in ((base, "base"), (other, "other")):
        for text, seconds in zip(bar.text, c[f"queue_p95_s_{run}"], strict=True):
            assert text.split("<br>")[0] == duration(seconds) and UNIT.search(text)
            assert "e+" not in text
    assert any(text.startswith("1.83 s") for text in other.text)
    # The other run's bars give the ratio to the base, and the status when it changed.
    for text, before, after, s, b in zip(other.text, c["queue_p95_s_base"],
                                         c["queue_p95_s_other"], c["status_other"],
                                         c["status_base"], strict=True):
        assert f"{after / before:.3g}×" in text
        assert (f"<br>{s}" in text) == (s != b)
    assert all(t.cliponaxis is False and t.textposition == "outside" for t in fig.data)


def test_compare_of_counts(baseline, incident):
    fig = ek.plot_compare(ek.compare(baseline, incident), measure="deliveries")
    assert fig.layout.yaxis.title.text == "deliveries"
    assert fig.layout.yaxis.type is None  # 498 beside 1,069: linear is fine
    assert "1,069" in {t.split("<br>")[0] for t in fig.data[1].text}
    assert not any(UNIT.search(t) for t in fig.data[1].text)


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
