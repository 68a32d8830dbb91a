"""Synthetic traces with known answers, for tests, benchmarks and trying the plots.

::

    trace = ek.testing.make_trace(n_events=3_000, slow="billing", failing={"audit": 0.2})
    truth = trace.metadata["truth"]      # what every analysis should find

A generated trace is a chain of ``depth`` levels per flow: the level-k event goes to
``fanout`` consumers, and the first of them publishes the level-k+1 event while handling it.
Every consumer is a first-in-first-out server (one at a time), so backlog builds up exactly
as it would for a real consumer that is too slow. Times are integer nanoseconds, so the
ground truth (computed here from the generator's own arrays, not by evtkit's analysis) is
exact.

Anomalies on request: a ``slow`` consumer (processing 1.5× the arrival interval: backlog
keeps rising), a ``stall`` (the handler completes nothing for a while), a ``stop`` (the
consumer receives nothing for a while), ``failing`` handlers, ``orphans`` (events whose
cause is unknown), a ``cycle`` in causation, and ``skew`` (a consumer whose clock is off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .schema import OBSERVATIONS, SCHEMA_VERSION, fill, to_frame, with_missing
from .trace import Trace

__all__ = ["Score", "make_trace", "score_diagnosis"]

NS = 1_000_000_000
SUBJECTS = ["orders.placed", "inventory.reserved", "payments.captured", "shipments.created",
            "invoices.sent", "loyalty.updated"]
SERVICES = ["inventory", "notifications", "analytics", "billing", "audit", "search",
            "shipping", "fraud", "email", "warehouse", "ledger", "loyalty"]
ROOT_SOURCE = "shop"
ERROR_TEXT = "RuntimeError: injected failure"
_NONE = np.array(None, dtype=object)  # a missing value for np.where over object arrays


@dataclass(frozen=True, slots=True)
class _Consumer:
    name: str
    level: int
    slot: int


def _consumers(depth: int, fanout: int) -> list[_Consumer]:
    out = []
    for level in range(depth):
        for slot in range(fanout):
            i = level * fanout + slot
            name = SERVICES[i] if i < len(SERVICES) else f"service-{i}"
            out.append(_Consumer(name, level, slot))
    return out


def _subject(level: int) -> str:
    return SUBJECTS[level] if level < len(SUBJECTS) else f"stage{level}.done"


def _fifo(arrival: np.ndarray, work: np.ndarray) -> np.ndarray:
    """Start times of jobs served one at a time in arrival order (arrays sorted by arrival).

    done_i = work_i + max(arrival_i, done_{i-1}); with S = cumsum(work) this is
    done = S + cummax(arrival - S_prev): no Python loop.
    """
    total = np.cumsum(work)
    before = total - work
    done = total + np.maximum.accumulate(arrival - before)
    return done - work


def make_trace(
    n_events: int = 1_000,
    *,
    depth: int = 3,
    fanout: int = 3,
    rate: float = 100.0,
    queue_s: float = 0.002,
    processing_s: float = 0.004,
    seed: int = 0,
    slow: str | None = None,
    stall: tuple[str, float, float] | None = None,
    stop: tuple[str, float, float] | None = None,
    failing: dict[str, float] | None = None,
    orphans: int = 0,
    cycle: bool = False,
    skew: dict[str, float] | None = None,
    payloads: bool = True,
) -> Trace:
    """Generate a trace whose right answers are known; they are in ``metadata["truth"]``.

    Args:
        n_events: events in the regular flows (``n_events // depth`` flows of ``depth``).
        depth: events per flow (levels of the chain).
        fanout: consumers of each level's subject.
        rate: flows started per second.
        queue_s: typical time from publish to arrival at a consumer (uniform 0.5–1.5×).
        processing_s: typical handler time (uniform 0.5–1.5×).
        seed: random seed; the same arguments give the same trace.
        slow: a consumer whose handler takes 1.5× the interval between flows.
        stall: ``(consumer, start_s, duration_s)``: its handler completes nothing then.
        stop: ``(consumer, start_s, duration_s)``: it receives nothing then (messages lost).
        failing: consumer → fraction of its handler calls that raise.
        orphans: extra events whose ``causation_id`` names an event not in the trace.
        cycle: add a flow of three events whose causation ids form a cycle.
        skew: consumer → offset of its clock in seconds (negative: it runs behind).
        payloads: give each event a small JSON payload (off makes large traces lighter).

    Returns:
        A :class:`~evtkit.trace.Trace`; ``trace.metadata["truth"]`` holds, per consumer,
        deliveries, errors, latency percentiles and expected lag status, plus flows, depth,
        orphan and cycle ids, skewed observers, ``utilisation`` (rate × processing time;
        at 1 or more every consumer falls behind) and the critical path of the first
        flows.
    """
    rng = np.random.default_rng(seed)
    consumers = _consumers(depth, fanout)
    by_name = {c.name: c for c in consumers}
    for name in [slow, *(failing or {}), *(skew or {}),
                 *(x[0] for x in (stall, stop) if x is not None)]:
        if name is not None and name not in by_name:
            raise ValueError(f"unknown consumer {name!r}; the consumers are {sorted(by_name)}")
    n_flows = max(1, n_events // depth)
    t0 = 1_800_000_000 * NS
    gap = int(NS / rate)
    flow_start = t0 + np.arange(n_flows, dtype=np.int64) * gap + rng.integers(
        0, max(1, gap // 2), n_flows)

    ev_pub = np.empty((depth, n_flows), np.int64)  # publish time of each level's event
    ev_pub[0] = flow_start
    deliveries: list[dict[str, Any]] = []
    for level in range(depth):
        for c in [c for c in consumers if c.level == level]:
            d = _deliver(rng, c, ev_pub[level], queue_s, processing_s, gap, slow, stall, stop,
                         (failing or {}).get(c.name, 0.0))
            deliveries.append(d)
            if c.slot == 0 and level + 1 < depth:
                # The handler publishes the next level's event 60% of the way through.
                flows = d["flow"]
                ev_pub[level + 1][flows] = d["start"] + (d["done"] - d["start"]) * 6 // 10
                lost = np.setdiff1d(np.arange(n_flows), flows)
                ev_pub[level + 1][lost] = -1  # the emitter never got it: the flow ends
    return _assemble(consumers, ev_pub, rate * processing_s, deliveries, orphans, cycle,
                     skew or {}, payloads, slow, stall, stop, failing or {}, t0, n_flows)


def _deliver(rng: np.random.Generator, c: _Consumer, pub: np.ndarray, queue_s: float,
             processing_s: float, gap: int, slow: str | None,
             stall: tuple[str, float, float] | None, stop: tuple[str, float, float] | None,
             fail_rate: float) -> dict[str, Any]:
    """Deliveries of one consumer: arrival, start and finish of each, FIFO."""
    flows = np.flatnonzero(pub >= 0)
    arrival = pub[flows] + (queue_s * NS * rng.uniform(0.5, 1.5, len(flows))).astype(np.int64)
    base = gap * 1.5 if c.name == slow else processing_s * NS
    work = (base * rng.uniform(0.5, 1.5, len(flows))).astype(np.int64) + 1
    t_first = pub[flows].min() if len(flows) else 0
    if stop is not None and stop[0] == c.name:
        s, e = t_first + int(stop[1] * NS), t_first + int((stop[1] + stop[2]) * NS)
        keep = (pub[flows] < s) | (pub[flows] >= e)
        flows, arrival, work = flows[keep], arrival[keep], work[keep]
    order = np.argsort(arrival, kind="stable")
    flows, arrival, work = flows[order], arrival[order], work[order]
    if stall is not None and stall[0] == c.name:
        # An invisible job occupies the handler for the stall: nothing completes meanwhile.
        s, length = t_first + int(stall[1] * NS), int(stall[2] * NS)
        at = np.searchsorted(arrival, s)
        arrival = np.insert(arrival, at, s)
        work = np.insert(work, at, length)
        start = np.delete(_fifo(arrival, work), at)
        arrival, work = np.delete(arrival, at), np.delete(work, at)
    else:
        start = _fifo(arrival, work)
    failed = rng.random(len(flows)) < fail_rate
    return {"consumer": c, "flow": flows, "arrival": arrival, "start": start,
            "done": start + work, "failed": failed}


def _assemble(consumers: list[_Consumer], ev_pub: np.ndarray, load: float,
              deliveries: list[dict[str, Any]], orphans: int,
              cycle: bool, skew: dict[str, float], payloads: bool, slow: str | None,
              stall: Any, stop: Any, failing: dict[str, float], t0: int,
              n_flows: int) -> Trace:
    depth = ev_pub.shape[0]
    # -- events: regular levels, then orphans and the cycle ------------------------------
    level_of, flow_of = np.nonzero(ev_pub >= 0)
    order = np.lexsort((level_of, flow_of))
    level_of, flow_of = level_of[order], flow_of[order]
    n_regular = len(level_of)
    ids = np.array([f"{i:016x}" for i in range(n_regular)], dtype=object)
    index = np.full((depth, n_flows), -1, np.int64)
    index[level_of, flow_of] = np.arange(n_regular)
    pub = ev_pub[level_of, flow_of]
    subject = np.array([_subject(k) for k in range(depth)], dtype=object)[level_of]
    emitter_of_level = {c.level + 1: c.name for c in consumers if c.slot == 0}
    source = np.array([ROOT_SOURCE] + [emitter_of_level[k] for k in range(1, depth)],
                      dtype=object)[level_of]
    correlation = np.array([f"flow-{f:08x}" for f in range(n_flows)], dtype=object)[flow_of]
    parent = np.where(level_of > 0, index[np.maximum(level_of - 1, 0), flow_of], -1)
    causation = np.where(parent >= 0, ids[np.maximum(parent, 0)], _NONE)

    extra_ids: list[str] = []
    extra_pub: list[int] = []
    extra_subject: list[str] = []
    extra_source: list[str] = []
    extra_corr: list[str] = []
    extra_cause: list[str] = []
    end = int(pub.max()) if n_regular else t0
    orphan_ids = [f"orphan-{i:04d}" for i in range(orphans)]
    for i, oid in enumerate(orphan_ids):
        extra_ids.append(oid)
        extra_pub.append(t0 + int((end - t0) * (i + 1) / (orphans + 1)))
        extra_subject.append("orphans.seen")
        extra_source.append("legacy")
        extra_corr.append(f"orphan-flow-{i:04d}")
        extra_cause.append(f"missing-{i:04d}")
    cycle_ids = ["cycle-a", "cycle-b", "cycle-c"] if cycle else []
    for i, cid in enumerate(cycle_ids):
        extra_ids.append(cid)
        extra_pub.append(t0 + i * NS // 1000)
        extra_subject.append("cycle.step")
        extra_source.append("loopy")
        extra_corr.append("cycle-flow")
        extra_cause.append(cycle_ids[i - 1])
    all_ids = np.concatenate([ids, np.array(extra_ids, dtype=object)])
    all_pub = np.concatenate([pub, np.array(extra_pub, dtype=np.int64)])
    all_subject = np.concatenate([subject, np.array(extra_subject, dtype=object)])
    all_source = np.concatenate([source, np.array(extra_source, dtype=object)])
    all_corr = np.concatenate([correlation, np.array(extra_corr, dtype=object)])
    all_cause = np.concatenate([causation, np.array(extra_cause, dtype=object)])
    n_ev = len(all_ids)

    # -- deliveries, with observers' clocks ------------------------------------------------
    rec: dict[str, list[np.ndarray]] = {
        k: [] for k in ("event", "consumer", "arrival", "start", "done", "failed")
    }
    for d in deliveries:
        c = d["consumer"]
        offset = int(skew.get(c.name, 0.0) * NS)
        rec["event"].append(index[c.level, d["flow"]])
        rec["consumer"].append(np.full(len(d["flow"]), c.name, dtype=object))
        for k in ("arrival", "start", "done"):
            rec[k].append(d[k] + offset)
        rec["failed"].append(d["failed"])
    dv = {k: np.concatenate(v) if v else np.array([]) for k, v in rec.items()}
    n_dv = len(dv["event"])

    # Which delivery emitted each event: (level-1 emitter consumer, its key) → row.
    emitted_row = np.full(n_ev, -1, np.int64)
    start_row = 0
    for d in deliveries:
        c = d["consumer"]
        if c.slot == 0 and c.level + 1 < depth:
            flows = d["flow"]
            child = index[c.level + 1, flows]
            emitted_row[child] = start_row + np.arange(len(flows))
        start_row += len(d["flow"])

    # -- observation rows: publish, receive, handled --------------------------------------
    kinds = np.concatenate([np.full(n_ev, 0), np.full(n_dv, 1), np.full(n_dv, 2)])
    ts = np.concatenate([all_pub, dv["arrival"], dv["done"]]).astype(np.int64)
    order = np.lexsort((np.arange(len(ts)), ts))
    seq_of = np.empty(len(ts), np.int64)
    seq_of[order] = np.arange(len(ts))
    receive_seq = seq_of[n_ev:n_ev + n_dv]

    ev_take = np.concatenate([np.arange(n_ev), dv["event"], dv["event"]]).astype(np.int64)
    consumer_col = np.concatenate([
        np.where(emitted_row >= 0, dv["consumer"][np.maximum(emitted_row, 0)] if n_dv else _NONE,
                 _NONE),
        dv["consumer"], dv["consumer"],
    ])
    observer_col = np.concatenate([
        np.where(emitted_row >= 0, consumer_col[:n_ev], all_source), dv["consumer"],
        dv["consumer"],
    ])
    ref = np.concatenate([
        np.where(emitted_row >= 0, receive_seq[np.maximum(emitted_row, 0)] if n_dv else -1, -1),
        np.full(n_dv, -1), receive_seq,
    ])
    failed = dv["failed"].astype(bool)
    outcome = np.concatenate([np.full(n_ev + n_dv, None, dtype=object),
                              np.where(failed, "error", "ok").astype(object)])
    error = np.concatenate([np.full(n_ev + n_dv, None, dtype=object),
                            np.where(failed, ERROR_TEXT, _NONE).astype(object)])
    started = np.concatenate([np.full(n_ev + n_dv, -1), dv["start"]]).astype(np.int64)
    # Put every row array in time order now, so the table is built once, already sorted.
    kinds, ts, ev_take, consumer_col, observer_col, ref, outcome, error, started = (
        a[order] for a in (kinds, ts, ev_take, consumer_col, observer_col, ref, outcome, error,
                           started))
    is_done = kinds == 2
    seq_of = np.arange(len(ts), dtype=np.int64)

    ids_arr = pa.array(all_ids, pa.string())
    take = pa.array(ev_take)
    msg = pa.array(~is_done)
    null_str = pa.nulls(len(ts), pa.string())
    payload_arr = (pa.array([b'{"n":%d}' % i for i in range(n_ev)], pa.binary())
                   if payloads else pa.nulls(n_ev, pa.binary()))
    trace_ids = pa.array([f"{i + 1:032x}" for i in range(n_flows)]
                         + ["f" * 32] * (n_ev - n_regular), pa.string())
    flow_index = np.concatenate([flow_of, np.zeros(n_ev - n_regular, np.int64)])
    ev_trace = trace_ids.take(pa.array(flow_index))
    cols = {
        "seq": pa.array(seq_of),
        "kind": pa.array(np.array(["publish", "receive", "handled"], dtype=object)[kinds],
                         pa.string()),
        "ts": pa.array(ts).cast(pa.timestamp("ns", tz="UTC")),
        "observer": pa.array(observer_col, pa.string()),
        "consumer": pa.array(consumer_col, pa.string()),
        "queue": null_str,
        "subject": _masked(pa.array(all_subject, pa.string()).take(take), msg),
        "reply": null_str,
        "size": _masked(pc.binary_length(payload_arr).cast(pa.int64()).take(take), msg),
        "payload": _masked(payload_arr.take(take), msg),
        "header_block": pa.nulls(len(ts), pa.binary()),
        "headers": pa.nulls(len(ts), pa.map_(pa.string(), pa.string())),
        "event_id": _masked(ids_arr.take(take), msg),
        "type": _masked(pa.array(all_subject, pa.string()).take(take), msg),
        "source": _masked(pa.array(all_source, pa.string()).take(take), msg),
        "correlation_id": _masked(pa.array(all_corr, pa.string()).take(take), msg),
        "causation_id": _masked(pa.array(all_cause, pa.string()).take(take), msg),
        "trace_id": _masked(ev_trace.take(take), msg),
        "parent_id": _masked(ids_arr.take(take), msg),
        "sampled": _masked(pa.array(np.ones(len(ts), bool)), msg),
        "event_time": _masked(pa.array(all_pub).cast(pa.timestamp("ns", tz="UTC")).take(take),
                              msg),
        "content_type": _masked(pa.array(np.full(len(ts), "application/json", dtype=object),
                                         pa.string()), msg),
        "mode": _masked(pa.array(np.full(len(ts), "binary", dtype=object), pa.string()), msg),
        "id_synthetic": _masked(pa.array(np.zeros(len(ts), bool)), msg),
        "replay_of": null_str,
        "malformed": _masked(pa.array(np.zeros(len(ts), np.int64)), msg),
        "ref": pa.array(ref, mask=ref < 0),
        "started_at": pa.array(started, mask=started < 0).cast(pa.timestamp("ns", tz="UTC")),
        "outcome": pa.array(outcome, pa.string()),
        "error": pa.array(error, pa.string()),
        "count": pa.nulls(len(ts), pa.int64()),
        "detail": null_str,
    }
    table = with_missing(pa.table(cols), OBSERVATIONS)  # JetStream/server columns: empty
    del cols
    truth = _truth(consumers, dv, all_pub, dv["event"], n_regular, n_flows,
                   depth, orphan_ids, cycle_ids, skew, slow, stall, stop, failing,
                   index, emitted_row, all_ids, load)
    meta = {"schema_version": SCHEMA_VERSION, "generator": "evtkit.testing.make_trace",
            "truth": truth}
    return Trace(to_frame(table, OBSERVATIONS), meta)


def _masked(values: pa.Array, keep: pa.Array) -> pa.Array:
    """``values`` where ``keep``, null elsewhere."""
    return pc.if_else(keep, values, pa.scalar(None, values.type))


def _truth(consumers, dv, pub, dv_event, n_regular, n_flows, depth, orphan_ids, cycle_ids,
           skew, slow, stall, stop, failing, index, emitted_row, ids, load) -> dict[str, Any]:
    """The right answers, from the generator's arrays (independently of evtkit.analysis)."""
    queue = (dv["start"] - pub[dv_event]) / NS
    processing = (dv["done"] - dv["start"]) / NS
    per: dict[str, Any] = {}
    for c in consumers:
        mine = dv["consumer"] == c.name
        q, p = queue[mine], processing[mine]
        # A first-in-first-out consumer busier than it can be (utilisation ≥ 1) falls
        # behind for good. Downstream of a saturated emitter the load is exactly 1 and
        # the verdict is a coin toss: the generator does not claim one (None).
        status: str | None = "OK"
        if load >= 1:
            status = "WARN" if c.level == 0 else None
        if failing.get(c.name, 0) >= 0.1:
            status = "ERR"
        if c.name == slow:
            status = "WARN"
        if stall is not None and stall[0] == c.name:
            status = "STALL"
        if stop is not None and stop[0] == c.name:
            status = "STOP"
        per[c.name] = {
            "subject": _subject(c.level), "level": c.level,
            "emits": _subject(c.level + 1) if c.slot == 0 and c.level + 1 < depth else None,
            "deliveries": int(mine.sum()), "errors": int(dv["failed"][mine].sum()),
            **{f"queue_p{k}_s": float(np.percentile(q, k)) for k in (50, 95, 99)},
            "queue_max_s": float(q.max()) if len(q) else None,
            **{f"processing_p{k}_s": float(np.percentile(p, k)) for k in (50, 95)},
            "status": status,
        }
    return {
        "flows": n_flows + len(orphan_ids) + (1 if cycle_ids else 0),
        "regular_flows": n_flows,
        "events": int(n_regular + len(orphan_ids) + len(cycle_ids)),
        "deliveries": int(len(dv_event)),
        "depth": depth,
        "consumers": per,
        "orphans": orphan_ids,
        "cycle": cycle_ids,
        "skewed": {k: v for k, v in skew.items() if v},
        "utilisation": load,
        "critical_paths": _critical_truth(dv, pub, dv_event, index, emitted_row, ids,
                                          min(n_flows, 5)),
    }


def _critical_truth(dv, pub, dv_event, index, emitted_row, ids, flows: int) -> dict[str, Any]:
    """For the first flows: end time, and the chain (event, consumer) that ends last."""
    out = {}
    depth = index.shape[0]
    for f in range(flows):
        events = [int(index[k, f]) for k in range(depth) if index[k, f] >= 0]
        rows = np.flatnonzero(np.isin(dv_event, events))
        last = int(rows[np.argmax(dv["done"][rows])])
        path = []
        row = last
        while row >= 0:
            event = int(dv_event[row])
            path.append((str(ids[event]), str(dv["consumer"][row])))
            row = int(emitted_row[event])
        path.reverse()
        root = events[0]
        out[str(ids[root])] = {
            "flow": f"flow-{f:08x}",
            "end_ns": int(dv["done"][last]),
            "duration_s": (int(dv["done"][last]) - int(pub[root])) / NS,
            "path": path,
        }
    return out


@dataclass(frozen=True, slots=True)
class Score:
    """How a diagnosis did against the faults injected into a demo run.

    ``rank``: position (1 = first) of the injected fault among the root-cause findings
    (0: not found); ``iou``: overlap (intersection over union) of that finding's window
    with the injected one; ``alarms``: warning and critical findings in all."""

    rank: int
    iou: float
    alarms: int
    top: str


def score_diagnosis(trace: Trace, findings: Any = None) -> Score:
    """Score ``trace.diagnose()`` (or ``findings``) against the first fault recorded in
    ``trace.metadata["injected"]`` by :func:`evtkit.demo.run_shop`: the root-cause finding
    naming the injected service (or queue-group worker) and the finding kind
    :data:`evtkit.demo.FINDINGS` maps the fault to. A run without faults scores rank 0."""
    from .demo import FINDINGS

    found = trace.diagnose() if findings is None else findings
    alarms = int(found["severity"].isin(["critical", "warning"]).sum())
    roots = found[found["root_cause"]].reset_index(drop=True)
    top = ""
    if len(roots):
        first = roots.iloc[0]
        where = next((str(first[c]) for c in ("service", "subject") if pd.notna(first[c])), "")
        worker = f" ({first['worker']})" if pd.notna(first["worker"]) else ""
        top = f"{first['kind']} {where}{worker}".strip()
    injected = trace.metadata.get("injected") or []
    if not injected:
        return Score(0, 0.0, alarms, top)
    fault = injected[0]
    names = fill(roots["service"], "") + "," + fill(roots["worker"], "")
    hit = (roots["kind"] == FINDINGS[fault["kind"]]) & names.str.split(",").apply(
        lambda parts: fault["service"] in [p.strip() for p in parts])
    if not hit.any():
        return Score(0, 0.0, alarms, top)
    at = int(np.flatnonzero(hit.to_numpy())[0])
    start, end = roots["start"].iloc[at].value, roots["end"].iloc[at].value
    overlap = max(0, min(end, fault["end"]) - max(start, fault["start"]))
    union = max(end, fault["end"]) - min(start, fault["start"])
    return Score(at + 1, overlap / union if union > 0 else 1.0, alarms, top)
