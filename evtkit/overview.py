"""A trace at a glance, verdict first: what ``evtkit info`` prints and what a notebook shows
for a :class:`~evtkit.trace.Trace`, or for a :class:`~evtkit.engine.Dataset` left on disk.

Both lead with the verdict (one sentence per critical finding of ``diagnose()``), then the
warning and critical findings, then the numbers in human units.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Protocol

from ._units import clock, count, duration

if TYPE_CHECKING:
    import pandas as pd

    from .trace import Trace

__all__ = ["Diagnosed", "describe", "findings", "html_view", "to_html"]


class Diagnosed(Protocol):
    """What has a verdict: a :class:`~evtkit.trace.Trace` or a
    :class:`~evtkit.engine.Dataset`."""

    def diagnose(self) -> pd.DataFrame: ...  # noqa: D102 - as Trace.diagnose

    def verdict(self) -> list[str]: ...  # noqa: D102 - as Trace.verdict


def _facts(trace: Trace) -> list[tuple[str, str]]:
    """The summary as (label, text) pairs in human units."""
    s = trace.summary()
    meta = trace.metadata
    facts = [
        ("trace", str(meta.get("source_path", "(in memory)"))),
        ("server", f"{meta.get('server_url', '?')} (nats-server "
                   f"{meta.get('server_version', '?')})"),
        ("captured", f"{clock(s['start'], date=True)} → {clock(s['end'])} "
                     f"({duration(s['duration_s'])})" if s["observations"] else "nothing"),
        ("events", f"{count(s['events'])} on {count(s['subjects'])} subjects"),
        ("deliveries", f"{count(s['deliveries'])} to {count(s['consumers'])} consumers "
                       f"({count(s['pending'])} pending, {count(s['handler_errors'])} handler "
                       "errors)"),
        ("drops", count(s["drops"])),
        ("gaps", f"{count(s['gaps'])} ({duration(s['gap_s'])} disconnected)"
                 if s["gaps"] else "none"),
    ]
    if s["events"]:
        top = trace.events["subject"].value_counts().head(8)
        facts.append(("top subjects", ", ".join(f"{k} ({count(v)})" for k, v in top.items())))
    if s["deliveries"]:
        per = trace.deliveries.groupby("consumer")["queue_s"].median().sort_values()
        facts.append(("consumers", ", ".join(f"{k} (median wait {duration(v)})"
                                             for k, v in per.items())))
    info = trace.consumer_info
    if len(info):
        last = info.groupby(["stream", "consumer"]).last()
        facts.append(("jetstream", ", ".join(
            f"{stream}/{name} (backlog {count(row.backlog)})" for (stream, name), row in
            last.iterrows()) + f"; {count(s['advisories'])} advisories"))
    if s["hops"]:
        facts.append(("msg traces", f"{count(s['hops'])} hops on "
                                    f"{count(trace.hops['connection'].nunique())} connections"))
    collected = meta.get("collected")
    if collected:
        facts.append(("collected", f"from {count(len(collected))} processes: " + ", ".join(
            sorted({str(v.get('client')) for v in collected.values()}))))
    return facts


def _alarms(view: Diagnosed) -> Any:
    found = view.diagnose()
    return found[found["severity"] != "info"]


def findings(view: Diagnosed) -> list[str]:
    """The lines ``evtkit info`` begins with: the verdict, then each warning and critical
    finding (a symptom says of what)."""
    lines = ["verdict", *(f"  {line}" for line in view.verdict())]
    alarms = _alarms(view)
    if len(alarms):
        lines.append("findings")
        for row in alarms.itertuples(index=False):
            symptom = f" (symptom of {row.caused_by})" if not row.root_cause else ""
            lines.append(f"  {row.finding_id} {row.severity} {row.kind}{symptom}: "
                         f"{row.evidence}")
    return lines


def describe(trace: Trace) -> str:
    """The text of ``evtkit info``: verdict, findings, then the summary."""
    return "\n".join([*findings(trace), "", *(f"{label:<13}{text}"
                                             for label, text in _facts(trace))])


def to_html(trace: Trace) -> str:
    """The notebook view of a trace: verdict, findings, summary; every text escaped."""
    return html_view(trace, _facts(trace), "evtkit Trace")


def html_view(view: Diagnosed, facts: list[tuple[str, str]], title: str) -> str:
    """A notebook view: ``title``, the verdict, the findings, then ``facts`` (label and
    text pairs); every text escaped."""
    verdict = "".join(f"<li>{html.escape(line)}</li>" for line in view.verdict())
    rows = "".join(
        f"<tr><td>{html.escape(row.finding_id)}</td><td>{html.escape(row.severity)}</td>"
        f"<td>{html.escape(row.kind)}</td><td style='text-align:left;white-space:normal'>"
        f"{html.escape(row.evidence)}</td></tr>" for row in _alarms(view).itertuples(index=False))
    table = (f"<table><tr><th>id</th><th>severity</th><th>kind</th><th>evidence</th></tr>"
             f"{rows}</table>") if rows else ""
    summary = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                      f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
                      for k, v in facts)
    return (f"<div><b>{html.escape(title)}</b><ul>{verdict}</ul>{table}"
            f"<table>{summary}</table></div>")
