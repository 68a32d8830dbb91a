"""Declared vs observed, one function per chart: traffic held against its event definitions
(an AsyncAPI document, :func:`evtkit.asyncapi.load`). Like the other plots, each returns a
plotly figure and escapes every text from the traffic.

::

    spec = ek.asyncapi.load("api.yaml")
    ek.plot_contract(trace, spec)          # who sends and receives what: declared vs seen
    ek.plot_conformance(trace, spec)       # valid / invalid / undeclared events over time

Both also take the result of ``trace.conformance(spec)`` instead of the trace (no spec
then), which saves checking the events twice.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .._units import count, duration
from ..analysis.lag import nice_width
from .figure import esc, titled
from .graphs import _layers

if TYPE_CHECKING:
    from ..analysis.conformance import Conformance
    from ..asyncapi.spec import Spec
    from ..trace import Trace

__all__ = ["EDGE_STATUS", "plot_conformance", "plot_contract"]

EDGE_STATUS = {
    "seen": ("declared and seen", "#2ca02c", "solid"),
    "declared": ("declared only (not seen)", "#9a9a9a", "dash"),
    "undeclared": ("seen only (undeclared)", "#d62728", "solid"),
}
"""Edge status → (legend entry, colour, line dash) in :func:`plot_contract`."""
_NODES = {  # node kind → (legend entry, colour, symbol)
    "application": ("application (sends / receives)", "#3b7dd8", "circle"),
    "channel": ("declared channel", "#f2a33a", "square"),
    "subject": ("undeclared subject", "#d62728", "square"),
}
_MOST_SUBJECTS = 12
"""Undeclared subjects drawn at most (the busiest); the rest are counted in a note."""

SpecLike = Any  # a Spec, or what ek.asyncapi.load reads (path, URL, dict)


def _result(trace: Trace | Conformance, spec: SpecLike | None) -> Conformance:
    """``trace`` checked against ``spec`` (or the trace's own :attr:`~Trace.spec`), or the
    given result as it is."""
    from ..analysis.conformance import Conformance

    if isinstance(trace, Conformance):
        return trace
    spec = spec if spec is not None else getattr(trace, "spec", None)
    if spec is None:
        raise ValueError("give the event definitions: plot(trace, spec), spec an AsyncAPI "
                         "document (path, URL, dict or ek.asyncapi.load(...))")
    if isinstance(spec, str | os.PathLike | dict):
        from ..asyncapi import load

        spec = load(spec)
    return trace.conformance(spec)


def _channel_nodes(spec: Spec, subjects: pd.Series) -> pd.Series:
    """Per subject, its node: ``channel:<id>`` when a channel matches, else
    ``subject:<subject>``."""
    names = subjects.astype("category")
    ids = [c.id for c in spec.channels.values()]
    found = spec.match_all([str(s) for s in names.cat.categories])
    per_category = np.array([f"channel:{ids[k]}" if k >= 0 else f"subject:{s}"
                             for k, s in zip(found.tolist(), names.cat.categories,
                                             strict=True)] + [None], dtype=object)
    return pd.Series(per_category[names.cat.codes.to_numpy()], index=subjects.index)


def contract_edges(result: Conformance) -> pd.DataFrame:
    """The edges :func:`plot_contract` draws, one row each: ``source``, ``target`` (node
    keys ``app:<name>``, ``channel:<id>``, ``subject:<subject>``), ``action`` (send or
    receive), ``status`` (:data:`EDGE_STATUS`: seen, declared, undeclared) and ``count``
    (events sent, or deliveries received; 0 when not seen). Application names are
    compared without regard to case and shown as the document spells them."""
    spec, trace = result.spec, result.trace
    spelled: dict[str, str] = {}
    declared: dict[tuple[str, str, str], int] = {}
    for op in spec.operations.values():
        app = spelled.setdefault(op.application.casefold(), op.application)
        channel = f"channel:{op.channel}"
        key = (f"app:{app}", channel, "send") if op.action == "send" else \
            (channel, f"app:{app}", "receive")
        declared[key] = 0
    seen: dict[tuple[str, str, str], int] = {}
    ev = trace.events
    if len(ev):
        sender = ev["source"].astype(object).where(ev["source"].notna(),
                                                   ev["producer"].astype(object))
        nodes = _channel_nodes(spec, ev["subject"])
        sent = pd.DataFrame({"node": nodes, "who": sender}).dropna()
        for (node, who), n in sent.groupby(["node", "who"], sort=True).size().items():
            app = spelled.get(str(who).casefold(), str(who))
            seen[(f"app:{app}", str(node), "send")] = int(n)
    dv = trace.deliveries
    if len(dv):
        got = pd.DataFrame({"node": _channel_nodes(spec, dv["subject"]),
                            "who": dv["consumer"].astype(object)}).dropna()
        for (node, who), n in got.groupby(["node", "who"], sort=True).size().items():
            app = spelled.get(str(who).casefold(), str(who))
            seen[(str(node), f"app:{app}", "receive")] = int(n)
    rows = [(*key, "seen" if key in seen else "declared", seen.get(key, 0))
            for key in declared]
    rows += [(*key, "undeclared", n) for key, n in seen.items() if key not in declared]
    return pd.DataFrame(rows, columns=["source", "target", "action", "status", "count"])


def plot_contract(trace: Trace | Conformance, spec: SpecLike | None = None, *,
                  title: str | None = None) -> go.Figure:
    """Declared vs observed: applications (circles) and channels (squares; subjects no
    channel declares in red), an arrow for each send (application → channel) and receive
    (channel → application), coloured by status: declared and seen (green, labelled with
    the events sent or deliveries received), declared only (grey, dashed), seen only —
    undeclared (red). Nodes are laid out in layers from the first producers, as in
    :func:`~evtkit.share.graphs.plot_dependencies`; the legend explains the colours.

    Args:
        trace: the trace (with ``spec``, or with one attached: ``trace.with_spec``), or
            the result of ``trace.conformance(spec)``.
        spec: the event definitions: a :class:`~evtkit.asyncapi.Spec`, or a path, URL or
            dict :func:`evtkit.asyncapi.load` reads.

    Raises:
        ValueError: no spec given and none attached to the trace.
    """
    result = _result(trace, spec)
    edges = contract_edges(result)
    stray = edges[edges["source"].str.startswith("subject:")
                  | edges["target"].str.startswith("subject:")]
    stray_nodes = pd.concat([stray["source"], stray["target"]])
    stray_nodes = stray_nodes[stray_nodes.str.startswith("subject:")]
    per_subject = edges.assign(node=np.where(edges["source"].str.startswith("subject:"),
                                             edges["source"], edges["target"]))
    busiest = (per_subject[per_subject["node"].isin(set(stray_nodes))]
               .groupby("node")["count"].sum().sort_values(ascending=False, kind="stable"))
    left_out = set(busiest.index[_MOST_SUBJECTS:])
    edges = edges[~edges["source"].isin(left_out) & ~edges["target"].isin(left_out)]
    edges = edges.reset_index(drop=True)

    channels = [f"channel:{c}" for c in result.spec.channels]
    nodes = list(dict.fromkeys([*channels, *edges["source"], *edges["target"]]))
    layer = _layers(nodes, list(zip(edges["source"], edges["target"], strict=True)))
    per_layer: dict[int, list[str]] = {}
    for node in nodes:
        per_layer.setdefault(layer[node], []).append(node)
    pos = {node: (layer[node], i - (len(group) - 1) / 2)
           for group in per_layer.values() for i, node in enumerate(group)}

    fig = go.Figure()
    shown: set[str] = set()
    for row in edges.itertuples(index=False):
        legend, color, dash = EDGE_STATUS[row.status]
        (x0, y0), (x1, y1) = pos[row.source], pos[row.target]
        what = "events sent" if row.action == "send" else "deliveries received"
        amount = f"{count(row.count)} {what}" if row.count else "not seen"
        words = (f"{esc(_label(row.source, result.spec))} → "
                 f"{esc(_label(row.target, result.spec))}: {legend}, {amount}")
        fig.add_trace(go.Scatter(
            x=[x0, x1], y=[y0, y1], mode="lines", name=legend, legendgroup=row.status,
            showlegend=row.status not in shown, hovertext=words, hoverinfo="text",
            line={"color": color, "dash": dash, "width": 2.5 if row.status != "declared"
                  else 1.5},
            meta={"source": row.source, "target": row.target, "status": row.status,
                  "count": int(row.count)}))
        shown.add(row.status)
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        fig.add_annotation(x=x1, y=y1, ax=xm, ay=ym, xref="x", yref="y", axref="x",
                           ayref="y", text="", showarrow=True, arrowhead=2, arrowsize=1.2,
                           arrowwidth=1.5, arrowcolor=color, standoff=12)
        fig.add_annotation(x=xm, y=ym, xref="x", yref="y", showarrow=False,
                           text=count(row.count) if row.count else "not seen",
                           font={"size": 10, "color": color},
                           bgcolor="rgba(255,255,255,0.85)", hovertext=words)
    for kind, (legend, color, symbol) in _NODES.items():
        names = [n for n in nodes if _kind(n) == kind]
        if not names:
            continue
        fig.add_trace(go.Scatter(
            x=[pos[n][0] for n in names], y=[pos[n][1] for n in names],
            mode="markers+text", name=legend, text=[esc(_label(n, result.spec)) for n in names],
            textposition=["bottom center" if pos[n][1] < 0 else "top center"
                          for n in names],
            marker={"size": 18, "color": color, "symbol": symbol,
                    "line": {"width": 1, "color": "#444"}},
            hovertext=[esc(_hover(n, result.spec)) for n in names], hoverinfo="text"))
    note = ("arrow: application → channel it sends on, channel → application receiving "
            "from it; label: events sent / deliveries received")
    if left_out:
        note += f"; {count(len(left_out))} more undeclared subjects not drawn"
    fig.add_annotation(text=note, showarrow=False, xref="paper", yref="paper", x=0, y=-0.2,
                       xanchor="left", font={"size": 11, "color": "#555"})
    span = max(layer.values(), default=0)
    fig.update_layout(xaxis={"title": "hops from the first producer", "dtick": 1,
                             "range": [-0.5, span + 0.5], "zeroline": False},
                      yaxis={"visible": False}, showlegend=True,
                      legend={"title": {"text": "declared vs observed"}},
                      height=max(450, 90 * max((len(g) for g in per_layer.values()),
                                               default=1)))
    fig = titled(fig, title, f"{esc(result.spec.title)}: declared vs observed")
    fig.update_layout(margin={"b": 100})
    return fig


def _kind(node: str) -> str:
    prefix = node.partition(":")[0]
    return {"app": "application", "channel": "channel", "subject": "subject"}[prefix]


def _label(node: str, spec: Spec) -> str:
    """What a node is called on the plot: an application's name, a channel's address
    (its id when it has none), an undeclared subject."""
    kind, _, name = node.partition(":")
    channel = spec.channels.get(name) if kind == "channel" else None
    return (channel.address or name) if channel is not None else name


def _hover(node: str, spec: Spec) -> str:
    kind, _, name = node.partition(":")
    if kind == "channel":
        channel = spec.channels.get(name)
        address = channel.address if channel is not None else None
        return f"channel {name}" + (f" ({address})" if address else "")
    if kind == "subject":
        return f"{name}: no channel of the document matches this subject"
    return f"application {name}"


_VERDICT = {"valid": ("valid", "#2ca02c"), "invalid": ("invalid (breaks its schema)",
                                                       "#d62728"),
            "undeclared": ("undeclared subject", "#9467bd")}
def plot_conformance(trace: Trace | Conformance, spec: SpecLike | None = None,
                     freq: str | pd.Timedelta | None = None, *, title: str | None = None
                     ) -> go.Figure:
    """Conformance over time: per message type (one panel each, labelled with how many of
    its events broke its schema), the events in each time step, stacked: valid (green)
    and invalid (red); events on subjects no channel declares in a last panel of their
    own, per subject.

    Args:
        trace: the trace, or the result of ``trace.conformance(spec)``.
        spec: the event definitions (as for :func:`plot_contract`).
        freq: the time step (default: a round step giving at most 40 steps).

    Raises:
        ValueError: no spec given and none attached to the trace.
    """
    result = _result(trace, spec)
    ev = result.events
    valid = ev["valid"]
    verdict = np.where(valid.isna().to_numpy(), "undeclared",
                       np.where(valid.fillna(False).to_numpy(dtype=bool), "valid", "invalid"))
    message = ev["message"].astype(object)
    subjects = ev["subject"].astype(object)
    panel = np.where(verdict == "undeclared", "undeclared: " + subjects.fillna("?"),
                     message.fillna("(no message)"))
    frame = pd.DataFrame({"time": ev["published_at"], "panel": panel, "verdict": verdict})
    frame = frame[frame["time"].notna()]
    if frame.empty:
        fig = go.Figure()
        fig.add_annotation(text="no events with a time: nothing to draw", showarrow=False,
                           x=0.5, y=0.5, xref="paper", yref="paper")
        return titled(fig, title, "Conformance over time")
    step = pd.Timedelta(freq) if freq is not None else nice_width(
        (frame["time"].max() - frame["time"].min()).total_seconds(), 40)
    frame["bin"] = frame["time"].dt.floor(step)
    where = {m.name: m.channel for m in result.spec.messages}
    channels = result.spec.channels
    declared = sorted(p for p in frame["panel"].unique() if not p.startswith("undeclared: "))
    stray = sorted(p for p in frame["panel"].unique() if p.startswith("undeclared: "))
    titles = []
    for p in declared:
        part = frame[frame["panel"] == p]
        bad = int((part["verdict"] == "invalid").sum())
        channel = channels.get(where.get(p, ""))
        address = f" on {channel.address}" if channel is not None and channel.address else ""
        titles.append(f"{esc(p)}{esc(address)}: {count(bad)} of {count(len(part))} invalid")
    if stray:
        n = int((frame["verdict"] == "undeclared").sum())
        titles.append(f"undeclared subjects: {count(n)} event{'' if n == 1 else 's'}")
    rows = len(titles)
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=min(
        0.08, 0.3 / max(rows - 1, 1)), subplot_titles=titles)
    bins = pd.date_range(frame["bin"].min(), frame["bin"].max(), freq=step)
    x = (bins + step / 2).floor("us")  # bars in the middle of their step (µs: plotly's)
    legend: set[str] = set()

    def bars(row: int, part: pd.DataFrame, kind: str, name: str, color: str) -> None:
        counts = part.groupby("bin").size().reindex(bins, fill_value=0)
        fig.add_trace(go.Bar(
            x=x, y=counts.to_numpy(), name=name, legendgroup=kind,
            showlegend=name not in legend, marker_color=color, width=step.total_seconds()
            * 1e3 * 0.9, hovertemplate=f"{name}: %{{y:,}} events<extra></extra>",
            meta={"panel": titles[row - 1], "verdict": kind}), row=row, col=1)
        legend.add(name)

    for row, p in enumerate(declared, start=1):
        part = frame[frame["panel"] == p]
        for kind in ("valid", "invalid"):
            bars(row, part[part["verdict"] == kind], kind, *_VERDICT[kind])
    if stray:
        shades = ["#9467bd", "#c5b0d5", "#7b4ea8", "#b8a0cf", "#5e3c8a", "#d7c8e6"]
        for i, p in enumerate(stray):
            part = frame[frame["panel"] == p]
            subject = p.removeprefix("undeclared: ")
            bars(rows, part, "undeclared", f"undeclared: {esc(subject)}",
                 shades[i % len(shades)])
    fig.update_layout(barmode="stack", bargap=0.05, height=max(350, 150 * rows + 100),
                      legend={"title": {"text": "events"}})
    for row in range(1, rows + 1):
        fig.update_yaxes(title_text=f"events per {duration(step.total_seconds())}", row=row,
                         col=1, rangemode="tozero")
    fig.update_xaxes(title_text="time", row=rows, col=1)
    return titled(fig, title, f"Conformance to {esc(result.spec.title)} over time")
