"""Causal chains: what did this event cause, and what decided how long it all took?

::

    trace.chains()                       # one row per flow (evtkit.analysis.chains)
    trace.chain(flow).nodes / .edges     # the flow as a DAG of events, deliveries, handlers
    trace.critical_path(flow)            # the segments that set the flow's end time

A flow is a tree of events: each event's cause is its ``causation_id`` (explicit), or —
for traffic without causality headers — a link *inferred* from timing: a consumer
received event A and the same service published B during or shortly after handling it.
Inferred links carry a score and never override an explicit one. An event is attached to
the exact delivery whose handler published it when evtkit recorded the publish
(``events.emitted_seq``); otherwise to its cause's delivery by the same service.

Unlike a span tree, the critical path here crosses asynchronous hops: it walks back from
whatever finished last (a handler, or an event nobody handled) through the deliveries that
published each event, and splits the time into ``queue`` (published → handler started:
waiting in the broker and the client), ``processing`` (handler working, up to the moment
it published the next event or finished) and ``publish`` (a cause with no recorded
delivery: time between the cause and the effect being published).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._arrow import nullable_ints
from ..schema import fill, positions, same
from .chains import chains  # (one row per flow: in a module of its own)

if TYPE_CHECKING:
    from ..trace import Trace

__all__ = ["Chain", "chain", "chains", "critical_path", "lineage"]

DEFAULT_WINDOW_S = 1.0
"""How long after a handler finished a publish by the same service may still be its effect."""


def lineage(trace: Trace, *, infer: bool = True, window_s: float = DEFAULT_WINDOW_S
            ) -> pd.DataFrame:
    """One row per event (same order as ``trace.events``): how it is linked to its cause.

    Columns: ``event_id, cause_id, link`` (``root``, ``explicit``, ``inferred``, ``orphan``
    — its cause is not in the trace — or ``cycle``), ``score`` (1 for explicit, 0–1 for
    inferred), ``parent_seq`` (seq of the delivery that published it), ``flow_id``,
    ``root_id``, ``depth`` (1 for a root; missing in and below cycles), ``cause_row`` and
    ``root_row`` (positions of the cause and the root in ``trace.events``, -1 for none:
    for ``trace.events.take(...)`` without a join). Ids are categoricals, as in ``events``.

    Args:
        trace: the trace.
        infer: propose links for events that carry no causality at all.
        window_s: how long after a handler finished its service's publishes may count as
            its effects (inferred links decay over this time).
    """
    ev = trace.events
    n = len(ev)
    if not n:
        return _empty_lineage()
    cause = ev["causation_id"]
    cause_pos = positions(cause, ev["event_id"])
    has_cause = cause.notna().to_numpy()
    explicit = has_cause & (cause_pos >= 0)
    link = np.where(explicit, _EXPLICIT, np.where(has_cause, _ORPHAN, _ROOT)).astype(np.int8)
    score = np.where(explicit, 1.0, np.nan)
    parent = np.where(explicit, cause_pos, -1)
    parent_seq = ev["emitted_seq"].to_numpy(dtype="float64", na_value=np.nan)

    need = explicit & np.isnan(parent_seq)
    candidates = (link == _ROOT) & same(ev["correlation_id"], ev["event_id"]) if infer \
        else np.zeros(n, bool)
    deliveries = _delivery_spans(trace) if need.any() or candidates.any() else None  # (big)
    if need.any() and deliveries is not None and len(deliveries):
        parent_seq[need] = _attribute(
            ev.loc[need, ["causation_id", "source", "published_at"]], deliveries)
    if deliveries is not None and len(deliveries) and candidates.any():
        found = _infer(ev.loc[candidates, ["event_id", "source", "producer", "published_at"]],
                       deliveries, ev["event_id"], window_s)
        rows = np.flatnonzero(candidates)[found.index.to_numpy()]
        parent[rows] = found["parent"].to_numpy()
        parent_seq[rows] = found["seq"].to_numpy()
        score[rows] = found["score"].to_numpy()
        link[rows] = _INFERRED

    flow_code, flows = pd.factorize(ev["correlation_id"])
    depth, root, flow_code = propagate(parent, link == _INFERRED, flow_code)
    unreached = np.flatnonzero(depth == 0)
    if len(unreached):
        link[on_cycles(parent, unreached)] = _CYCLE
    ids = ev["event_id"].array  # (codes into the one set of ids of the trace)
    cause_id = ids.take(parent, allow_fill=True)
    orphan = parent < 0
    cause_id[orphan] = cause.array[orphan]  # (a cause not in the trace keeps its id)
    return pd.DataFrame({
        "event_id": ids,
        "cause_id": cause_id,
        "link": pd.Categorical.from_codes(_LINK_CODES[link], dtype=_LINK_DTYPE),
        "score": score,
        "parent_seq": nullable_ints(parent_seq, ~np.isnan(parent_seq)),
        "flow_id": flows.take(flow_code, allow_fill=True),
        "root_id": ids.take(root, allow_fill=True),
        "depth": nullable_ints(depth, depth > 0),
        "cause_row": parent.astype(np.int64),
        "root_row": root,
    }, index=ev.index)


# Link kinds, as codes while computing and as a categorical in the result.
_LINKS = ["root", "explicit", "inferred", "orphan", "cycle"]
_ROOT, _EXPLICIT, _INFERRED, _ORPHAN, _CYCLE = range(5)
_LINK_DTYPE = pd.CategoricalDtype(pd.Index(sorted(_LINKS), dtype="str"))
"""``link`` as a categorical (one byte per event), its categories sorted as text's are."""
_LINK_CODES = np.array([sorted(_LINKS).index(k) for k in _LINKS], np.int8)


