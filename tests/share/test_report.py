"""The standalone HTML report: its sections, plotly.js inlined exactly once and nothing loaded
from the network, lag statuses as CSS classes, the JetStream section only with JetStream
rows, the sample note, an escaped title, and building from a saved trace file."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from markupsafe import escape
from plotly.offline import get_plotlyjs

import evtkit as ek
from evtkit.observation import build_observations
from evtkit.share.report import build_report

SEC = 1_000_000_000
SECTIONS = ["What went wrong", "Findings", "Lag over time", "Summary", "Consumer lag",
            "Latency per consumer", "Slowest flows", "Where events go"]
# The banner plotly.js starts with ("plotly.js v4.1.1"): once per copy of the library.
BANNER = re.search(r"plotly\.js v[0-9.]+", get_plotlyjs()[:300]).group(0)
SCRIPT_SRC = re.compile(r"<script\b[^>]*\bsrc\s*=", re.IGNORECASE)
REMOTE = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?"
                    r"(?:https?:)?//", re.IGNORECASE)


@pytest.fixture(scope="module")
def trace() -> ek.Trace:
    """Nine consumers: one failing (ERR), one too slow (WARN), the rest OK."""
    return ek.testing.make_trace(300, seed=3, failing={"audit": 0.3}, slow="search")


@pytest.fixture(scope="module")
def page(trace) -> str:
    return build_report(trace, progress=False)


def headings(text: str) -> list[str]:
    return re.findall(r"<h2>([^<]*)</h2>", text)


def section(text: str, heading: str) -> str:
    """The page from ``<h2>heading</h2>`` to the next ``<h2>``."""
    start = text.index(f"<h2>{heading}</h2>")
    end = text.find("<h2>", start + 1)
    return text[start:end if end >= 0 else len(text)]


def jetstream_rows(t: int, info: bool, advisories: bool) -> list[tuple]:
    rows = []
    if info:
        rows += [("consumer_info", t + i * SEC, "w", "billing", None, None, None, None, None,
                  ("ORDERS", 4 - i, 2, 1, 0, 10 + i, 12 + i, 8 + i, t, "n1"))
                 for i in range(3)]
    if advisories:
        rows.append(("advisory", t + 3 * SEC, "w", "billing", None,
                     b"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.ORDERS.billing", None,
                     b"{}", None, ("MAX_DELIVERIES", "ORDERS", 7, 5)))
    return rows


def with_jetstream(base: ek.Trace, *, info: bool, advisories: bool) -> ek.Trace:
    """``base`` plus JetStream consumer samples and/or an advisory after its last row."""
    obs = base.observations
    t = int(obs["ts"].max().value)
    extra = build_observations(jetstream_rows(t, info, advisories), first_seq=len(obs))
    return ek.Trace(pd.concat([obs, extra], ignore_index=True), base.metadata)


class TestPage:
    def test_is_a_complete_html_document(self, page):
        assert page.startswith("<!DOCTYPE html>")
        assert page.rstrip().endswith("</html>")
        assert '<meta charset="utf-8">' in page

    def test_has_every_section_in_order(self, page):
        found = headings(page)
        assert found[:len(SECTIONS)] == SECTIONS  # the verdict first
        assert "JetStream" not in found  # no JetStream rows in a generated trace

    def test_plotlyjs_is_inlined_exactly_once(self, page):
        assert page.count(BANNER) == 1
        blocks = re.findall(r"<script type=\"text/javascript\">(.*?)</script>", page,
                            re.DOTALL)
        assert sum(BANNER in block for block in blocks) == 1
        assert len(page) > len(get_plotlyjs())

    def test_loads_nothing_from_the_network(self, page):
        assert not SCRIPT_SRC.search(page)
        assert not REMOTE.search(page)
        assert "this page loads nothing from the network" in page

    def test_every_plot_is_drawn(self, trace, page):
        # Lag over time, latency, fan-out and dependencies, and one waterfall per
        # representative slow flow (a distinct bottleneck), at most three.
        waterfalls = min(3, int(trace.slowest_flows()["representative"].sum()))
        assert waterfalls >= 1
        assert page.count('class="plotly-graph-div"') == 4 + waterfalls

    def test_each_consumers_status_cell_has_its_class(self, trace, page):
        lag = section(page, "Consumer lag")
        table = lag[:lag.index("</table>")]
        cells = re.findall(r"<tr><td>([^<]*)</td>.*?<td class=\"status-([A-Z]+)\">([A-Z]+)</td>"
                           r"</tr>", table)
        expected = dict(zip(trace.lag()["consumer"], trace.lag()["status"], strict=True))
        assert {consumer: cls for consumer, cls, _ in cells} == expected
        assert all(cls == text for _, cls, text in cells)
        assert {"OK", "ERR", "WARN"} <= set(expected.values())

    def test_each_consumer_has_a_reason_with_its_status(self, trace, page):
        lag = section(page, "Consumer lag")
        for consumer, status, reason in trace.lag()[["consumer", "status", "reason"]].itertuples(
                index=False):
            item = (f'<li><b>{consumer}</b> <span class="status-{status}">{status}</span>: '
                    f"{escape(reason)}</li>")
            assert item in lag, consumer

    def test_the_verdict_is_one_headline_per_critical_finding(self, trace, page):
        verdict = section(page, "What went wrong")
        findings = trace.diagnose()
        critical = findings[findings["severity"] == "critical"]
        assert len(critical) >= 1
        assert verdict.count("<li>") == len(critical)
        for evidence in critical["evidence"]:
            assert str(escape(evidence)) in verdict

    def test_the_findings_table_lists_warnings_and_criticals(self, trace, page):
        table = section(page, "Findings")
        findings = trace.diagnose()
        alarms = findings[findings["severity"] != "info"]
        assert table.count("<tr><td>F") == len(alarms)
        assert '<td class="status-critical">critical</td>' in table
        assert "<td>failing_handler</td><td>audit</td>" in table

    def test_the_default_title_for_a_trace_in_memory(self, page):
        assert "<title>evtkit report</title>" in page
        assert "<h1>evtkit report</h1>" in page

    def test_no_sample_note_when_every_delivery_is_drawn(self, page):
        assert "draws a random sample" not in page


class TestOptions:
    def test_a_title_is_used_and_escaped(self, trace):
        text = build_report(trace, title="<b>x</b> & co", progress=False)
        assert "<title>&lt;b&gt;x&lt;/b&gt; &amp; co</title>" in text
        assert "<h1>&lt;b&gt;x&lt;/b&gt; &amp; co</h1>" in text
        assert "<b>x</b>" not in text

    def test_a_sample_smaller_than_the_deliveries_is_noted(self, trace):
        text = build_report(trace, sample=50, progress=False)
        total = len(trace.deliveries)
        assert total == 900
        assert (f"The latency plot draws a random sample of 50 of the {total:,} deliveries; "
                "the tables use all of them.") in text
        # The tables are not sampled: every consumer still has its full count.
        lag = section(text, "Consumer lag")
        for consumer, n in trace.lag()[["consumer", "deliveries"]].itertuples(index=False):
            assert f"<td>{consumer}</td>" in lag and f"<td>{n}</td>" in lag

    def test_a_sample_as_large_as_the_deliveries_is_not_noted(self, trace):
        text = build_report(trace, sample=len(trace.deliveries), progress=False)
        assert "draws a random sample" not in text

    def test_flows_sets_the_number_of_waterfalls(self, trace):
        text = build_report(trace, flows=1, progress=False)
        assert text.count('class="plotly-graph-div"') == 5
        flow = trace.slowest_flows().iloc[0]
        assert f"mostly {flow['bottleneck_kind']} at {flow['bottleneck']}" in text


class TestJetStream:
    @pytest.mark.parametrize(("info", "advisories"), [(True, False), (False, True),
                                                      (True, True)])
    def test_a_section_when_there_are_jetstream_rows(self, trace, info, advisories):
        text = build_report(with_jetstream(trace, info=info, advisories=advisories),
                            progress=False)
        found = headings(text)
        assert "JetStream" in found
        assert found.index("Lag over time") < found.index("JetStream") < found.index(
            "Slowest flows")
        part = section(text, "JetStream")
        assert 'class="plotly-graph-div"' in part
        assert ("The server's own counters" in part) is info
        assert ("<td>MAX_DELIVERIES</td>" in part) is advisories
        assert text.count(BANNER) == 1

    def test_the_last_sample_of_each_consumer_is_shown(self, trace):
        text = build_report(with_jetstream(trace, info=True, advisories=False),
                            progress=False)
        part = section(text, "JetStream")
        # The third sample: pending 2, ack_pending 2 (backlog 4), ack floor 10.
        assert "<tr><td>ORDERS</td><td>billing</td><td>4</td><td>2</td><td>2</td>" in part
        assert "<td>10</td>" in part


class TestFiles:
    def test_report_writes_the_page_and_returns_its_path(self, trace, tmp_path):
        out = tmp_path / "nested" / "dir" / "r.html"
        written = ek.report(trace, out, progress=False)
        assert written == out and out.is_file()
        text = out.read_text(encoding="utf-8")
        assert text.startswith("<!DOCTYPE html>") and text.count(BANNER) == 1

    def test_report_from_a_saved_trace_file(self, trace, tmp_path):
        path = tmp_path / "incident.parquet"
        trace.save(path)
        out = ek.report(path, tmp_path / "incident.html", progress=False)
        text = out.read_text(encoding="utf-8")
        assert "<title>incident.parquet</title>" in text  # named after the file
        assert headings(text)[:len(SECTIONS)] == SECTIONS
        lag = section(text, "Consumer lag")
        for status in set(trace.lag()["status"]):
            assert f'class="status-{status}"' in lag

    def test_report_from_a_string_path(self, tmp_path):
        path = tmp_path / "small.parquet"
        ek.testing.make_trace(30, seed=1).save(path)
        out = ek.report(str(path), str(tmp_path / "small.html"), progress=False,
                        title="Small")
        assert "<title>Small</title>" in out.read_text(encoding="utf-8")

    def test_a_missing_trace_file_is_a_trace_format_error(self, tmp_path):
        with pytest.raises(ek.TraceFormatError):
            ek.report(tmp_path / "absent.parquet", tmp_path / "r.html", progress=False)
        assert not (tmp_path / "r.html").exists()


class TestTapOnlyCapture:
    """What `evtkit record` writes by default: tap rows only, no deliveries."""

    async def test_report_of_a_tap_only_recording(self, url, tmp_path):
        import subprocess
        import sys

        async with ek.connect(url, name="recorder") as bus:
            await bus.tap("taponly.>")
            async with ek.connect(url, name="shop") as shop:
                for i in range(5):
                    await shop.publish("taponly.placed", {"i": i})
                await shop.flush()
            await bus.flush()
            trace = bus.trace()
        obs = trace.observations
        tapped = ek.Trace(obs[(obs["kind"] == "tap").to_numpy()], trace.metadata)
        assert len(tapped.events) == 5 and tapped.deliveries.empty
        path = tapped.save(tmp_path / "taps.parquet")
        done = subprocess.run([sys.executable, "-m", "evtkit", "report", path, "--out",
                               str(tmp_path / "taps.html"), "--quiet"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        page = (tmp_path / "taps.html").read_text()
        assert "Slowest flows" in page and "Traceback" not in page

    def test_a_flow_without_deliveries_draws_a_note_not_an_error(self):
        trace = ek.testing.make_trace(20, seed=1)
        obs = trace.observations
        tapped = ek.Trace(obs[obs["kind"].isin(["publish", "tap"]).to_numpy()], {})
        flow = tapped.chains()["correlation_id"].iloc[0]
        fig = ek.plot_waterfall(tapped, flow)
        assert "no deliveries recorded" in fig.layout.annotations[0].text
