"""``evtkit report``: one standalone HTML page about a trace, built without Jupyter.

::

    ek.report(trace, "reports/incident.html")

The page has the summary, problems, the lag table with statuses and reasons, latency and
backlog plots, JetStream consumer counters and advisories (when sampled), the slowest flows
with their waterfalls, and the fan-out Sankey (with connections seen only by server message
traces). plotly.js
is inlined once; nothing is loaded from the network; every text from the traffic is
escaped. Large traces are downsampled for the plots (the page says so), which keeps a
million-event report to a few megabytes.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs
from tqdm import tqdm

from ..store import load
from ..trace import Trace
from .plots import (
    plot_backlog,
    plot_dependencies,
    plot_fanout,
    plot_jetstream,
    plot_latency,
    plot_waterfall,
)

__all__ = ["build_report", "report"]

DEFAULT_SAMPLE = 20_000
"""Deliveries drawn in the latency plots; more are sampled down to this."""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: left;
         vertical-align: top; }
.note { color: #666; font-size: 0.9em; }
.OK { color: #2ca02c; } .WARN { color: #d98b00; } .ERR { color: #9467bd; }
.STALL { color: #d62728; font-weight: bold; } .STOP { color: #000; font-weight: bold; }
"""


def _table(frame: pd.DataFrame, columns: list[str], status: str | None = None) -> str:
    """An escaped HTML table; ``status`` names a column whose value becomes a CSS class."""
    shown = frame[columns].copy()
    for column in shown.columns:
        if shown[column].dtype.kind == "f":
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    body = shown.to_html(index=False, escape=True, border=0, na_rep="")
    if status:
        for value in ("OK", "WARN", "ERR", "STALL", "STOP"):
            body = body.replace(f"<td>{value}</td>", f'<td class="{value}">{value}</td>')
    return body


def _figure(fig: Any) -> str:
    return pio.to_html(fig, include_plotlyjs=False, include_mathjax=False, full_html=False,
                       config={"displaylogo": False})


def build_report(trace: Trace, *, title: str | None = None, sample: int = DEFAULT_SAMPLE,
                 flows: int = 3, progress: bool = True) -> str:
    """The report page for ``trace`` as an HTML string (see the module docstring).

    Args:
        title: page title (default: the trace file name, or "evtkit report").
        sample: most deliveries drawn in the latency plots.
        flows: how many of the slowest flows get a waterfall.
        progress: show progress while building.
    """
    steps = ["summary", "lag", "latency", "backlog", "flows", "fan-out", "page"]
    bar = tqdm(total=len(steps), unit="step", desc="report", disable=not progress,
               mininterval=0.2)
    name = title or Path(str(trace.metadata.get("source_path", "evtkit report"))).name
    parts = [f"<h1>{html.escape(name)}</h1>"]

    def step(label: str) -> None:
        bar.set_postfix_str(label, refresh=False)
        bar.update(1)

    summary = trace.summary()
    rows = [(k.replace("_", " "), v) for k, v in summary.items()]
    parts.append("<h2>Summary</h2>" + _table(pd.DataFrame(rows, columns=["", "value"])
                                             .astype(str), ["", "value"]))
    problems = trace.problems()
    if len(problems):
        parts.append("<h2>Problems</h2>" + _table(problems, ["problem", "count", "detail"]))
    step("summary")

    lag = trace.lag()
    parts.append("<h2>Consumer lag</h2>" + _table(
        lag, ["consumer", "queue", "deliveries", "queue_p50_s", "queue_p95_s", "queue_p99_s",
              "processing_p50_s", "errors", "dropped", "backlog_max", "status"],
        status="status"))
    parts.append("<ul>" + "".join(
        f'<li><b>{html.escape(r.consumer)}</b> <span class="{html.escape(r.status)}">'
        f"{html.escape(r.status)}</span>: {html.escape(r.reason)}</li>"
        for r in lag.itertuples(index=False)) + "</ul>")
    step("lag")

    drawn = trace.deliveries
    if len(drawn) > sample:
        drawn = drawn.sample(sample, random_state=0)
        parts.append(f"<p class='note'>The latency plot draws a random sample of "
                     f"{sample:,} of the {len(trace.deliveries):,} deliveries; the tables use "
                     "all of them.</p>")
    parts.append("<h2>Latency per consumer</h2>" + _figure(plot_latency(drawn)))
    step("latency")
    parts.append("<h2>Lag over time</h2>" + _figure(plot_backlog(trace)))
    parts += _jetstream(trace)
    step("backlog")

    chains = trace.chains()
    if len(chains):
        parts.append("<h2>Slowest flows</h2>" + _table(
            chains.head(10), ["correlation_id", "root_event_id", "events", "deliveries",
                              "depth", "duration_s", "critical_path_s", "errors"]))
        for flow in chains["correlation_id"].head(flows):
            parts.append(_figure(plot_waterfall(trace, flow)))
    step("flows")
    if len(trace.deliveries):
        parts.append("<h2>Where events go</h2>" + _figure(plot_fanout(trace)))
        parts.append(_figure(plot_dependencies(trace)))
    step("fan-out")
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(name)}</title><style>{_STYLE}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
            + "\n".join(parts)
            + "<p class='note'>Made by evtkit; this page loads nothing from the network.</p>"
            "</body></html>")
    step("page")
    bar.close()
    return page


def _jetstream(trace: Trace) -> list[str]:
    """The JetStream section: each consumer's last sample, and the advisories."""
    info, advisories = trace.consumer_info, trace.advisories
    if info.empty and advisories.empty:
        return []
    parts = ["<h2>JetStream</h2>"]
    parts.append(_figure(plot_jetstream(trace)))
    if len(info):
        last = info.groupby(["stream", "consumer"], sort=True).last().reset_index()
        parts.append("<p class='note'>The server's own counters, last sample per consumer "
                     "(the lag plot above uses them over time).</p>" + _table(
                         last, ["stream", "consumer", "backlog", "pending", "ack_pending",
                                "redelivered", "waiting", "ack_floor", "ts"]))
    if len(advisories):
        counts = advisories.groupby(["advisory", advisories["stream"].fillna(""),
                                     advisories["consumer"].fillna("")]).size()
        parts.append(_table(counts.rename("count").reset_index(),
                            ["advisory", "stream", "consumer", "count"]))
    return parts


def report(trace: Trace | str | os.PathLike[str], out: str | os.PathLike[str], **options: Any
           ) -> Path:
    """Build the report for ``trace`` (a Trace or a trace file) and write it to ``out``.

    Raises:
        TraceFormatError: the trace file cannot be read.
    """
    if not isinstance(trace, Trace):
        trace = load(trace)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(build_report(trace, **options), encoding="utf-8")
    return target
