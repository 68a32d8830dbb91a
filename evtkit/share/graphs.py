"""Flows and graphs, one function per chart: a flow's waterfall and causal DAG, the fan-out
Sankey and the observed dependency graph. Like :mod:`evtkit.share.plots`, each returns a
plotly figure, and every text from the traffic is escaped. Each takes a trace or a dataset
(``ek.open``: a flow's figures from that flow's rows, loaded; the graphs from the engine).

::

    ek.plot_waterfall(trace, flow)          # one flow's segments, critical path marked
    ek.plot_dag(trace, flow)                # one flow's causal DAG
    ek.plot_fanout(trace)                   # Sankey: subject → consumer → emitted subject
    ek.plot_dependencies(trace)             # observed service dependency graph
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .._units import duration
from .figure import COLORS, esc, titled

if TYPE_CHECKING:
    from ..engine import Dataset
    from ..trace import Trace

__all__ = ["plot_dag", "plot_dependencies", "plot_fanout", "plot_waterfall"]


def plot_waterfall(trace: Trace | Dataset, correlation_id: str, *, title: str | None = None
                   ) -> go.Figure:
    """One flow as a waterfall: a row per delivery with its queue and processing segments,
    the critical path outlined in red."""
    chain = trace.chain(correlation_id)
    edges = chain.edges[chain.edges["kind"].isin(["queue", "processing"])]
    nodes = chain.nodes.set_index("node_id")
    t0 = chain.nodes["time"].min()
    fig = go.Figure()
    default = f"Flow {esc(correlation_id)}: where the time went (critical path in red)"
    if edges.empty:  # e.g. a tap-only capture: events seen, nobody's handling recorded
        fig.add_annotation(text="no deliveries recorded in this flow: nothing to draw",
                           showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
        return titled(fig, title, default)
    rows = []
    for edge in edges.itertuples(index=False):
        node = nodes.loc[edge.target if edge.kind == "queue" else edge.source]
        rows.append(f"{esc(node['subject'])} → {esc(node['consumer'])}")
    order = list(dict.fromkeys(rows))
    # A delivery's queue bar ends where its processing bar starts, so the processing
    # bar's label (outside, at the row's end) also says how long it waited: a queue bar
    # too short for its own label still has its duration readable.
    waited = dict(zip(edges.loc[edges["kind"] == "queue", "target"],
                      edges.loc[edges["kind"] == "queue", "duration_s"], strict=True))
    for kind in ("queue", "processing"):
        part = edges[edges["kind"] == kind]
        labels = [r for r, k in zip(rows, edges["kind"], strict=True) if k == kind]
        start = (part["start"] - t0).dt.total_seconds() * 1e3
        seconds = part["duration_s"].astype(float)
        hot = part["on_critical_path"].to_numpy(dtype=bool)
        if kind == "queue":
            text = [duration(s) for s in seconds]
        else:
            text = [duration(s) + (f" (waited {duration(waited[d])})" if d in waited else "")
                    for s, d in zip(seconds, part["source"], strict=True)]
        fig.add_trace(go.Bar(
            y=labels, x=seconds * 1e3, base=start, orientation="h", name=kind,
            text=text, textposition="inside" if kind == "queue" else "outside",
            insidetextanchor="middle", cliponaxis=False,
            marker={"color": COLORS[kind],
                    "line": {"color": np.where(hot, COLORS["critical"], "rgba(0,0,0,0)"),
                             "width": np.where(hot, 3, 0)}},
            hovertext=[f"{lab}<br>{kind}: {duration(s)}{' (critical path)' if h else ''}"
                       for lab, s, h in zip(labels, seconds, hot, strict=True)],
            hoverinfo="text"))
    fig.update_layout(barmode="overlay", xaxis_title="milliseconds since the flow began",
                      yaxis={"title": "subject → consumer", "categoryorder": "array",
                             "categoryarray": order[::-1]},
                      uniformtext={"minsize": 9, "mode": "hide"})
    return titled(fig, title, default)


def plot_dag(trace: Trace | Dataset, correlation_id: str, *, title: str | None = None
             ) -> go.Figure:
    """One flow's causal DAG: events, deliveries and handler ends placed by time (x) and by
    subject/consumer lane (y); edges on the critical path in red, inferred ones dashed."""
    chain = trace.chain(correlation_id)
    nodes = chain.nodes.copy()
    t0 = nodes["time"].min()
    nodes["x"] = (nodes["time"] - t0).dt.total_seconds() * 1e3
    lanes = [f"{s} → {c}" if isinstance(c, str) else str(s)
             for s, c in zip(nodes["subject"], nodes["consumer"], strict=True)]
    order = list(dict.fromkeys(lanes))
    nodes["y"] = [order.index(lane) for lane in lanes]
    where = nodes.set_index("node_id")[["x", "y"]]
    fig = go.Figure()
    for hot in (False, True):
        for dashed in (False, True):
            part = chain.edges[(chain.edges["on_critical_path"] == hot)
                               & (chain.edges["inferred"] == dashed)]
            xs: list[Any] = []
            ys: list[Any] = []
            for edge in part.itertuples(index=False):
                if edge.source in where.index and edge.target in where.index:
                    a, b = where.loc[edge.source], where.loc[edge.target]
                    xs += [a["x"], b["x"], None]
                    ys += [a["y"], b["y"], None]
            if xs:
                fig.add_trace(go.Scatter(
                    x=xs, y=ys, mode="lines", hoverinfo="skip",
                    name=("critical path" if hot else "edge") + (" (inferred)" if dashed else ""),
                    line={"color": COLORS["critical"] if hot else "#b0b0b0",
                          "width": 3 if hot else 1.5, "dash": "dash" if dashed else "solid"}))
    for kind in ("event", "delivery", "handler"):
        part = nodes[nodes["kind"] == kind]
        hover = [f"{kind}: {esc(e)}<br>{esc(s)}{' → ' + esc(c) if isinstance(c, str) else ''}"
                 f"<br>+{x:.3f} ms{('<br>' + esc(o)) if isinstance(o, str) else ''}"
                 f"{('<br>' + esc(err)) if isinstance(err, str) else ''}"
                 for e, s, c, x, o, err in zip(part["event_id"], part["subject"],
                                               part["consumer"], part["x"], part["outcome"],
                                               part["error"], strict=True)]
        fig.add_trace(go.Scatter(
            x=part["x"], y=part["y"], mode="markers", name=kind, hovertext=hover,
            hoverinfo="text",
            marker={"size": 12 if kind == "event" else 9, "color": COLORS[kind],
                    "symbol": {"event": "diamond", "delivery": "circle",
                               "handler": "square"}[kind],
                    "line": {"width": np.where(part["outcome"].eq("error"), 2, 0),
                             "color": COLORS["critical"]}}))
    fig.update_layout(xaxis_title="milliseconds since the flow began",
                      yaxis={"title": "", "tickmode": "array", "tickvals": list(range(len(order))),
                             "ticktext": [esc(lane) for lane in order], "autorange": "reversed"})
    return titled(fig, title, f"Flow {esc(correlation_id)}: causal DAG")


_NODE_KINDS = {  # Sankey node kind → (legend entry, colour)
    "subject": ("subject from a producer (events)", "#f2a33a"),
    "emitted": ("subject emitted by a consumer (events)", "#f7d08a"),
    "service": ("consumer (deliveries received)", "#3b7dd8"),
    "connection": ("connection seen only by the server (deliveries)", "#9a9a9a"),
}


def plot_fanout(trace: Trace | Dataset, *, title: str | None = None) -> go.Figure:
    """Sankey of where events go: subject → consumer → subject it emits (widths: counts).

    Each node's label carries its count, ``orders.placed (559)``: events for a subject,
    deliveries received for a consumer (a connection known only from the server's message
    traces is marked ``(seen by server)`` instead); the legend names the node kinds by
    colour."""
    graph = trace.flow_graph()
    links = graph[graph["kind"].isin(["delivers", "emits"])]
    published = graph[graph["kind"] == "publishes"].groupby("target")["count"].sum()
    emitted = set(links.loc[links["kind"] == "emits", "target"])
    index: dict[tuple[str, str], int] = {}

    def node(kind: str, name: str) -> int:
        return index.setdefault((kind, name), len(index))

    source, target, value, hover = [], [], [], []
    for row in links.itertuples(index=False):
        source.append(node(row.source_kind, row.source))
        target.append(node(row.target_kind, row.target))
        value.append(int(row.count))
        latency = f"<br>p95 {duration(row.p95_s)}" if pd.notna(row.p95_s) else ""
        hover.append(f"{esc(row.source)} {row.kind} {esc(row.target)}: "
                     f"{int(row.count):,}{latency}")
    into = pd.Series(value, dtype="int64").groupby(pd.Series(target, dtype="int64")).sum()
    out = pd.Series(value, dtype="int64").groupby(pd.Series(source, dtype="int64")).sum()
    labels, colors, kinds = [], [], []
    for (kind, name), i in index.items():
        if kind == "subject":
            shown = "emitted" if name in emitted else "subject"
            # Events on the subject; a subject without a known publisher counts what it
            # passed on or received.
            n = published.get(name, into.get(i, out.get(i, 0)))
        else:
            shown = kind if kind in _NODE_KINDS else "service"
            n = into.get(i, out.get(i, 0))
        # Connections known only from server message traces do not run evtkit.
        labels.append(f"{esc(name)} (seen by server)" if kind == "connection"
                      else f"{esc(name)} ({int(n):,})")
        colors.append(_NODE_KINDS[shown][1])
        kinds.append(shown)
    fig = go.Figure(go.Sankey(
        node={"label": labels, "color": colors, "pad": 18, "thickness": 14},
        link={"source": source, "target": target, "value": value, "customdata": hover,
              "hovertemplate": "%{customdata}<extra></extra>"}))
    # The legend: one invisible point per node kind present, in the kind's colour.
    for kind in (k for k in _NODE_KINDS if k in kinds):
        legend, color = _NODE_KINDS[kind]
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=legend,
                                 marker={"size": 12, "symbol": "square", "color": color},
                                 hoverinfo="skip"))
    fig.update_layout(showlegend=True, xaxis={"visible": False}, yaxis={"visible": False},
                      legend={"title": {"text": "nodes (count)"}, "orientation": "h",
                              "y": -0.05, "yanchor": "top"})
    return titled(fig, title, "Fan-out: subject → consumer → emitted subject")


_LAG_GROUPS = {"OK": ("OK", "#2ca02c"), "WARN": ("WARN: falling behind", "#f2a33a"),
               "ERR": ("ERR / STALL / STOP: failing or stuck", "#d62728"),
               "STALL": ("ERR / STALL / STOP: failing or stuck", "#d62728"),
               "STOP": ("ERR / STALL / STOP: failing or stuck", "#d62728")}
_STATUS_ORDER = {status: i for i, status in enumerate(("OK", "WARN", "ERR", "STALL", "STOP"))}
_NEUTRAL = ("producer only (no lag)", "#9a9a9a")


def plot_dependencies(trace: Trace | Dataset, *, title: str | None = None) -> go.Figure:
    """The observed service dependency graph: an arrow from service A to service B when B
    consumed events A published, labelled with the subject, the messages delivered and
    their p95 queue time; nodes in layers from the first producers, coloured by the
    consumer's lag status (worst of its rows in ``trace.lag()``: OK green, WARN orange,
    ERR/STALL/STOP red; services that only publish grey), explained in the legend."""
    graph = trace.flow_graph()
    publishes = graph[graph["kind"].isin(["publishes", "emits"])]
    delivers = graph[graph["kind"] == "delivers"]
    pairs = publishes.merge(delivers, left_on="target", right_on="source",
                            suffixes=("_pub", "_dlv"))
    pairs = pairs[pairs["kind_pub"] == "publishes"]
    edges = pairs.groupby(["source_pub", "target_dlv", "target_pub"]).agg(
        count=("count_dlv", "sum"),
        p95_s=("p95_s_dlv", lambda v: pd.to_numeric(v, errors="coerce").max()),
    ).reset_index()
    services = sorted(set(edges["source_pub"]) | set(edges["target_dlv"]))
    layer = _layers(services, list(zip(edges["source_pub"], edges["target_dlv"], strict=True)))
    per_layer: dict[int, list[str]] = {}
    for name in services:
        per_layer.setdefault(layer[name], []).append(name)
    pos = {name: (layer[name], i - (len(group) - 1) / 2)
           for group in per_layer.values() for i, name in enumerate(group)}
    fig = go.Figure()
    top = max(edges["count"].max(), 1) if len(edges) else 1
    # Edges between the same two services (one per subject) bend apart so that their
    # arrows and labels do not sit on top of each other.
    siblings = edges.groupby(["source_pub", "target_dlv"]).cumcount().to_numpy()
    width = edges.groupby(["source_pub", "target_dlv"])["count"].transform("size").to_numpy()
    for row, k, n in zip(edges.itertuples(index=False), siblings, width, strict=True):
        (x0, y0), (x1, y1) = pos[row.source_pub], pos[row.target_dlv]
        bend = (k - (n - 1) / 2) * 0.3
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2 + bend
        p95 = f", p95 queue {duration(row.p95_s)}" if pd.notna(row.p95_s) else ""
        words = (f"{esc(row.source_pub)} → {esc(row.target_dlv)} via "
                 f"{esc(row.target_pub)}: {row.count:,} messages{p95}")
        line = {"width": 1 + 5 * row.count / top, "color": "#9bb7de"}
        fig.add_trace(go.Scatter(x=[x0, xm, x1], y=[y0, ym, y1], mode="lines", line=line,
                                 showlegend=False, hovertext=words, hoverinfo="text"))
        # The arrowhead: an arrow along the last stretch, ending at the node's edge.
        fig.add_annotation(x=x1, y=y1, ax=xm + (x1 - xm) * 0.6, ay=ym + (y1 - ym) * 0.6,
                           xref="x", yref="y", axref="x", ayref="y", text="",
                           showarrow=True, arrowhead=2, arrowsize=1.2, arrowwidth=2,
                           arrowcolor="#5b86c5", standoff=12)
        p95_label = f"<br>p95 queue {duration(row.p95_s)}" if pd.notna(row.p95_s) else ""
        fig.add_annotation(x=xm, y=ym, xref="x", yref="y", showarrow=False,
                           text=f"{esc(row.target_pub)}<br>{row.count:,} msgs{p95_label}",
                           font={"size": 10, "color": "#333"}, bgcolor="rgba(255,255,255,0.8)",
                           hovertext=words, name="edge label")
    status = _worst_status(trace)
    groups: dict[tuple[str, str], list[str]] = {}
    for name in services:
        groups.setdefault(_LAG_GROUPS.get(status.get(name, ""), _NEUTRAL), []).append(name)
    order = [*dict.fromkeys(_LAG_GROUPS.values()), _NEUTRAL]
    for legend, color in (g for g in order if g in groups):
        names = groups[legend, color]
        fig.add_trace(go.Scatter(
            x=[pos[s][0] for s in names], y=[pos[s][1] for s in names],
            mode="markers+text", name=legend,
            # Below the nodes in the lower half, where arrows come in from above.
            textposition=["bottom center" if pos[s][1] < 0 else "top center" for s in names],
            text=[esc(s) + (f" · {esc(status[s])}" if status.get(s, "OK") != "OK" else "")
                  for s in names],
            marker={"size": 20, "color": color, "line": {"width": 1, "color": "#444"}},
            hovertext=[f"{esc(s)}: lag status {status.get(s, 'none (publishes only)')}"
                       for s in names], hoverinfo="text"))
    fig.add_annotation(
        text="arrow A → B: B consumed what A published; label: subject, messages delivered, "
             "p95 queue time", showarrow=False, xref="paper", yref="paper", x=0, y=-0.12,
        xanchor="left", font={"size": 11, "color": "#555"})
    span = max(layer.values(), default=0)
    fig.update_layout(xaxis={"title": "hops from the first producer", "dtick": 1,
                             "range": [-0.5, span + 0.5], "zeroline": False},
                      yaxis={"visible": False}, showlegend=True,
                      legend={"title": {"text": "consumer lag status"}})
    fig = titled(fig, title, "Service dependencies as observed")
    fig.update_layout(margin={"b": 90})
    return fig


def _worst_status(trace: Trace | Dataset) -> dict[str, str]:
    """Each consumer's worst lag status over its rows of ``trace.lag()`` (queue groups)."""
    lag = trace.lag()
    if lag.empty:
        return {}
    rank = lag["status"].map(_STATUS_ORDER).fillna(-1)
    worst = lag.assign(rank=rank).sort_values("rank").groupby("consumer")["status"].last()
    return {str(k): str(v) for k, v in worst.items() if isinstance(v, str)}


def _layers(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Longest-path layer of each node from the sources (cycles are cut, not followed)."""
    layer = dict.fromkeys(nodes, 0)
    for _ in range(len(nodes)):
        changed = False
        for a, b in edges:
            if a != b and layer[b] < layer[a] + 1 <= len(nodes):
                layer[b] = layer[a] + 1
                changed = True
        if not changed:
            break
    return layer


