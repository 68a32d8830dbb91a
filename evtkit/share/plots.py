"""Plots, one function per chart, in the style of plotly express.

Every function takes a :class:`~evtkit.trace.Trace` (or the result it draws) and returns a
``plotly.graph_objects.Figure``; none calls ``.show()``. Those of one trace also take a
:class:`~evtkit.engine.Dataset` (``ek.open(path)``): the same figure, from the engine's
answers (the latency plot from a sample of the deliveries). Text shown in hovers and labels
(subjects, consumer names, ids, error messages) is HTML-escaped, since it comes from the
traffic.

::

    ek.plot_latency(trace)                  # queue vs processing time per consumer
    ek.plot_backlog(trace)                  # lag over time, findings' windows shaded
    ek.plot_jetstream(trace)                # JetStream consumers' server counters
    ek.plot_compare(ek.compare(base, other))

Flows and graphs (waterfall, DAG, fan-out, dependencies) are in :mod:`evtkit.share.graphs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .._units import duration, number, ratio
from ..schema import fill
from .figure import COLORS, esc, missing, palette, titled

if TYPE_CHECKING:
    from ..analysis.compare import Comparison
    from ..engine import Dataset
    from ..trace import Trace

__all__ = ["plot_backlog", "plot_compare", "plot_jetstream", "plot_latency"]

SAMPLE = 20_000
"""Deliveries :func:`plot_latency` draws of a :class:`~evtkit.engine.Dataset`."""


def plot_latency(trace: Trace | Dataset | pd.DataFrame, *, kind: str = "box",
                 log: bool | None = None, sample: int = SAMPLE, title: str | None = None
                 ) -> go.Figure:
    """Queue time (publish → handler start) and processing time per consumer.

    Args:
        trace: a trace, or a deliveries frame (e.g. a sample of ``trace.deliveries``), or a
            dataset (``ek.open``).
        kind: ``box`` (one box per consumer and measure) or ``ecdf`` (cumulative curves).
        log: logarithmic time axis; by default when all times are positive and they span
            more than two orders of magnitude (one slow consumer hides the rest otherwise).
        sample: of a dataset, how many deliveries to draw (at random, see
            :meth:`Dataset.deliveries <evtkit.engine.Dataset.deliveries>`); a trace or a
            frame is drawn whole.
    """
    if isinstance(trace, pd.DataFrame):
        dv = trace
    else:
        rows = trace.deliveries  # a Dataset's is a method: its deliveries stay on disk
        dv = rows(sample=sample) if callable(rows) else rows
    times = pd.concat([dv["queue_s"], dv["processing_s"]]).dropna()
    if log is None:
        log = bool(len(times)) and times.min() > 0 and times.max() / times.min() > 100
    fig = go.Figure()
    for measure in ("queue", "processing"):
        values = dv[f"{measure}_s"] * 1e3
        names = dv["consumer"].map(esc).astype("str")  # (a categorical maps per category)
        hover = ("event " + dv["event_id"].map(esc).astype("str") + "<br>" + names + ": "
                 + values.round(3).astype(str) + " ms")
        if kind == "box":
            fig.add_trace(go.Box(x=names, y=values, name=measure, hovertext=hover,
                                 marker_color=COLORS[measure], boxpoints="outliers"))
        elif kind == "ecdf":
            for consumer, part in values.groupby(names, sort=True):
                ordered = np.sort(part.dropna().to_numpy())
                share = np.arange(1, len(ordered) + 1) / max(len(ordered), 1)
                fig.add_trace(go.Scatter(
                    x=ordered, y=share, mode="lines", name=f"{consumer} {measure}",
                    line={"dash": "solid" if measure == "queue" else "dot"},
                    hovertemplate=f"{consumer} {measure}: %{{x:.3f}} ms<br>%{{y:.1%}}"
                                  "<extra></extra>"))
        else:
            raise ValueError(f"kind must be 'box' or 'ecdf', not {kind!r}")
    axis = {"type": "log"} if log else {}
    if kind == "box":
        fig.update_layout(boxmode="group", xaxis_title="consumer",
                          yaxis={"title": "milliseconds", **axis})
    else:
        fig.update_layout(xaxis={"title": "milliseconds", **axis},
                          yaxis_title="share of deliveries")
    return titled(fig, title, "Latency per consumer: waiting (queue) vs working (processing)")


_SEVERITY_FILL = {"critical": "rgba(214, 39, 40, 0.15)", "warning": "rgba(242, 163, 58, 0.18)"}
_SEVERITY_TEXT = {"critical": "#a31d1d", "warning": "#9a5a00"}


def plot_backlog(trace: Trace | Dataset, freq: str | pd.Timedelta | None = None, *,
                 findings: pd.DataFrame | None = None, title: str | None = None
                 ) -> go.Figure:
    """Lag over time per consumer: messages waiting (top) and the oldest one's age (bottom),
    with the window of each warning or critical finding shaded across both (red: critical,
    orange: warning) and labelled ``kind consumer``.

    Args:
        trace: the trace, or a dataset (``ek.open``).
        freq: the time step (see :meth:`~evtkit.trace.Trace.backlog`).
        findings: a frame with at least ``consumer``, ``start``, ``end``, ``severity``
            (``critical``/``warning``/``info``; info is not marked) and ``kind``. By default
            ``trace.diagnose()``, where the trace has it; an empty frame marks nothing.
    """
    data = trace.backlog(freq)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("messages waiting", "age of the oldest (s)"))
    for i, (consumer, part) in enumerate(data.groupby("consumer", sort=True)):
        # The server's JetStream count, where sampled, is marked in the legend.
        name = esc(consumer) + (" (JetStream)" if part["from_server"].any() else "")
        color = palette(i)
        fig.add_trace(go.Scatter(x=part["time"], y=part["backlog"], name=name,
                                 legendgroup=name, line={"color": color},
                                 hovertemplate=f"{name}: %{{y}} waiting<extra></extra>"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=part["time"], y=part["oldest_s"], name=name,
                                 legendgroup=name, showlegend=False, line={"color": color},
                                 hovertemplate=f"{name}: oldest %{{y:.3f}} s<extra></extra>"),
                      row=2, col=1)
    if findings is None:
        diagnose = getattr(trace, "diagnose", None)
        findings = diagnose() if callable(diagnose) else None
    marked = 0
    if findings is not None and len(data):
        marked = _mark_findings(fig, pd.DataFrame(findings), data["time"].max())
    fig.update_yaxes(title_text="messages", row=1, col=1)
    fig.update_yaxes(title_text="seconds", row=2, col=1)
    fig.update_xaxes(title_text="time", row=2, col=1)
    fig = titled(fig, title, "Consumer lag over time")
    if marked:
        fig.add_annotation(text="shaded: findings' windows, red critical, orange warning",
                           showarrow=False, xref="paper", yref="paper", x=0, y=-0.1,
                           xanchor="left", yanchor="top", font={"size": 11, "color": "#555"})
        fig.update_layout(margin={"b": 80})
    return fig


def _mark_findings(fig: go.Figure, findings: pd.DataFrame, last: pd.Timestamp) -> int:
    """One shaded window per warning/critical finding, spanning both panels, labelled at
    the top of the upper one (labels of overlapping windows step down); how many."""
    marked = findings[findings["severity"].isin(list(_SEVERITY_FILL))]
    marked = marked[marked["start"].notna()].sort_values("start", kind="stable")
    for i, row in enumerate(marked.itertuples(index=False)):
        # Microseconds, as plotly serialises dates (it warns about dropping nanoseconds).
        start = pd.Timestamp(row.start).floor("us")
        end = pd.Timestamp(row.end if pd.notna(row.end) else last).floor("us")  # else ongoing
        # Who: the consumer, else (e.g. a producer burst) the service or the subject.
        who = next((v for v in (getattr(row, c, None) for c in ("consumer", "service",
                                                                 "subject"))
                    if not missing(v)), None)
        label = " ".join(esc(v) for v in (row.kind, who) if not missing(v))
        fig.add_shape(type="rect", xref="x", yref="paper", x0=start, x1=end, y0=0, y1=1,
                      fillcolor=_SEVERITY_FILL[row.severity], line={"width": 0},
                      layer="below", name=f"{row.severity}: {label}")
        fig.add_annotation(x=start, xref="x", y=1 - 0.05 * (i % 4), yref="y domain",
                           text=label, showarrow=False, xanchor="left", yanchor="top",
                           font={"size": 10, "color": _SEVERITY_TEXT[row.severity]},
                           bgcolor="rgba(255,255,255,0.7)")
    return len(marked)


def plot_jetstream(trace: Trace, *, title: str | None = None) -> go.Figure:
    """JetStream consumers as the server counts them (``bus.watch_jetstream`` samples):
    messages not yet sent (pending), sent but not acknowledged (ack pending) and
    redelivered, per stream/consumer over time; advisories (max deliveries reached,
    terminated, nak) are marked on the top panel."""
    info = trace.consumer_info
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=("pending (not yet sent)", "ack pending (sent, not acked)",
                                        "redelivered"))
    groups = info.groupby([fill(info["stream"], "?"), fill(info["consumer"], "?")], sort=True)
    for i, ((stream, consumer), part) in enumerate(groups):
        name = esc(f"{stream}/{consumer}")
        for row, column in enumerate(("pending", "ack_pending", "redelivered"), start=1):
            fig.add_trace(go.Scatter(
                x=part["ts"], y=part[column], name=name, legendgroup=name,
                showlegend=row == 1, line={"color": palette(i), "shape": "hv"},
                hovertemplate=f"{name}: %{{y}} {column.replace('_', ' ')}<extra></extra>"),
                row=row, col=1)
    advisories = trace.advisories
    shown = advisories[advisories["advisory"].isin(_MARKED_ADVISORIES).to_numpy()]
    for advisory, part in shown.groupby("advisory", sort=True):
        text = [esc(f"{advisory}: {c} seq {q}") for c, q in
                zip(part["consumer"], part["stream_seq"], strict=True)]
        fig.add_trace(go.Scatter(
            x=part["ts"], y=np.zeros(len(part)), mode="markers", name=esc(advisory),
            marker={"symbol": _MARKED_ADVISORIES[advisory], "size": 9, "color": "#d62728"},
            text=text, hovertemplate="%{text}<extra></extra>"), row=1, col=1)
    fig.update_yaxes(title_text="messages", rangemode="tozero")
    fig.update_xaxes(title_text="time", row=3, col=1)
    return titled(fig, title, "JetStream consumers (server counters)")


_MARKED_ADVISORIES = {"MAX_DELIVERIES": "x", "MSG_TERMINATED": "square", "MSG_NAKED":
                      "triangle-up"}


def plot_compare(comparison: Comparison, *, measure: str = "queue_p95_s",
                 log: bool | None = None, title: str | None = None) -> go.Figure:
    """Per consumer, ``measure`` in the base run and the other run side by side, each bar
    labelled with its value in human units (the other run's also with its ratio to the
    base and its lag status when that changed).

    Args:
        comparison: from :func:`evtkit.compare`.
        measure: a column of ``comparison.consumers`` without its ``_base``/``_other``
            suffix: a duration (``queue_p95_s``, ``processing_p50_s`` …) or a count
            (``deliveries``, ``errors``, ``dropped``).
        log: logarithmic value axis; by default when all values are positive and span more
            than 20× (a 5 ms baseline beside a 1.83 s incident is invisible otherwise).
    """
    c = comparison.consumers.sort_values("consumer")
    names = c["consumer"].map(esc)
    seconds = measure.endswith("_s")
    show = duration if seconds else number
    base, other = c[f"{measure}_base"].astype(float), c[f"{measure}_other"].astype(float)
    present = pd.concat([base, other]).dropna()
    if log is None:
        log = bool(len(present)) and present.min() > 0 and present.max() / present.min() > 20
    times = np.where(other.notna() & base.notna() & (base > 0), other / base.where(base > 0),
                     np.nan)
    fig = go.Figure()
    for run, values in (("base", base), ("other", other)):
        status = c[f"status_{run}"]
        labels = []
        for v, s, b, r in zip(values, status, c["status_base"], times, strict=True):
            text = show(v) if pd.notna(v) else "absent"
            if run == "other" and np.isfinite(r):
                text += f"<br>{ratio(r)} base"
            if run == "other" and s != b:
                text += f"<br>{esc(s)}"
            labels.append(text)
        fig.add_trace(go.Bar(
            x=names, y=values * 1e3 if seconds else values, name=run,
            marker_color=COLORS[run], text=labels, textposition="outside",
            cliponaxis=False,
            hovertext=[f"{n} ({run}): {show(v)}, {esc(s)}" for n, v, s in
                       zip(names, values, status, strict=True)], hoverinfo="text"))
    notes = ", ".join(n for n in ("ms" if seconds else "", "log scale" if log else "") if n)
    label = measure.removesuffix("_s").replace("_", " ") + (f" ({notes})" if notes else "")
    fig.update_layout(barmode="group", xaxis_title="consumer",
                      yaxis={"title": label, "type": "log" if log else None,
                             "exponentformat": "none", "separatethousands": True},
                      uniformtext={"minsize": 9, "mode": "show"})
    return titled(fig, title, "Baseline vs other run")
