"""``evtkit report``: one standalone HTML page about a trace, built without Jupyter.

::

    ek.report(trace, "reports/incident.html")

The page is the Jinja2 template ``templates/report/report.html.j2`` filled with escaped
text: the summary, problems, the lag table with statuses and reasons, latency and
backlog plots, JetStream consumer counters and advisories (when sampled), the slowest flows
with their waterfalls, and the fan-out Sankey (with connections seen only by server message
traces). plotly.js
is inlined once; nothing is loaded from the network; every text from the traffic is
escaped. Large traces are downsampled for the plots (the page says so), which keeps a
million-event report to a few megabytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import plotly.io as pio
from markupsafe import Markup
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

TEMPLATES = Path(__file__).resolve().parent / "templates"
_PAGE = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES / "report"), autoescape=True,
    undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
).get_template("report.html.j2")


@dataclass(frozen=True, slots=True)
class Table:
    """A table for the page: column names, rows of display text, and which column (if
    any) holds a status whose value becomes the cell's CSS class."""

    columns: list[str]
    rows: list[list[str]]
    status: int | None = None


def _table(frame: pd.DataFrame, columns: list[str], status: str | None = None) -> Table:
    """Display text for ``columns`` of ``frame``: floats to 4 significant digits, blanks for
    missing values; the page template escapes every cell."""
    shown = frame[columns]
    cells = [[_cell(v, shown[c].dtype.kind == "f") for v in shown[c]] for c in columns]
    return Table(columns, [list(row) for row in zip(*cells, strict=True)],
                 columns.index(status) if status else None)


def _cell(value: Any, number: bool) -> str:
    if value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value)
                         and pd.isna(value)):
        return ""
    return f"{value:.4g}" if number else str(value)


def _figure(fig: Any) -> Markup:
    """A plot's ``<div>`` (plotly's own HTML, its data JSON-encoded; plotly.js is on the
    page once)."""
    return Markup(pio.to_html(fig, include_plotlyjs=False, include_mathjax=False,
                              full_html=False, config={"displaylogo": False}))


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

    def step(label: str) -> None:
        bar.set_postfix_str(label, refresh=False)
        bar.update(1)

    page: dict[str, Any] = {
        "title": title or Path(str(trace.metadata.get("source_path", "evtkit report"))).name,
    }
    summary = pd.DataFrame([(k.replace("_", " "), str(v)) for k, v in trace.summary().items()],
                           columns=["", "value"])
    page["summary"] = _table(summary, ["", "value"])
    problems = trace.problems()
    page["problems"] = _table(problems, ["problem", "count", "detail"]) if len(problems) \
        else None
    step("summary")

    lag = trace.lag()
    page["lag"] = _table(lag, ["consumer", "queue", "deliveries", "queue_p50_s", "queue_p95_s",
                               "queue_p99_s", "processing_p50_s", "errors", "dropped",
                               "backlog_max", "status"], status="status")
    page["reasons"] = list(zip(lag["consumer"], lag["status"], lag["reason"], strict=True))
    step("lag")

    drawn = trace.deliveries
    page["sampled"] = (sample, len(drawn)) if len(drawn) > sample else None
    if page["sampled"]:
        drawn = drawn.sample(sample, random_state=0)
    page["latency"] = _figure(plot_latency(drawn))
    step("latency")
    page["backlog"] = _figure(plot_backlog(trace))
    page["jetstream"] = _jetstream(trace)
    step("backlog")

    chains = trace.chains()
    page["flows"] = _table(chains.head(10), [
        "correlation_id", "root_event_id", "events", "deliveries", "depth", "duration_s",
        "critical_path_s", "errors"]) if len(chains) else None
    handled = chains[chains["deliveries"] > 0]  # a waterfall needs deliveries to draw
    page["waterfalls"] = [_figure(plot_waterfall(trace, flow))
                          for flow in handled["correlation_id"].head(flows)]
    step("flows")
    page["fanout"] = [_figure(plot_fanout(trace)), _figure(plot_dependencies(trace))] \
        if len(trace.deliveries) else []
    step("fan-out")
    html = _PAGE.render(plotlyjs=Markup(get_plotlyjs()), **page)
    step("page")
    bar.close()
    return html


def _jetstream(trace: Trace) -> dict[str, Any] | None:
    """The JetStream section: its plot, each consumer's last sample, and the advisories."""
    info, advisories = trace.consumer_info, trace.advisories
    if info.empty and advisories.empty:
        return None
    last = None
    if len(info):
        last = _table(info.groupby(["stream", "consumer"], sort=True).last().reset_index(),
                      ["stream", "consumer", "backlog", "pending", "ack_pending",
                       "redelivered", "waiting", "ack_floor", "ts"])
    counts = None
    if len(advisories):
        grouped = advisories.groupby(["advisory", advisories["stream"].fillna(""),
                                      advisories["consumer"].fillna("")]).size()
        counts = _table(grouped.rename("count").reset_index(),
                        ["advisory", "stream", "consumer", "count"])
    return {"figure": _figure(plot_jetstream(trace)), "last": last, "advisories": counts}


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
