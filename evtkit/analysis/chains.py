"""Causal chains summed up: one row per flow (correlation id) — how many events, deliveries
and consumers, how deep, when it started and ended, the errors in it and how long its
critical path took — from :func:`evtkit.analysis.causal.lineage` and the trace's frames.

Computed on integer arrays, one flow number per event and per delivery, with no sort of
the deliveries and each large temporary gone before the next is made (at 1 M events the
step's peak memory is what a notebook's peak is made of).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._arrow import nullable_ints
from ..schema import utc

if TYPE_CHECKING:
    from ..trace import Trace

__all__ = ["chains"]


def chains(trace: Trace, *, infer: bool = True) -> pd.DataFrame:
    """One row per flow: ``correlation_id, root_event_id, events, consumers, depth,
    started_at, ended_at, duration_s, errors, critical_path_s`` (plus ``deliveries`` and
    ``links_inferred``), longest first.

    ``ended_at`` is when the last handler of the flow finished (or its last event was
    published, if later); ``critical_path_s`` is the time along the causal chain that
    ended last, from its root.
    """
    lin = trace.lineage(infer=infer)
    ev = trace.events
    if ev.empty:
        return pd.DataFrame(columns=_CHAIN_COLUMNS)
    flow_codes, flows = _flows(lin["flow_id"])
    n_flows = len(flows)
    pub = ev["published_at"].array.asi8
    dv = trace.deliveries
    where = trace.delivery_events
    # (a delivery of an event the trace does not know goes to a flow past the last, left
    # out of every count: it was counted in the last event's flow)
    dv_flow = np.where(where >= 0, flow_codes[where], n_flows).astype(flow_codes.dtype)
    started, ended, root_pub = _flow_times(trace, lin, flow_codes, dv_flow, n_flows)
    nat = np.iinfo(np.int64).min
    roots = np.flatnonzero((lin["depth"] == 1).to_numpy(dtype=bool, na_value=False))
    first_root = pd.Series(pub[roots], index=roots).groupby(flow_codes[roots]).idxmin()
    root_pos = np.full(n_flows, -1)
    root_pos[first_root.index.to_numpy()] = first_root.to_numpy()
    depth = lin["depth"].fillna(0).to_numpy(dtype=np.int64)
    max_depth = np.zeros(n_flows, np.int64)
    np.maximum.at(max_depth, flow_codes, depth)
    consumers = _distinct_per_flow(dv_flow, dv["consumer"], n_flows)
    errors = np.bincount(dv_flow[(dv["outcome"] == "error").to_numpy()],
                         minlength=n_flows + 1)[:n_flows]
    started_at, ended_at = utc(started), utc(ended)
    duration = (ended_at - started_at).dt.total_seconds().to_numpy()  # (as the engines')

    # Longest first (no duration last); ties keep the order flows started in. Each column
    # is made in that order (sorting the finished frame held it twice: the peak of
    # chains() at 1 M events).
    order = np.argsort(-duration, kind="stable")
    return pd.DataFrame({
        # (ids are categoricals over all the trace's ids: "str" decodes only these)
        "correlation_id": flows.take(order).astype("str"),
        "root_event_id": ev["event_id"].array.take(root_pos[order], allow_fill=True)
        .astype("str"),
        "events": np.bincount(flow_codes, minlength=n_flows)[order],
        "deliveries": np.bincount(dv_flow, minlength=n_flows + 1)[:n_flows][order],
        "consumers": consumers[order],
        "depth": nullable_ints(max_depth[order], max_depth[order] > 0),
        "started_at": started_at.take(order).reset_index(drop=True),
        "ended_at": ended_at.take(order).reset_index(drop=True),
        "duration_s": duration[order],
        "errors": errors[order],
        "critical_path_s": np.where(root_pub[order] != nat,
                                    (ended[order] - root_pub[order]) / 1e9, np.nan),
        "links_inferred": np.bincount(flow_codes[(lin["link"] == "inferred").to_numpy()],
                                      minlength=n_flows)[order],
    }, columns=_CHAIN_COLUMNS)


def _flows(flow_id: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Each event's flow as a number (flows numbered in order of first appearance; int32
    while they fit) and the flows' ids. A categorical's codes are factorized, not its
    text (a hash table of integers)."""
    if isinstance(flow_id.dtype, pd.CategoricalDtype):
        codes, seen = pd.factorize(flow_id.cat.codes.to_numpy(), use_na_sentinel=False)
        # (a missing flow id, code -1, is a flow of its own, as factorizing text makes it)
        flows = flow_id.cat.categories.take(seen, allow_fill=True)
    else:
        codes, flows = pd.factorize(flow_id, use_na_sentinel=False)
    return codes.astype(np.int32 if len(flows) < 2**31 else np.int64), flows


