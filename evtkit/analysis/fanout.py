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

from ..schema import fill, positions
from .causal import spans

if TYPE_CHECKING:
    from ..trace import Trace

__all__ = ["fanout", "flow_graph"]

UNKNOWN = "(unknown)"


def _children(trace: Trace) -> pd.DataFrame:
    """Every caused event: its position, its parent's position and, when known, the
    emitting delivery's position in ``trace.deliveries`` (-1 if none)."""
    lin = trace.lineage()
    parent = lin["cause_row"].to_numpy()
    child = np.flatnonzero(parent >= 0)
    dv_seq = trace.deliveries["seq"].to_numpy(dtype=np.int64)
    seq = lin["parent_seq"].to_numpy(dtype="float64", na_value=np.nan)[child]
    order = np.argsort(dv_seq, kind="stable")
    pos = np.searchsorted(dv_seq[order], seq)
    pos = np.minimum(pos, max(len(dv_seq) - 1, 0))
    found = (len(dv_seq) > 0) & (dv_seq[order][pos] == seq) if len(dv_seq) else np.zeros(
        len(child), bool)
    delivery = np.where(found, order[pos] if len(dv_seq) else -1, -1)
    return pd.DataFrame({"child": child, "parent": parent[child], "delivery": delivery})


def _names(groups: np.ndarray, members: np.ndarray, labels: np.ndarray, n: int) -> list[str]:
    """For each group 0..n-1, the sorted, comma-joined distinct labels of its members."""
    out: list[list[str]] = [[] for _ in range(n)]
    if len(groups):
        width = len(labels) + 1
        for pair in pd.unique(groups.astype(np.int64) * width + members).tolist():
            out[pair // width].append(str(labels[pair % width]))
    return [", ".join(sorted(names)) for names in out]


def fanout(trace: Trace) -> pd.DataFrame:
    """One row per subject and type: ``subject, type, events, deliveries, consumers,
    consumer_names, mean_fanout, emitted_types, server_seen``.

    ``mean_fanout`` is deliveries per event; ``emitted_types`` lists the types of events
    published as a consequence of handling these (explicit or inferred causes);
    ``server_seen`` names connections that received the subject according to server
    message traces but do not run evtkit (see :func:`flow_graph`).
    """
    ev = trace.events
    if ev.empty:
        return pd.DataFrame(columns=_FANOUT_COLUMNS)
    subject = fill(ev["subject"], UNKNOWN)
    kind = fill(ev["type"], UNKNOWN)
    subject_code, subjects = pd.factorize(subject)
    type_code, types = pd.factorize(kind)
    group, pairs = pd.factorize(subject_code.astype(np.int64) * len(types) + type_code)
    n = len(pairs)
    dv = trace.deliveries
    dv_group = group[trace.delivery_events]
    consumer, consumers = pd.factorize(dv["consumer"])
    if (consumer < 0).any():  # deliveries always name their consumer; be safe anyway
        consumer = np.where(consumer < 0, len(consumers), consumer)
        consumers = pd.Index([*consumers, UNKNOWN])
    parent = trace.lineage()["cause_row"].to_numpy()
    child = np.flatnonzero(parent >= 0)
    events = np.bincount(group, minlength=n)
    deliveries = np.bincount(dv_group, minlength=n)
    names = _names(dv_group, consumer, np.asarray(consumers), n)
    frame = pd.DataFrame({
        "subject": np.asarray(subjects)[pairs // len(types)],
        "type": np.asarray(types)[pairs % len(types)],
        "events": events,
        "deliveries": deliveries,
        "consumers": [len(x.split(", ")) if x else 0 for x in names],
        "consumer_names": names,
        "mean_fanout": deliveries / events,
        "emitted_types": _names(group[parent[child]], type_code[child], np.asarray(types), n),
    })
    seen = _server_seen(trace)
    server = {subject: ", ".join(sorted(part["target"]))
              for subject, part in seen.groupby("source")}
    frame["server_seen"] = [server.get(x, "") for x in frame["subject"]]
    frame = frame.sort_values(["events", "subject"], ascending=[False, True])
    return frame.astype({"subject": "str", "type": "str", "consumer_names": "str",
                         "emitted_types": "str", "server_seen": "str"}).reset_index(drop=True)


_FANOUT_COLUMNS = ["subject", "type", "events", "deliveries", "consumers", "consumer_names",
                   "mean_fanout", "emitted_types", "server_seen"]


def flow_graph(trace: Trace) -> pd.DataFrame:
    """Edges of the observed dependency graph: ``source, source_kind, target, target_kind,
    kind, count, p50_s, p95_s, errors``.

    Three kinds of edge: ``publishes`` (service → subject; the service is the events'
    CloudEvents source, else the publishing connection evtkit saw, else the connection the
    server's message trace says it came ``in`` from), ``delivers`` (subject → consumer;
    latency is queue time, publish → handler start) and ``emits`` (consumer → subject of
    the events its handler published; latency is handler start → publish).

    ``seen_by`` says who saw the edge: ``evtkit`` (its own rows), or ``server`` for a
    delivery known only from a server message trace (``trace.hops``): a connection that
    does not run evtkit, shown by its connection name (``target_kind`` ``connection``;
    latency is publish → the server sending it).
    """
    ev = trace.events
    if ev.empty:
        return pd.DataFrame(columns=_GRAPH_COLUMNS)
    service = fill(fill(fill(ev["source"], ev["producer"]), _senders(trace)), UNKNOWN)
    publishes = pd.DataFrame({"source": service.to_numpy(),
                              "target": fill(ev["subject"], UNKNOWN).to_numpy()})
    publishes = publishes.groupby(["source", "target"]).size().rename("count").reset_index()
    publishes = publishes.assign(kind="publishes", source_kind="service",
                                 target_kind="subject", p50_s=np.nan, p95_s=np.nan, errors=0)

    dv = trace.deliveries
    delivers = dv.assign(subject=fill(dv["subject"], UNKNOWN),
                         failed=(dv["outcome"] == "error").astype(np.int64)).groupby(
        ["subject", "consumer"])
    delivers = pd.concat([
        delivers.size().rename("count"),
        delivers["queue_s"].quantile(0.5).rename("p50_s"),
        delivers["queue_s"].quantile(0.95).rename("p95_s"),
        delivers["failed"].sum().rename("errors"),
    ], axis=1).reset_index().rename(columns={"subject": "source", "consumer": "target"})
    delivers = delivers.assign(kind="delivers", source_kind="subject", target_kind="service")

    links = _children(trace)
    links = links[links["delivery"] >= 0]
    started = spans(dv)[0].array.asi8
    lead = (ev["published_at"].array.asi8[links["child"].to_numpy()]
            - started[links["delivery"].to_numpy()]) / 1e9
    emits = pd.DataFrame({
        "source": dv["consumer"].to_numpy()[links["delivery"].to_numpy()],
        "target": fill(ev["subject"], UNKNOWN).to_numpy()[links["child"].to_numpy()],
        "lead_s": lead,
    }).groupby(["source", "target"])
    emits = pd.concat([
        emits.size().rename("count"),
        emits["lead_s"].quantile(0.5).rename("p50_s"),
        emits["lead_s"].quantile(0.95).rename("p95_s"),
    ], axis=1).reset_index()
    emits = emits.assign(kind="emits", source_kind="service", target_kind="subject", errors=0)

    frame = pd.concat([publishes, delivers, emits], ignore_index=True).assign(seen_by="evtkit")
    frame = pd.concat([frame, _server_seen(trace)], ignore_index=True)
    frame["count"] = frame["count"].astype(np.int64)
    frame["errors"] = frame["errors"].astype(np.int64)
    for column in ("source", "source_kind", "target", "target_kind", "kind", "seen_by"):
        frame[column] = frame[column].astype("str")
    return frame[_GRAPH_COLUMNS]


_GRAPH_COLUMNS = ["source", "source_kind", "target", "target_kind", "kind", "count", "p50_s",
                  "p95_s", "errors", "seen_by"]


def _senders(trace: Trace) -> pd.Series:
    """For each event, the connection its server message trace says it came in from
    (missing where it was not traced)."""
    ev, hops = trace.events, trace.hops
    ins = hops[(hops["hop"] == "in").to_numpy()].dropna(subset=["event_id", "connection"])
    ins = ins.drop_duplicates("event_id")
    where = positions(ev["event_id"], ins["event_id"])
    named = np.full(len(ev), None, dtype=object)
    if len(ins):
        found = where >= 0
        named[found] = ins["connection"].to_numpy(dtype=object)[where[found]]
    return pd.Series(named, index=ev.index, dtype="str")


def _server_seen(trace: Trace) -> pd.DataFrame:
    """``delivers`` edges for egress hops to connections that evtkit did not see receive
    the event (not an evtkit consumer or tap on that connection)."""
    hops = trace.hops
    if hops.empty:
        return pd.DataFrame(columns=_GRAPH_COLUMNS)
    hops = hops[(hops["hop"] == "eg").to_numpy() & hops["error"].isna().to_numpy()
                & ~hops["trace_only"].to_numpy()]
    if hops.empty:
        return pd.DataFrame(columns=_GRAPH_COLUMNS)
    obs = trace.observations
    seen = obs.loc[obs["kind"].isin(("receive", "tap")).to_numpy(), ["event_id", "observer"]]
    seen = seen[positions(seen["event_id"], hops["event_id"]) >= 0]  # traced events only
    known = set(zip(seen["event_id"], seen["observer"], strict=True))
    fresh = [(e, c) not in known for e, c in zip(hops["event_id"], hops["connection"],
                                                  strict=True)]
    hops = hops[fresh]
    if hops.empty:
        return pd.DataFrame(columns=_GRAPH_COLUMNS)
    ev = trace.events
    where = positions(hops["event_id"], ev["event_id"])
    published = ev["published_at"].array.asi8[np.maximum(where, 0)]
    lead = np.where(where >= 0, (hops["ts"].array.asi8 - published) / 1e9, np.nan)
    edges = pd.DataFrame({"source": fill(hops["subject"], UNKNOWN).to_numpy(),
                          "target": fill(hops["connection"], UNKNOWN).to_numpy(),
                          "lead_s": lead}).groupby(["source", "target"])
    edges = pd.concat([
        edges.size().rename("count"),
        edges["lead_s"].quantile(0.5).rename("p50_s"),
        edges["lead_s"].quantile(0.95).rename("p95_s"),
    ], axis=1).reset_index()
    return edges.assign(kind="delivers", source_kind="subject", target_kind="connection",
                        errors=0, seen_by="server")[_GRAPH_COLUMNS]
