"""``ek.open``: a trace left on disk gives the in-memory path's flows (``chains()``,
``slowest_flows()``), flow graph, delivery sample, plots and report — on a generated trace
with faults, the recorded incident in data/, and hand-built causal trees with a loop."""

from __future__ import annotations

import contextlib
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

import evtkit as ek
from evtkit.cli import main
from evtkit.observation import Row, build_observations
from evtkit.share.report import build_report
from evtkit.store import SegmentWriter
from tests.paths import ROOT
from tests.share.test_report import jetstream_rows

INCIDENT = str(ROOT / "data" / "shop-incident.parquet")


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> str:
    trace = ek.testing.make_trace(3_000, seed=7, failing={"audit": 0.1},
                                  stall=("billing", 4.0, 2.0), stop=("email", 6.0, 1.5), orphans=5)
    path = str(tmp_path_factory.mktemp("views") / "faulty.parquet")
    trace.save(path)
    return path


@pytest.fixture(scope="module", params=["faulty", "incident"])
def both(request: pytest.FixtureRequest, faulty: str) -> tuple[ek.Trace, ek.Dataset]:
    """The same file loaded and opened on DuckDB."""
    path = faulty if request.param == "faulty" else INCIDENT
    trace = ek.load(path)
    # What the engine leaves out (module docstring of evtkit/engine/dataset.py) is absent
    # from these traces, so every column must agree.
    assert not (trace.lineage()["link"] == "inferred").any()
    assert trace.hops.empty
    with ek.open(path) as ds:
        yield trace, ds


def _publish(event: str, cause: str | None, flow: str, t: int, service: str) -> tuple:
    headers = (f"NATS/1.0\r\nce-id: {event}\r\nce-type: t\r\nce-source: {service}\r\n"
               f"ce-specversion: 1.0\r\nce-correlationid: {flow}\r\n"
               + (f"ce-causationid: {cause}\r\n" if cause else "") + "\r\n").encode()
    return ("publish", t, service, None, None, f"s.{event}".encode(), None, b"{}", headers,
            None), headers


def tree_rows() -> list[tuple]:
    """Flow f1: a → b → c (three deep, each handled by the next service); f2: x ⇄ y (a
    causation loop); f3: an event whose cause is not in the trace."""
    events = [("a", None, "f1", "shop"), ("b", "a", "f1", "stock"), ("c", "b", "f1", "pay"),
              ("x", "y", "f2", "loop"), ("y", "x", "f2", "loop"), ("o", "gone", "f3", "old")]
    handler = {"a": "stock", "b": "pay", "c": "mail", "x": "loop", "y": "loop", "o": "mail"}
    rows: list[tuple] = []
    t = 1_700_000_000_000_000_000
    for i, (event, cause, flow, service) in enumerate(events):
        at = t + i * 10_000_000
        row, headers = _publish(event, cause, flow, at, service)
        rows.append(row)
        consumer = handler[event]
        rows.append(("receive", at + 1_000, consumer, consumer, None, f"s.{event}".encode(),
                     None, b"{}", headers, None))
        rows.append(("handled", at + 9_000, consumer, consumer, None, None, None, None, None,
                     (len(rows) - 1, at + 2_000, "ok", None)))
    assert all(len(r) == Row.EXTRA + 1 for r in rows)
    return rows


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("views") / "tree.parquet"
    writer = SegmentWriter(path, {})
    writer.write(0, tree_rows())
    writer.close({})
    return str(path)