def _flow_times(trace: Trace, lin: pd.DataFrame, flow_codes: np.ndarray, dv_flow: np.ndarray,
                n_flows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per flow (ns): when it started (its first publish), when it ended (its last publish
    or handler end, whichever is later) and the publish of the root of whatever ended
    last (NaT's integer where unknown). In a function of its own so that its per-delivery
    arrays are gone before the next are made."""
    ev, dv = trace.events, trace.deliveries
    pub = ev["published_at"].array.asi8
    never, nat = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    dv_end = dv["done_at"].array.asi8.copy()  # spans()' ends, in ns
    for fallback in ("started_at", "received_at"):
        missing = dv_end == nat
        dv_end[missing] = dv[fallback].array.asi8[missing]
    started = np.full(n_flows, never)
    np.minimum.at(started, flow_codes, pub)
    last_event = np.full(n_flows, nat)
    np.maximum.at(last_event, flow_codes, pub)
    last_delivery = np.full(n_flows + 1, nat)  # (and the flow past the last: see chains())
    np.maximum.at(last_delivery, dv_flow, dv_end)
    ended = np.maximum(last_event, last_delivery[:n_flows])

    # The root of whatever ended last: its publish time starts the critical path.
    root_row = lin["root_row"].to_numpy()
    last = _last_of(flow_codes, pub, last_event, n_flows)
    end_root = np.where(last >= 0, root_row[last], -1)
    last = _last_of(dv_flow, dv_end, last_delivery, n_flows + 1)[:n_flows]
    later = (last >= 0) & (last_delivery[:n_flows] >= last_event)
    end_root[later] = root_row[trace.delivery_events[last[later]]]
    return started, ended, np.where(end_root >= 0, pub[np.maximum(end_root, 0)], nat)


def _last_of(groups: np.ndarray, values: np.ndarray, greatest: np.ndarray, n: int
             ) -> np.ndarray:
    """Per group, the position of its greatest value (the last position among equals, as
    a stable sort would put it), given each group's ``greatest``; -1 for a group without
    rows. No sort: one comparison and a scatter."""
    at = np.flatnonzero(values == greatest[groups])
    last = np.full(n, -1)
    np.maximum.at(last, groups[at], at)
    return last


def _distinct_per_flow(dv_flow: np.ndarray, consumer: pd.Series, n_flows: int
                       ) -> np.ndarray:
    """How many distinct consumers each flow's deliveries went to (a missing name is
    none; deliveries of the flow past the last are no flow's)."""
    codes = consumer.cat.codes.to_numpy() if isinstance(consumer.dtype, pd.CategoricalDtype) \
        else pd.factorize(consumer)[0]
    named = (codes >= 0) & (dv_flow < n_flows)
    width = int(codes.max(initial=-1)) + 1
    if not width:
        return np.zeros(n_flows, np.int64)
    keys = dv_flow[named].astype(np.int64 if n_flows * width >= 2**31 else np.int32)
    keys *= width
    keys += codes[named]
    if n_flows * width < 1 << 27:  # distinct (flow, consumer) pairs: a table of bits
        seen = np.zeros(n_flows * width, bool)
        seen[keys] = True
        pairs = np.flatnonzero(seen)
    else:
        pairs = pd.unique(keys)
    return np.bincount(pairs // width, minlength=n_flows)


_CHAIN_COLUMNS = ["correlation_id", "root_event_id", "events", "deliveries", "consumers",
                  "depth", "started_at", "ended_at", "duration_s", "errors",
                  "critical_path_s", "links_inferred"]
