"""``evtkit report``: one standalone HTML page about a trace, built without Jupyter.

::

    ek.report(trace, "reports/incident.html")

The page is the Jinja2 template ``templates/report/report.html.j2`` filled with escaped
text, verdict first: one headline per critical finding of ``trace.diagnose()``, the
findings table, the lag timeline with the findings' windows shaded, then the summary in
human units, the lag table with statuses and reasons, latency, JetStream consumer counters
and advisories (when sampled), the slowest flows with their bottlenecks and waterfalls of
flows with different bottlenecks, and the fan-out (Sankey and dependency graph). Given
event definitions (``spec=``, an AsyncAPI document), the diagnosis includes their
findings, and a section "Does the traffic match its definitions?" follows the findings:
one sentence of verdict, the conformance findings, example violations, the
declared-vs-observed graph and conformance over time. plotly.js
is inlined once; nothing is loaded from the network; every text from the traffic is
escaped. Large traces are downsampled for the plots (the page says so), which keeps a
million-event report to a few megabytes.

A trace left on disk (``ek.open(path)``, a :class:`~evtkit.engine.Dataset`) gets the same
page from its engine's answers: the latency plot draws a random sample of its deliveries,
the waterfalls load their flows' rows, and the JetStream section its few server rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import pandas as pd
import plotly.io as pio
from markupsafe import Markup
from plotly.offline import get_plotlyjs
from tqdm import tqdm

from .._units import clock, count, duration
from ..analysis.finding import headlines
from ..schema import fill
from ..store import load
from ..trace import Trace
from .contract import plot_conformance, plot_contract
from .graphs import plot_dependencies, plot_fanout, plot_waterfall
from .plots import plot_backlog, plot_jetstream, plot_latency
from .table import texts

if TYPE_CHECKING:
    from ..analysis.conformance import Conformance
    from ..asyncapi.spec import Spec
    from ..engine import Dataset

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


def _table(frame: pd.DataFrame, columns: list[str], status: str | None = None,
           names: dict[str, str] | None = None) -> Table:
    """Display text for ``columns`` of ``frame`` in human units (:func:`texts`), with
    headers renamed by ``names``; the page template escapes every cell."""
    names = names or {}
    return Table([names.get(c, c) for c in columns], texts(frame[columns]),
                 columns.index(status) if status else None)


def _figure(fig: Any) -> Markup:
    """A plot's ``<div>`` (plotly's own HTML, its data JSON-encoded; plotly.js is on the
    page once)."""
    return Markup(pio.to_html(fig, include_plotlyjs=False, include_mathjax=False,
                              full_html=False, config={"displaylogo": False}))


def build_report(trace: Trace | Dataset, *, title: str | None = None,
                 sample: int = DEFAULT_SAMPLE, flows: int = 3, progress: bool = True,
                 spec: Spec | str | os.PathLike[str] | dict[str, Any] | None = None) -> str:
    """The report page for ``trace`` as an HTML string (see the module docstring).

    Args:
        trace: a trace, or a dataset (``ek.open(path)``).
        title: page title (default: the trace file name, or "evtkit report").
        sample: most deliveries drawn in the latency plots.
        flows: how many of the slowest flows get a waterfall.
        progress: show progress while building.
        spec: event definitions to hold the traffic against (an AsyncAPI document: a
            :class:`~evtkit.asyncapi.Spec`, or a path, URL or dict it is read from).

    Raises:
        SpecError: ``spec`` cannot be read.
        ValueError: ``spec`` given with a dataset (load the trace: ``ek.load``).
    """
    steps = ["diagnosis", "summary", "lag", "latency", "flows", "fan-out", "page"]
    bar = tqdm(total=len(steps), unit="step", desc="report", disable=not progress,
               mininterval=0.2)

    def step(label: str) -> None:
        bar.set_postfix_str(label, refresh=False)
        bar.update(1)

    page: dict[str, Any] = {
        "title": title or Path(str(trace.metadata.get("source_path", "evtkit report"))).name,
        "contract": None,
    }
    if spec is not None:
        if not isinstance(trace, Trace):
            raise ValueError("checking against a spec needs the trace in memory: "
                             "ek.load(path), not ek.open(path)")
        trace = trace.with_spec(spec)  # the diagnosis then includes its findings
        assert trace.spec is not None
        page["contract"] = _contract(trace.conformance(trace.spec))
    side = trace if isinstance(trace, Trace) else trace.trace(kinds=_SIDE)
    numbers = _numbers(trace, side)
    findings = trace.diagnose()
    page["headlines"] = headlines(findings, failed=trace.lag)
    shown = findings[findings["severity"] != "info"] if (findings["severity"] != "info").any() \
        else findings
    since = (shown["start"] - numbers["start"]).dt.total_seconds()
    page["findings"] = _table(shown.assign(start_s=since), [
        "finding_id", "severity", "kind", "service", "worker", "start_s", "duration_s",
        "evidence", "caused_by"], status="severity", names=_FINDING_NAMES) if len(shown) \
        else None
    page["info"] = (findings["severity"] == "info").sum() if len(shown) < len(findings) else 0
    page["backlog"] = _figure(plot_backlog(trace, findings=findings))
    step("diagnosis")

    page["summary"] = _table(_summary(numbers), ["", "value"])
    step("summary")

    lag = trace.lag()
    page["lag"] = _table(lag, ["consumer", "queue", "deliveries", "queue_p50_s", "queue_p95_s",
                               "queue_p99_s", "processing_p50_s", "errors", "dropped",
                               "backlog_max", "status"], status="status")
    page["reasons"] = list(zip(lag["consumer"], lag["status"], lag["reason"], strict=True))
    step("lag")

    total = numbers["deliveries"]
    page["sampled"] = (sample, total) if total > sample else None
    if not isinstance(trace, Trace):
        drawn = trace.deliveries(sample=sample)
    elif page["sampled"]:
        drawn = trace.deliveries.sample(sample, random_state=0)
    else:
        drawn = trace.deliveries
    page["latency"] = _figure(plot_latency(drawn))
    page["jetstream"] = _jetstream(side)
    step("latency")

    slowest = trace.slowest_flows()
    page["flows"] = _table(slowest, [
        "start_s", "root_subject", "events", "errors", "duration_s", "bottleneck",
        "bottleneck_kind", "bottleneck_s", "finding_id"], names={
            "start_s": "started", "root_subject": "first event", "bottleneck_kind": "spent in",
            "bottleneck_s": "time there", "finding_id": "finding"}) if len(slowest) else None
    shown_flows = slowest[slowest["representative"]].head(flows)
    page["waterfalls"] = [_figure(plot_waterfall(
        trace, row.correlation_id, title=f"Flow from +{duration(row.start_s)}: "
        f"{duration(row.duration_s)}, mostly {row.bottleneck_kind} at {row.bottleneck}"))
        for row in shown_flows.itertuples(index=False)]
    step("flows")
    page["fanout"] = [_figure(plot_fanout(trace)), _figure(plot_dependencies(trace))] \
        if total else []
    step("fan-out")
    html = _PAGE.render(plotlyjs=Markup(get_plotlyjs()), **page)
    step("page")
    bar.close()
    return html


def _contract(result: Conformance) -> dict[str, Any]:
    """The section on the event definitions: verdict, findings, examples, plots."""
    found = result.summary()
    examples = result.violations.head(10)
    return {
        "verdict": conformance_verdict(result),
        "ok": result.ok,
        "spec": f"{result.spec.title} {result.spec.version} (AsyncAPI {result.spec.asyncapi})",
        "findings": _table(found, ["kind", "channel", "subject", "message", "application",
                                   "count", "first_seen", "last_seen", "evidence"])
        if len(found) else None,
        "examples": _table(examples, ["event_id", "subject", "message", "part", "path",
                                      "detail"]) if len(examples) else None,
        "violations": len(result.violations),
        "figures": [_figure(plot_contract(result)), _figure(plot_conformance(result))],
    }


def conformance_verdict(result: Conformance) -> str:
    """One sentence from ``result``: how many events broke their schema, and what was
    not declared (``312 of 10,000 events broke their schema; 1 subject is not
    declared.``)."""
    valid, found = result.events["valid"], result.summary()
    total, bad = len(valid), int(valid.eq(False).sum())
    kinds = found["kind"].value_counts()
    stray = [f"{count(n)} {what}{'' if n == 1 else 's'} {'is' if n == 1 else 'are'} not "
             "declared" for what, kind in (("subject", "undeclared_subject"),
                                          ("producer", "undeclared_producer"),
                                          ("consumer", "undeclared_consumer"))
             if (n := int(kinds.get(kind, 0)))]
    if not bad and not stray:
        unused = int(kinds.get("unused_channel", 0))
        tail = f" ({count(unused)} declared channel{'' if unused == 1 else 's'} not seen)" \
            if unused else ""
        return (f"All {count(total)} event{'' if total == 1 else 's'} conform to "
                f"{result.spec.title}: nothing undeclared{tail}.")
    return "; ".join([f"{count(bad)} of {count(total)} event{'' if total == 1 else 's'} "
                      "broke their schema", *stray]) + "."


_FINDING_NAMES = {"finding_id": "id", "start_s": "after start", "duration_s": "lasted",
                  "caused_by": "symptom of"}


_SIDE = ("disconnect", "reconnect", "consumer_info", "advisory")
"""The kinds of row a dataset's report loads: few, and read by the summary (connection
gaps) and the JetStream section."""


def _numbers(trace: Trace | Dataset, side: Trace) -> dict[str, Any]:
    """:meth:`Trace.summary`'s numbers; of a dataset, counted by its engine, with the gaps
    and advisories from ``side`` (its rows of the kinds in :data:`_SIDE`)."""
    if isinstance(trace, Trace):
        return trace.summary()
    s = trace.summary()
    counts = trace.query("""
        SELECT (SELECT count(DISTINCT subject) FROM events) AS subjects,
               (SELECT count(DISTINCT consumer) FROM deliveries) AS consumers,
               (SELECT coalesce(sum(coalesce(r.count, 1)), 0) FROM observations r
                WHERE r.kind = 'drop') AS reported,
               (SELECT count(*) FROM observations WHERE kind = 'handled'
                AND outcome = 'dropped') AS dropped,
               (SELECT count(*) FROM observations WHERE kind = 'handled'
                AND outcome = 'error') AS errors,
               (SELECT count(*) FROM observations WHERE kind = 'hop') AS hops""").iloc[0]
    start, end = (pd.Timestamp(s["first_ns"], tz="UTC"), pd.Timestamp(s["last_ns"], tz="UTC")) \
        if s["observations"] else (pd.NaT, pd.NaT)
    gaps = side.gaps
    return {
        "start": start, "end": end,
        "duration_s": float((end - start).total_seconds()) if s["observations"] else 0.0,
        "observations": s["observations"], "events": s["events"],
        "deliveries": s["deliveries"], "subjects": int(counts["subjects"]),
        "consumers": int(counts["consumers"]),
        "drops": int(counts["reported"]) + int(counts["dropped"]),
        "handler_errors": int(counts["errors"]), "gaps": len(gaps),
        "gap_s": float(gaps["gap_s"].fillna(0).sum()), "pending": s["pending"],
        "advisories": len(side.advisories), "hops": int(counts["hops"]),
    }


def _summary(s: dict[str, Any]) -> pd.DataFrame:
    """The summary (:func:`_numbers`) as label / text rows in human units."""
    rows = [
        ("captured", f"{clock(s['start'], date=True)} → {clock(s['end'])} "
                     f"({duration(s['duration_s'])})" if s["observations"] else "nothing"),
        ("events", f"{count(s['events'])} on {count(s['subjects'])} subjects"),
        ("deliveries", f"{count(s['deliveries'])} to {count(s['consumers'])} consumers"),
        ("handler errors", count(s["handler_errors"])),
        ("dropped", count(s["drops"])),
        ("pending at the end", count(s["pending"])),
        ("disconnected", f"{count(s['gaps'])} times, {duration(s['gap_s'])} in all"
                         if s["gaps"] else "never"),
        ("JetStream advisories", count(s["advisories"])),
        ("message-trace hops", count(s["hops"])),
    ]
    return pd.DataFrame(rows, columns=["", "value"])


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
        grouped = advisories.groupby(["advisory", fill(advisories["stream"], ""),
                                      fill(advisories["consumer"], "")]).size()
        counts = _table(grouped.rename("count").reset_index(),
                        ["advisory", "stream", "consumer", "count"])
    return {"figure": _figure(plot_jetstream(trace)), "last": last, "advisories": counts}


def report(trace: Trace | Dataset | str | os.PathLike[str], out: str | os.PathLike[str],
           **options: Any) -> Path:
    """Build the report for ``trace`` (a Trace, a dataset from ``ek.open``, or a trace file,
    loaded into memory) and write it to ``out``.

    Raises:
        TraceFormatError: the trace file cannot be read.
    """
    if isinstance(trace, str | os.PathLike):
        trace = load(trace)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(build_report(trace, **options), encoding="utf-8")
    return target