class TestFlows:
    def test_chains_equal_the_in_memory_ones(self, both):
        trace, ds = both
        pd.testing.assert_frame_equal(ds.chains(), trace.chains(infer=False))
        pd.testing.assert_frame_equal(ds.chains(), trace.chains())  # nothing to infer here

    def test_roots_depths_and_loops_follow_the_causal_tree(self, tree):
        trace = ek.load(tree)
        with ek.open(tree) as ds:
            chains = ds.chains()
            pd.testing.assert_frame_equal(chains, trace.chains(infer=False))
        by_flow = chains.set_index("correlation_id")
        assert by_flow.loc["f1", "depth"] == 3 and by_flow.loc["f1", "root_event_id"] == "a"
        assert pd.isna(by_flow.loc["f2", "depth"]) and pd.isna(by_flow.loc["f2", "root_event_id"])
        assert np.isnan(by_flow.loc["f2", "critical_path_s"])  # a loop has no root
        assert by_flow.loc["f3", "depth"] == 1 and by_flow.loc["f3", "root_event_id"] == "o"

    def test_slowest_flows_equal_the_in_memory_ones(self, both):
        trace, ds = both
        pd.testing.assert_frame_equal(ds.slowest_flows(), trace.slowest_flows())
        pd.testing.assert_frame_equal(ds.slowest_flows(3), trace.slowest_flows(3))

    def test_the_flow_graph_equals_the_in_memory_one(self, both):
        trace, ds = both
        graph = ds.flow_graph()
        # The in-memory frame holds its latencies as objects; the values are the same.
        pd.testing.assert_frame_equal(graph, trace.flow_graph(), check_dtype=False)
        assert graph["p50_s"].dtype == float and set(graph["seen_by"]) == {"evtkit"}

    def test_the_flow_graph_of_a_causal_tree(self, tree):
        with ek.open(tree) as ds:
            graph = ds.flow_graph()
        pd.testing.assert_frame_equal(graph, ek.load(tree).flow_graph(), check_dtype=False)
        # A handler emits what its service published, caused by what it was handling,
        # after it started: y's handler started after x was published, so not x.
        emits = graph[graph["kind"] == "emits"]
        assert sorted(zip(emits["source"], emits["target"], strict=True)) == [
            ("loop", "s.y"), ("pay", "s.c"), ("stock", "s.b")]


class TestDeliveries:
    def test_every_delivery_equals_the_in_memory_frame(self, both):
        trace, ds = both
        pd.testing.assert_frame_equal(ds.deliveries(), trace.deliveries,
                                      check_categorical=False)
        assert ds.deliveries(sample=10**9)["seq"].equals(trace.deliveries["seq"])

    def test_a_sample_is_random_repeatable_and_in_seq_order(self, faulty):
        trace = ek.load(faulty)
        with ek.open(faulty) as ds:
            first = ds.deliveries(sample=500)
            assert len(first) == 500 and first["seq"].is_monotonic_increasing
            assert first["seq"].equals(ds.deliveries(sample=500)["seq"])
            assert not first["seq"].equals(ds.deliveries(sample=500, seed=1)["seq"])
        whole = trace.deliveries.set_index("seq")
        mine = first.set_index("seq")
        pd.testing.assert_frame_equal(mine, whole.loc[mine.index], check_categorical=False)
        # drawn from the whole capture, not from its start
        assert mine.index.max() > whole.index[int(len(whole) * 0.9)]


def figure_data(fig: go.Figure) -> list[dict]:
    """What a figure draws (traces, shapes, annotations), comparable across figures."""
    data = fig.to_plotly_json()
    for trace in data["data"]:
        trace.pop("uid", None)
    return [data["data"], data["layout"].get("shapes"), data["layout"].get("annotations")]


def same(a: go.Figure, b: go.Figure) -> None:
    left, right = figure_data(a), figure_data(b)
    assert len(left[0]) == len(right[0]) and left[0], "no traces, or not the same number"
    np.testing.assert_equal(left, right)


class TestPlots:
    def test_backlog(self, both):
        trace, ds = both
        same(ek.plot_backlog(ds, "250ms"), ek.plot_backlog(trace, "250ms"))

    def test_latency_of_every_delivery(self, both):
        trace, ds = both
        same(ek.plot_latency(ds), ek.plot_latency(trace))

    def test_latency_of_a_sample(self, faulty):
        with ek.open(faulty) as ds:
            fig = ek.plot_latency(ds, sample=400)
            same(fig, ek.plot_latency(ds.deliveries(sample=400)))
        assert len(fig.data[0].y) == 400

    def test_fanout_and_dependencies(self, both):
        trace, ds = both
        same(ek.plot_fanout(ds), ek.plot_fanout(trace))
        same(ek.plot_dependencies(ds), ek.plot_dependencies(trace))

    def test_waterfall_of_the_slowest_flow(self, both):
        trace, ds = both
        flow = trace.chains()["correlation_id"].iloc[0]
        same(ek.plot_waterfall(ds, flow), ek.plot_waterfall(trace, flow))


def section(page: str, heading: str) -> str:
    """The page from ``<h2>heading</h2>`` to the next plot or heading."""
    start = page.index(f"<h2>{heading}</h2>")
    ends = [i for i in (page.find("<h2>", start + 1), page.find("<div", start)) if i >= 0]
    return page[start:min(ends, default=len(page))]


TEXT_SECTIONS = ["What went wrong", "Findings", "Summary", "Consumer lag", "Slowest flows"]


