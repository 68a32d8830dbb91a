"""The slowest flows and where each spent its time.

::

    trace.slowest_flows()        # one row per slow flow: when, what, and its bottleneck

A flow's *bottleneck* is the consumer and the kind of time (waiting in ``queue``, or its
handler's ``processing``) that took the largest part of the flow's critical path. Flows are
ranked by duration; besides the slowest ones, the slowest flow that started inside each
warning or critical root-cause finding of :func:`~evtkit.analysis.diagnose.diagnose` is
examined too, so every incident gets a flow that shows it. ``representative`` marks the
first (slowest) flow of each distinct bottleneck: the ones worth a waterfall.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..schema import fill

if TYPE_CHECKING:
    from ..trace import Trace

__all__ = ["COLUMNS", "slowest_flows"]

COLUMNS = ["correlation_id", "started_at", "start_s", "root_subject", "events", "errors",
           "duration_s", "bottleneck", "bottleneck_kind", "bottleneck_s", "bottleneck_share",
           "finding_id", "representative"]
"""Columns of :func:`slowest_flows`."""


def slowest_flows(trace: Trace, top: int = 10, *, candidates: int = 50) -> pd.DataFrame:
    """The ``top`` slowest flows with their bottlenecks (see the module docstring).

    Columns: ``correlation_id, started_at, start_s`` (seconds from the trace start)
    ``, root_subject, events, errors, duration_s, bottleneck`` (consumer) ``,
    bottleneck_kind`` (queue / processing / publish) ``, bottleneck_s, bottleneck_share``
    (of the critical path) ``, finding_id`` (the diagnosis finding at that consumer whose
    window the flow overlaps, if any) ``, representative``.

    Args:
        top: how many of the slowest flows to list; the slowest flow of each finding is
            added when it is not among them.
        candidates: how many of the slowest flows to examine.
    """
    chains = trace.chains()
    if chains.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    findings = trace.diagnose()
    alarms = findings[findings["root_cause"] & findings["severity"].isin(["critical", "warning"])]
    picked = list(chains["correlation_id"].head(max(top, candidates)))
    paths: dict[str, pd.DataFrame] = {}
    for row in alarms.itertuples(index=False):
        # The slowest flow of the finding's window whose critical path passes its consumer.
        inside = chains[(chains["started_at"] >= row.start) & (chains["started_at"] <= row.end)]
        for flow in inside["correlation_id"].head(20):
            paths[flow] = trace.critical_path(flow)
            if (paths[flow]["consumer"] == row.consumer).any():
                picked.append(flow)
                break
    picked = list(dict.fromkeys(picked))
    by_id = chains.set_index("correlation_id")
    root_subject = trace.events.set_index("event_id")["subject"]
    t0 = trace.observations["ts"].min()
    rows = []
    for flow in picked:
        chain = by_id.loc[flow]
        path = paths[flow] if flow in paths else trace.critical_path(flow)
        where = path.groupby([fill(path["consumer"], ""), "kind"], sort=False)["duration_s"] \
            .sum()
        (consumer, kind), spent = where.idxmax() if len(where) else ("", None), float(
            where.max()) if len(where) else 0.0
        hit = alarms[(alarms["consumer"] == consumer) & (alarms["start"] <= chain["ended_at"])
                     & (alarms["end"] >= chain["started_at"])]
        total = float(path["duration_s"].sum())
        rows.append({
            "correlation_id": flow, "started_at": chain["started_at"],
            "start_s": (chain["started_at"] - t0).total_seconds(),
            "root_subject": root_subject.get(chain["root_event_id"]),
            "events": int(chain["events"]), "errors": int(chain["errors"]),
            "duration_s": float(chain["duration_s"]), "bottleneck": consumer or None,
            "bottleneck_kind": kind, "bottleneck_s": spent,
            "bottleneck_share": spent / total if total > 0 else np.nan,
            "finding_id": hit["finding_id"].iloc[0] if len(hit) else None,
        })
    frame = pd.DataFrame(rows, columns=COLUMNS[:-1])
    frame = frame.sort_values("duration_s", ascending=False, kind="stable")
    keep = frame.head(top)
    extra = frame.iloc[top:]
    extra = extra[extra["finding_id"].notna() & ~extra["finding_id"].isin(keep["finding_id"])]
    frame = pd.concat([keep, extra.drop_duplicates("finding_id")], ignore_index=True)
    frame["representative"] = ~frame.duplicated(["bottleneck", "bottleneck_kind"])
    return frame
