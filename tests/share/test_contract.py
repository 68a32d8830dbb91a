"""Declared vs observed: the contract graph's edges and colours follow the data, conformance
over time counts each event once, and the report's section appears only with a spec, with
the right counts and hostile text escaped."""

from __future__ import annotations

import re

import plotly.graph_objects as go
import pytest

import evtkit as ek
from evtkit.share.contract import EDGE_STATUS, contract_edges
from evtkit.share.report import build_report
from tests.asyncapi.traffic import pub, recv
from tests.asyncapi.traffic import trace as traffic

SPEC = {
    "asyncapi": "3.0.0",
    "info": {"title": "Mini", "version": "1.0.0"},
    "channels": {
        "placed": {"address": "orders.placed", "messages": {"m": {"name": "Placed", "payload": {
            "type": "object", "required": ["order"],
            "properties": {"order": {"type": "integer"}}}}}},
        "refunded": {"address": "orders.refunded", "messages": {"r": {"name": "Refunded"}}},
    },
    "operations": {
        "send": {"action": "send", "x-application": "shop",
                 "channel": {"$ref": "#/channels/placed"}},
        "recv": {"action": "receive", "x-application": "billing",
                 "channel": {"$ref": "#/channels/placed"}},
        "refund": {"action": "send", "x-application": "shop",
                   "channel": {"$ref": "#/channels/refunded"}},
    },
}
HOSTILE = "<script>alert(1)</script>"


def make() -> ek.Trace:
    """Four orders by shop, billing receiving each; the third is invalid (a hostile
    string where an integer belongs); one event on an undeclared subject."""
    rows: list[tuple] = []
    for i in range(4):
        order = f'"{HOSTILE}"' if i == 2 else str(i + 1)
        rows.append(pub(i, f"e{i}", "orders.placed", f'{{"order": {order}}}'.encode()))
        rows.append(recv(i + 0.1, f"e{i}", "orders.placed", "billing"))
    rows.append(pub(5, "x1", "orders.bogus", {}))
    return traffic(*rows)


@pytest.fixture(scope="module")
def trace() -> ek.Trace:
    return make()


@pytest.fixture(scope="module")
def spec() -> ek.asyncapi.Spec:
    return ek.asyncapi.load(SPEC)


def edges_of(fig: go.Figure) -> dict[tuple[str, str], go.Scatter]:
    return {(t.meta["source"], t.meta["target"]): t for t in fig.data
            if t.mode == "lines" and t.meta}


class TestPlotContract:
    def test_edges_carry_their_status_and_colour(self, trace, spec):
        edges = edges_of(ek.plot_contract(trace, spec))
        seen = edges["app:shop", "channel:placed"]
        assert seen.meta["status"] == "seen" and seen.meta["count"] == 4
        assert seen.line.color == EDGE_STATUS["seen"][1]
        assert edges["channel:placed", "app:billing"].meta["count"] == 4
        unused = edges["app:shop", "channel:refunded"]
        assert unused.meta["status"] == "declared" and unused.line.dash == "dash"
        assert unused.line.color == EDGE_STATUS["declared"][1]
        stray = edges["app:shop", "subject:orders.bogus"]
        assert stray.meta["status"] == "undeclared"
        assert stray.line.color == EDGE_STATUS["undeclared"][1]
        assert len(edges) == 4

    def test_legend_and_readable_labels(self, trace, spec):
        fig = ek.plot_contract(trace, spec)
        assert fig.layout.showlegend
        legend = {t.name for t in fig.data if t.showlegend is not False}
        assert {v[0] for v in EDGE_STATUS.values()} <= legend
        labels = {text for t in fig.data if t.mode == "markers+text" for text in t.text}
        assert {"shop", "billing", "orders.placed", "orders.refunded",
                "orders.bogus"} <= labels
        counts = [a.text for a in fig.layout.annotations if not a.showarrow]
        assert "4" in counts and "not seen" in counts
        arrows = [a for a in fig.layout.annotations if a.showarrow and a.arrowhead]
        assert len(arrows) == 4

    def test_takes_a_conformance_result_or_the_attached_spec(self, trace, spec):
        a = contract_edges(trace.conformance(spec))
        b = edges_of(ek.plot_contract(trace.with_spec(spec)))
        assert len(a) == len(b)
        with pytest.raises(ValueError, match="event definitions"):
            ek.plot_contract(trace)


class TestPlotConformance:
    def test_valid_invalid_and_undeclared_counted_once(self, trace, spec):
        fig = ek.plot_conformance(trace, spec, "1s")
        total = {}
        for t in fig.data:
            total[t.meta["verdict"]] = total.get(t.meta["verdict"], 0) + sum(t.y)
        assert total == {"valid": 3, "invalid": 1, "undeclared": 1}
        assert fig.layout.barmode == "stack"
        titles = [a.text for a in fig.layout.annotations]
        assert "Placed on orders.placed: 1 of 4 invalid" in titles
        assert "undeclared subjects: 1 event" in titles
        assert fig.layout.yaxis.title.text == "events per 1 s"
        assert fig.layout.title.text == "Conformance to Mini over time"


class TestReportSection:
    HEADING = "Does the traffic match its definitions?"

    def test_present_with_counts_and_plots(self, trace, spec):
        page = build_report(trace, spec=spec, progress=False)
        assert f"<h2>{self.HEADING}</h2>" in page
        part = page[page.index(self.HEADING):]
        part = part[:part.index("<h2>", 10)]
        assert "1 of 5 events broke their schema; 1 subject is not declared." in part
        assert part.count('class="plotly-graph-div"') == 2

    def test_absent_without_a_spec(self, trace):
        assert self.HEADING not in build_report(trace, progress=False)

    def test_hostile_text_is_escaped(self, trace, spec):
        page = build_report(trace, spec=spec, progress=False)
        part = page[page.index(self.HEADING):]
        part = part[:part.index("<h2>", 10)]
        assert HOSTILE not in re.sub(r'<div id="[^"]*" class="plotly-graph-div".*?</script>',
                                     "", part, flags=re.S)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in part

    def test_healthy_verdict(self, spec):
        clean = traffic(pub(0, "a", "orders.placed", {"order": 1}))
        page = build_report(clean, spec=spec, progress=False)
        assert "All 1 event conform to Mini: nothing undeclared (1 declared channel not " \
               "seen)." in page

    def test_cli_report_with_spec(self, trace, tmp_path):
        import yaml

        path = tmp_path / "t.parquet"
        trace.save(path)
        (tmp_path / "api.yaml").write_text(yaml.safe_dump(SPEC))
        out = tmp_path / "r.html"
        from evtkit.cli import main

        assert main(["report", str(path), "--out", str(out), "--quiet", "--spec",
                     str(tmp_path / "api.yaml")]) == 0
        assert self.HEADING in out.read_text()