class TestReport:
    def test_a_dataset_reports_what_its_trace_reports(self, both):
        trace, ds = both
        mine, theirs = build_report(ds, progress=False), build_report(trace, progress=False)
        headings = re.findall(r"<h2>([^<]*)</h2>", mine)
        assert headings == re.findall(r"<h2>([^<]*)</h2>", theirs)
        assert set(TEXT_SECTIONS) <= set(headings)
        for heading in TEXT_SECTIONS:
            assert section(mine, heading) == section(theirs, heading), heading
        assert mine.count('class="plotly-graph-div"') == theirs.count('class="plotly-graph-div"')

    def test_drops_gaps_and_jetstream_rows_are_reported_alike(self, tmp_path):
        base = ek.testing.make_trace(300, seed=3, failing={"audit": 0.3}, slow="search")
        obs = base.observations
        t = int(obs["ts"].max().value)
        rows = [*jetstream_rows(t, info=True, advisories=True),
                ("drop", t + 7, "w1", "billing", None, b"orders.placed", None, None, None,
                 (3, "slow consumer")),
                ("disconnect", t + 8, "w1", None, None, None, None, None, None, "down"),
                ("reconnect", t + 9_000_000, "w1", None, None, None, None, None, None, "up")]
        extra = build_observations(rows, first_seq=len(obs))
        path = tmp_path / "server.parquet"
        ek.Trace(pd.concat([obs, extra], ignore_index=True), base.metadata).save(path)
        trace = ek.load(path)
        assert (trace.drops, len(trace.gaps), len(trace.advisories)) == (3, 1, 1)
        with ek.open(path) as ds:
            mine = build_report(ds, progress=False)
        theirs = build_report(trace, progress=False)
        for heading in ("Summary", "JetStream", "Consumer lag"):
            assert section(mine, heading) == section(theirs, heading), heading

    def test_cli_report_on_duckdb_states_the_traces_numbers(self, tmp_path):
        out = tmp_path / "incident.html"
        assert main(["report", INCIDENT, "--engine", "duckdb", "--out", str(out),
                     "--quiet"]) == 0
        page = out.read_text(encoding="utf-8")
        expected = build_report(ek.load(INCIDENT), progress=False)
        for heading in ("What went wrong", "Consumer lag"):
            assert section(page, heading) == section(expected, heading), heading
        verdict = section(page, "What went wrong")
        assert verdict.count("<li>") >= 1 and "billing" in verdict
        assert "<title>shop-incident.parquet</title>" in page

    def test_report_of_a_dataset_writes_the_page(self, faulty, tmp_path):
        with ek.open(faulty) as ds:
            path = ek.report(ds, tmp_path / "faulty.html", sample=500, progress=False)
        page = path.read_text(encoding="utf-8")
        assert "random sample of 500 of the 8,650 deliveries" in page

    def test_cli_report_refusals_are_one_line(self, tmp_path, capsys):
        out = str(tmp_path / "never.html")
        missing = str(tmp_path / "missing.parquet")
        assert main(["report", missing, "--engine", "duckdb", "--out", out, "--quiet"]) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("evtkit: error:")
        assert "no such file" in lines[0]
        for bad in (["--engine", "pandas"], ["--memory-budget", "lots"]):
            with pytest.raises(SystemExit) as stopped:
                main(["report", INCIDENT, "--out", out, *bad])
            assert stopped.value.code == 2
        assert not (tmp_path / "never.html").exists()


ANALYSES = ("diagnose", "problems", "lag", "backlog", "fanout", "chains", "slowest_flows",
            "flow_graph")


@pytest.mark.parametrize("on_disk", [False, True])
def test_no_analysis_leaves_its_frames_to_the_cycle_collector(faulty, on_disk):
    """What an analysis held goes when it returns, not when Python's cycle collector next
    runs: a full collection can be minutes away, and the diagnosis's last consumer's rows,
    left in a reference cycle, were 33 M deliveries at 100 M events lasting into lag()."""
    import gc

    with ek.open(faulty) if on_disk else contextlib.nullcontext(ek.load(faulty)) as source:
        for name in ANALYSES:
            gc.collect()
            gc.disable()  # (as between two of the collector's runs)
            gc.set_debug(gc.DEBUG_SAVEALL)  # (what it finds unreachable, kept to look at)
            try:
                assert len(getattr(source, name)()), name
                gc.collect()
                left = [type(o).__name__ for o in gc.garbage
                        if isinstance(o, pd.DataFrame | pd.Series | pd.Index | np.ndarray)]
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
            assert left == [], name