def _empty_lineage() -> pd.DataFrame:
    return pd.DataFrame({
        "event_id": pd.array([], "str"), "cause_id": pd.array([], "str"),
        "link": pd.Categorical([], dtype=_LINK_DTYPE), "score": np.array([], float),
        "parent_seq": pd.array([], "Int64"), "flow_id": pd.array([], "str"),
        "root_id": pd.array([], "str"), "depth": pd.array([], "Int64"),
        "cause_row": np.array([], np.int64), "root_row": np.array([], np.int64),
    })


def spans(deliveries: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """When handling each delivery started and ended; the receive time stands in where the
    handler never ran (dropped, still pending)."""
    start = deliveries["started_at"].fillna(deliveries["received_at"])
    return start, deliveries["done_at"].fillna(start)


def _delivery_spans(trace: Trace) -> pd.DataFrame:
    """Deliveries with a start and end that exist even when the handler's times do not."""
    dv = trace.deliveries
    start, end = spans(dv)
    return pd.DataFrame({"seq": dv["seq"].to_numpy(dtype="int64"), "event_id": dv["event_id"],
                         "consumer": dv["consumer"], "start": start, "end": end})


def _attribute(children: pd.DataFrame, deliveries: pd.DataFrame) -> np.ndarray:
    """For events with an explicit cause but no recorded publishing delivery: the cause's
    delivery by the same service (the latest that started before the publish)."""
    left = pd.DataFrame({"row": np.arange(len(children)),
                         "cause": children["causation_id"].to_numpy(),
                         "service": children["source"].to_numpy(),
                         "at": children["published_at"].to_numpy()})
    both = left.merge(deliveries, left_on=["cause", "service"],
                      right_on=["event_id", "consumer"], how="inner")
    both = both[both["start"] <= both["at"]].sort_values(["row", "start"])
    last = both.drop_duplicates("row", keep="last")
    out = np.full(len(children), np.nan)
    out[last["row"].to_numpy()] = last["seq"].to_numpy()
    return out


def _infer(children: pd.DataFrame, deliveries: pd.DataFrame, ids: pd.Series,
           window_s: float) -> pd.DataFrame:
    """Best delivery by the same service that was running (or had just finished) when each
    event was published; scored 1 inside the handler, decaying after it."""
    service = fill(children["source"], children["producer"])
    left = pd.DataFrame({"row": np.arange(len(children)), "service": service.to_numpy(),
                         "at": children["published_at"],
                         "self": children["event_id"].to_numpy()})
    left = left[left["service"].notna()].sort_values("at")
    right = deliveries.rename(columns={"consumer": "service"}).sort_values("start")
    right = right[right["service"].notna()]
    if left.empty or right.empty:
        return pd.DataFrame({"parent": [], "seq": [], "score": []},
                            index=pd.Index([], dtype=np.int64))
    left["service"] = left["service"].astype(object)
    right = right.assign(service=right["service"].astype(object))
    matched = pd.merge_asof(left, right, left_on="at", right_on="start", by="service",
                            direction="backward")
    late = (matched["at"] - matched["end"]).dt.total_seconds().clip(lower=0)
    ok = matched["seq"].notna() & (late <= window_s) & (matched["event_id"] != matched["self"])
    matched = matched[ok.to_numpy()]
    late = late[ok.to_numpy()]
    return pd.DataFrame({
        "parent": positions(matched["event_id"].astype("str"), ids),
        "seq": matched["seq"].to_numpy(dtype="float64"),
        "score": np.exp(-late.to_numpy() / window_s) if window_s > 0 else 1.0,
    }, index=pd.Index(matched["row"].to_numpy()))


def propagate(parent: np.ndarray, inferred: np.ndarray, flow: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth, root and flow (as codes) of every event, one causal level per vectorised
    step. Events never reached from a root (cycles and what hangs below) keep depth 0."""
    n = len(parent)
    depth = np.zeros(n, np.int64)
    root = np.full(n, -1, np.int64)
    flow = flow.copy()
    start = parent < 0
    depth[start] = 1
    root[start] = np.flatnonzero(start)
    known = start.copy()
    safe = np.maximum(parent, 0)
    while True:
        new = ~known & (parent >= 0) & known[safe]
        if not new.any():
            break
        p = parent[new]
        depth[new] = depth[p] + 1
        root[new] = root[p]
        # An inferred child joins its parent's flow; explicit ids keep their own.
        flow[new] = np.where(inferred[new], flow[p], flow[new])
        known |= new
    return depth, root, flow


def on_cycles(parent: np.ndarray, unreached: np.ndarray) -> np.ndarray:
    """Which of the unreached events sit on a causation cycle (each visited once)."""
    state: dict[int, int] = {}  # 1: being walked, 2: done
    members: list[int] = []
    for start in unreached.tolist():
        path = []
        node = start
        while node >= 0 and state.get(node) is None:
            state[node] = 1
            path.append(node)
            node = int(parent[node])
        if node >= 0 and state.get(node) == 1:
            members.extend(path[path.index(node):])
        for p in path:
            state[p] = 2
    return np.array(sorted(set(members)), dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Chain:
    """One flow as a DAG.

    Attributes:
        correlation_id: the flow.
        nodes: ``node_id, kind`` (``event`` at its publish, ``delivery`` when a handler
            started, ``handler`` when it finished) ``, event_id, consumer, subject, type,
            time, outcome, error, on_critical_path``.
        edges: ``source, target, kind`` (``queue`` event→delivery, ``processing``
            delivery→handler end, ``cause`` delivery→event its handler published, or
            event→event when no delivery is known) ``, start, end, duration_s, inferred,
            score, on_critical_path``.
        critical_path: as :func:`critical_path`.
    """

    correlation_id: str
    nodes: pd.DataFrame
    edges: pd.DataFrame
    critical_path: pd.DataFrame

    def _repr_html_(self) -> str:
        import html

        total = self.critical_path["duration_s"].sum() if len(self.critical_path) else 0.0
        by_kind = self.critical_path.groupby("kind")["duration_s"].sum()
        parts = ", ".join(f"{html.escape(str(k))} {v * 1e3:.2f} ms" for k, v in by_kind.items())
        return (f"<div><b>Flow {html.escape(self.correlation_id)}</b>: "
                f"{(self.nodes['kind'] == 'event').sum()} events, "
                f"{(self.nodes['kind'] == 'delivery').sum()} deliveries; critical path "
                f"{total * 1e3:.2f} ms ({parts})</div>")


def chain(trace: Trace, correlation_id: str, *, infer: bool = True) -> Chain:
    """The flow ``correlation_id`` as nodes and typed edges (see :class:`Chain`).

    Raises:
        KeyError: no flow with that id.
    """
    lin, ev, dv = _flow(trace, correlation_id, infer)
    crit = critical_path(trace, correlation_id, infer=infer)
    on_path = set(zip(crit["event_id"], fill(crit["consumer"], ""), crit["kind"],
                      strict=True))
    nodes, edges = [], []
    ev_by_id = ev.set_index("event_id")
    for e in ev.itertuples(index=False):
        nodes.append({"node_id": e.event_id, "kind": "event", "event_id": e.event_id,
                      "consumer": None, "subject": e.subject, "type": e.type,
                      "time": e.published_at, "outcome": None, "error": None,
                      "on_critical_path": any(k[0] == e.event_id for k in on_path)})
    for d in dv.itertuples(index=False):
        dnode, hnode = f"{d.event_id}>{d.consumer}#{d.seq}", f"{d.event_id}>{d.consumer}#{d.seq}!"
        start = d.start
        queue_hot = (d.event_id, d.consumer, "queue") in on_path
        work_hot = (d.event_id, d.consumer, "processing") in on_path
        common = {"event_id": d.event_id, "consumer": d.consumer, "subject": d.subject,
                  "type": d.type, "outcome": d.outcome, "error": d.error}
        nodes.append({"node_id": dnode, "kind": "delivery", "time": start,
                      "on_critical_path": queue_hot or work_hot, **common})
        nodes.append({"node_id": hnode, "kind": "handler", "time": d.done_at,
                      "on_critical_path": work_hot, **common})
        edges.append(_edge(d.event_id, dnode, "queue", d.published_at, start, queue_hot))
        edges.append(_edge(dnode, hnode, "processing", start, d.done_at, work_hot))
    dv_by_seq = dv.set_index("seq")
    for row in lin.itertuples(index=False):
        if row.link not in ("explicit", "inferred") or row.cause_id not in ev_by_id.index:
            continue
        child_pub = ev_by_id.loc[row.event_id, "published_at"]
        inferred = row.link == "inferred"
        hot = any(k[0] == row.event_id for k in on_path)
        if pd.notna(row.parent_seq) and int(row.parent_seq) in dv_by_seq.index:
            d = dv_by_seq.loc[int(row.parent_seq)]
            # From the handler's start: it published the event while working.
            source = f"{d['event_id']}>{d['consumer']}#{int(row.parent_seq)}"
            start = d["start"]
        else:
            source, start = row.cause_id, ev_by_id.loc[row.cause_id, "published_at"]
        edges.append(_edge(source, row.event_id, "cause", start, child_pub, hot,
                           inferred=inferred, score=row.score))
    node_frame = pd.DataFrame(nodes, columns=["node_id", "kind", "event_id", "consumer",
                                              "subject", "type", "time", "outcome", "error",
                                              "on_critical_path"])
    edge_frame = pd.DataFrame(edges, columns=["source", "target", "kind", "start", "end",
                                              "duration_s", "inferred", "score",
                                              "on_critical_path"])
    return Chain(correlation_id, node_frame, edge_frame, crit)


def _edge(source: str, target: str, kind: str, start: Any, end: Any, hot: bool,
          inferred: bool = False, score: float = 1.0) -> dict[str, Any]:
    duration = (end - start).total_seconds() if pd.notna(start) and pd.notna(end) else np.nan
    return {"source": source, "target": target, "kind": kind, "start": start, "end": end,
            "duration_s": duration, "inferred": inferred, "score": score,
            "on_critical_path": hot}


def _flow(trace: Trace, correlation_id: str, infer: bool
          ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    lin = trace.lineage(infer=infer)
    mask = (lin["flow_id"] == correlation_id).to_numpy()
    if not mask.any():
        raise KeyError(f"no flow {correlation_id!r} in this trace; see trace.chains()")
    lin = lin[mask]
    ev = trace.events[mask]
    dv = trace.deliveries
    dv = dv[dv["event_id"].isin(ev["event_id"]).to_numpy()]
    start, end = spans(dv)
    return lin, ev, dv.assign(start=start, end=end)


def critical_path(trace: Trace, correlation_id: str, *, infer: bool = True) -> pd.DataFrame:
    """The ordered segments that determine when flow ``correlation_id`` ended.

    Columns: ``step, kind`` (``queue`` / ``processing`` / ``publish``) ``, event_id,
    subject, consumer, start, end, duration_s, inferred``. The segments are contiguous:
    their durations add up to the flow's ``critical_path_s``.

    Raises:
        KeyError: no flow with that id.
    """
    lin, ev, dv = _flow(trace, correlation_id, infer)
    ev_i = ev.set_index("event_id")
    lin_i = lin.set_index("event_id")
    dv_i = dv.set_index("seq")
    last_pub = ev["published_at"].max()
    segments: list[dict[str, Any]] = []
    if len(dv) and dv["end"].max() >= last_pub:
        d = dv.loc[dv["end"].idxmax()]
        segments.append(_segment("processing", d["event_id"], ev_i, d["consumer"], d["start"],
                                 d["end"]))
        segments.append(_segment("queue", d["event_id"], ev_i, d["consumer"],
                                 ev_i.loc[d["event_id"], "published_at"], d["start"]))
        event = d["event_id"]
    else:
        event = ev.loc[ev["published_at"].idxmax(), "event_id"]
    seen = {event}
    while True:
        row = lin_i.loc[event]
        cause = row["cause_id"]
        if row["link"] not in ("explicit", "inferred") or cause not in ev_i.index:
            break
        inferred = row["link"] == "inferred"
        pub = ev_i.loc[event, "published_at"]
        seq = row["parent_seq"]
        if pd.notna(seq) and int(seq) in dv_i.index:
            d = dv_i.loc[int(seq)]
            segments.append(_segment("processing", cause, ev_i, d["consumer"], d["start"],
                                     pub, inferred))
            segments.append(_segment("queue", cause, ev_i, d["consumer"],
                                     ev_i.loc[cause, "published_at"], d["start"]))
        else:
            segments.append(_segment("publish", event, ev_i, None,
                                     ev_i.loc[cause, "published_at"], pub, inferred))
        if cause in seen:  # a cycle: stop, it has been reported by trace.problems()
            break
        seen.add(cause)
        event = cause
    segments.reverse()
    frame = pd.DataFrame(segments, columns=["kind", "event_id", "subject", "consumer", "start",
                                            "end", "duration_s", "inferred"])
    frame.insert(0, "step", np.arange(len(frame)))
    return frame


def _segment(kind: str, event_id: str, ev_i: pd.DataFrame, consumer: Any, start: Any,
             end: Any, inferred: bool = False) -> dict[str, Any]:
    return {"kind": kind, "event_id": event_id, "subject": ev_i.loc[event_id, "subject"],
            "consumer": consumer, "start": start, "end": end,
            "duration_s": (end - start).total_seconds(), "inferred": inferred}
