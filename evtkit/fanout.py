"""Fan-out: where does this subject go, and what does handling it produce?

::

    trace.fanout()       # per subject and type: events, consumers, fan-out, emitted types
    trace.flow_graph()   # producer → subject → consumer → emitted subject, as observed

The graph is what actually happened in the trace — not a configuration — with counts and
latency percentiles on every edge, so it doubles as the observed service dependency map.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .trace import Trace

__all__ = ["fanout", "flow_graph"]

UNKNOWN = "(unknown)"


def _children(trace: Trace) -> pd.DataFrame:
    """Every caused event with its parent event and, when known, the emitting delivery."""
    lin = trace.lineage()
    ev = trace.events
    parent = lin["_parent"].to_numpy()
    has = parent >= 0
    dv = trace.deliveries.set_index("seq")
    seq = lin["parent_seq"]
    rows = pd.DataFrame({
        "child_subject": ev["subject"].to_numpy()[has],
        "child_type": ev["type"].to_numpy()[has],
        "child_published_at": ev["published_at"].to_numpy()[has],
        "parent_subject": ev["subject"].to_numpy()[parent[has]],
        "parent_type": ev["type"].to_numpy()[parent[has]],
        "seq": seq.to_numpy()[has],
    })
    known = rows["seq"].notna() & rows["seq"].isin(dv.index)
    at = dv.reindex(rows["seq"].where(known).astype("float64"))
    rows["consumer"] = at["consumer"].to_numpy()
    rows["handler_started"] = at["started_at"].fillna(at["received_at"]).to_numpy()
    return rows


def fanout(trace: Trace) -> pd.DataFrame:
    """One row per subject and type: ``subject, type, events, deliveries, consumers,
    consumer_names, mean_fanout, emitted_types``.

    ``mean_fanout`` is deliveries per event; ``emitted_types`` lists the types of events
    published as a consequence of handling these (explicit or inferred causes).
    """
    ev = trace.events
    dv = trace.deliveries
    keys = ["subject", "type"]
    if ev.empty:
        return pd.DataFrame(columns=_FANOUT_COLUMNS)
    ev = ev.assign(type=ev["type"].fillna(UNKNOWN), subject=ev["subject"].fillna(UNKNOWN))
    counts = ev.groupby(keys).size().rename("events")
    where = pd.Index(trace.events["event_id"]).get_indexer(dv["event_id"])
    dv = pd.DataFrame({"subject": ev["subject"].to_numpy()[where],
                       "type": ev["type"].to_numpy()[where],
                       "consumer": dv["consumer"].to_numpy()})
    per = dv.groupby(keys)
    names = per["consumer"].agg(lambda c: ", ".join(sorted(set(c)))).rename("consumer_names")
    children = _children(trace)
    children = children.assign(parent_type=children["parent_type"].fillna(UNKNOWN),
                               parent_subject=children["parent_subject"].fillna(UNKNOWN),
                               child_type=children["child_type"].fillna(UNKNOWN))
    emitted = children.groupby(["parent_subject", "parent_type"])["child_type"].agg(
        lambda t: ", ".join(sorted(set(t)))).rename("emitted_types")
    emitted.index.names = keys
    frame = pd.concat([counts, per.size().rename("deliveries"),
                       per["consumer"].nunique().rename("consumers"), names, emitted],
                      axis=1).reset_index()
    frame = frame[frame["events"].notna()]
    frame["deliveries"] = frame["deliveries"].fillna(0).astype(np.int64)
    frame["consumers"] = frame["consumers"].fillna(0).astype(np.int64)
    frame["events"] = frame["events"].astype(np.int64)
    frame["mean_fanout"] = frame["deliveries"] / frame["events"]
    for column in ("consumer_names", "emitted_types"):
        frame[column] = frame[column].fillna("")
    frame = frame.sort_values(["events", "subject"], ascending=[False, True])
    return frame[_FANOUT_COLUMNS].astype({"subject": "str", "type": "str",
                                          "consumer_names": "str", "emitted_types": "str"}
                                         ).reset_index(drop=True)


_FANOUT_COLUMNS = ["subject", "type", "events", "deliveries", "consumers", "consumer_names",
                   "mean_fanout", "emitted_types"]


def flow_graph(trace: Trace) -> pd.DataFrame:
    """Edges of the observed dependency graph: ``source, source_kind, target, target_kind,
    kind, count, p50_s, p95_s, errors``.

    Three kinds of edge: ``publishes`` (service → subject; the service is the events'
    CloudEvents source, else the publishing connection), ``delivers`` (subject → consumer;
    latency is queue time, publish → handler start) and ``emits`` (consumer → subject of
    the events its handler published; latency is handler start → publish).
    """
    ev = trace.events
    if ev.empty:
        return pd.DataFrame(columns=_GRAPH_COLUMNS)
    service = ev["source"].fillna(ev["producer"]).fillna(UNKNOWN)
    publishes = pd.DataFrame({"source": service.to_numpy(),
                              "target": ev["subject"].fillna(UNKNOWN).to_numpy()})
    publishes = publishes.groupby(["source", "target"]).size().rename("count").reset_index()
    publishes = publishes.assign(kind="publishes", source_kind="service",
                                 target_kind="subject", p50_s=np.nan, p95_s=np.nan, errors=0)

    dv = trace.deliveries
    delivers = dv.assign(subject=dv["subject"].fillna(UNKNOWN)).groupby(
        ["subject", "consumer"])
    delivers = pd.concat([
        delivers.size().rename("count"),
        delivers["queue_s"].quantile(0.5).rename("p50_s"),
        delivers["queue_s"].quantile(0.95).rename("p95_s"),
        delivers["outcome"].agg(lambda o: int((o == "error").sum())).rename("errors"),
    ], axis=1).reset_index().rename(columns={"subject": "source", "consumer": "target"})
    delivers = delivers.assign(kind="delivers", source_kind="subject", target_kind="service")

    children = _children(trace)
    children = children[children["consumer"].notna()]
    children = children.assign(
        lead_s=(pd.to_datetime(children["child_published_at"], utc=True)
                - pd.to_datetime(children["handler_started"], utc=True)).dt.total_seconds())
    emits = children.groupby(["consumer", "child_subject"])
    emits = pd.concat([
        emits.size().rename("count"),
        emits["lead_s"].quantile(0.5).rename("p50_s"),
        emits["lead_s"].quantile(0.95).rename("p95_s"),
    ], axis=1).reset_index().rename(columns={"consumer": "source", "child_subject": "target"})
    emits = emits.assign(kind="emits", source_kind="service", target_kind="subject", errors=0)

    frame = pd.concat([publishes, delivers, emits], ignore_index=True)
    frame["count"] = frame["count"].astype(np.int64)
    frame["errors"] = frame["errors"].astype(np.int64)
    for column in ("source", "source_kind", "target", "target_kind", "kind"):
        frame[column] = frame[column].astype("str")
    return frame[_GRAPH_COLUMNS]


_GRAPH_COLUMNS = ["source", "source_kind", "target", "target_kind", "kind", "count", "p50_s",
                  "p95_s", "errors"]
