"""Problems in a trace, reported rather than hidden.

``trace.problems()`` lists, one row per finding, most severe first:

``cycle``       causation ids that form a loop (detected, never followed forever)
``clock_skew``  an observer saw events before they were published: clocks disagree
``failed``      handler calls that raised, per consumer (with the most common error)
``dropped``     messages lost before a handler, per consumer
``orphan``      events whose cause is not in the trace
``unreceived``  events no consumer received, per subject (only when some consumer was
                recorded at all; a tap-only trace has no consumers to miss)
``gave_up``     JetStream stopped redelivering messages to a consumer: max deliveries
                reached (MAX_DELIVERIES advisories), per stream and consumer
``terminated``  messages a JetStream consumer terminated (MSG_TERMINATED advisories)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from .._units import duration
from ..schema import fill

if TYPE_CHECKING:
    from ..trace import Trace

__all__ = ["problems"]

COLUMNS = ["problem", "count", "subject", "consumer", "observer", "event_id", "detail"]


def problems(trace: Trace) -> pd.DataFrame:
    """Everything that looks wrong in ``trace``; columns ``problem, count, subject,
    consumer, observer, event_id`` (an example) ``, detail`` (in words, with numbers)."""
    rows: list[dict[str, Any]] = []
    lin = trace.lineage()
    ev = trace.events
    dv = trace.deliveries

    cycle = lin[lin["link"] == "cycle"]
    if len(cycle):
        cause_of = dict(zip(lin["event_id"], lin["cause_id"], strict=True))
        for loop in _loops(cycle["event_id"].tolist(), cause_of):
            rows.append(_row("cycle", len(loop), event_id=loop[0], detail=(
                f"causation ids form a cycle: {' → '.join([*loop, loop[0]])} (each causes "
                "the next)")))

    published = trace.observations.query("kind == 'publish'")["event_id"]
    twice = published[published.duplicated()].unique()
    if len(twice):
        rows.append(_row("duplicate_id", len(twice), event_id=twice[0], detail=(
            f"{len(twice)} event ids were published more than once (e.g. {twice[0]}): their "
            "rows merged into one event each, so their deliveries and times are unreliable")))

    early = dv[(dv["received_at"] < dv["published_at"]) | (dv["queue_s"] < 0)]
    for observer, group in early.groupby("observer", sort=True):
        worst = (group["published_at"] - group[["received_at", "started_at"]].min(axis=1))
        early_s = worst.dt.total_seconds().max()
        rows.append(_row(
            "clock_skew", len(group), observer=observer, event_id=group["event_id"].iloc[0],
            consumer=", ".join(sorted(set(group["consumer"]))),
            detail=(f"observer {observer!r} saw {len(group)} events before they were "
                    f"published (up to {duration(early_s)} early): its clock and the publishers' "
                    "disagree, so their latencies are not trustworthy"),
        ))

    for kind, outcome in (("failed", "error"), ("dropped", "dropped")):
        bad = dv[dv["outcome"] == outcome]
        for consumer, group in bad.groupby("consumer", sort=True):
            total = int((dv["consumer"] == consumer).sum())
            common = group["error"].value_counts()
            example = f"; most common: {common.index[0]}" if len(common) else ""
            rows.append(_row(kind, len(group), consumer=consumer,
                             subject=", ".join(sorted(set(group["subject"].dropna()))),
                             event_id=group["event_id"].iloc[0],
                             detail=f"{len(group)} of {total} deliveries to {consumer!r} "
                                    f"{'failed' if kind == 'failed' else 'were dropped'}"
                                    f"{example}"))

    orphans = lin[lin["link"] == "orphan"]
    if len(orphans):
        rows.append(_row("orphan", len(orphans), event_id=orphans["event_id"].iloc[0],
                         detail=f"{len(orphans)} events name a cause that is not in the trace "
                                f"(e.g. {orphans['cause_id'].iloc[0]}): it happened before "
                                "the capture, or elsewhere"))

    if len(dv):
        lonely = ev[ev["deliveries"] == 0]
        for subject, group in lonely.groupby(fill(lonely["subject"], "?"), sort=True):
            rows.append(_row("unreceived", len(group), subject=subject,
                             event_id=group["event_id"].iloc[0],
                             detail=f"{len(group)} events on {subject!r} reached no recorded "
                                    "consumer"))
    advisories = trace.advisories
    for kind, advisory, what in (("gave_up", "MAX_DELIVERIES", "reached max deliveries: "
                                  "JetStream will not redeliver them"),
                                 ("terminated", "MSG_TERMINATED", "were terminated by the "
                                  "consumer: JetStream will not redeliver them")):
        hits = advisories[advisories["advisory"] == advisory]
        for (stream, consumer), group in hits.groupby(
                [fill(hits["stream"], "?"), fill(hits["consumer"], "?")], sort=True):
            seqs = ", ".join(str(x) for x in group["stream_seq"].dropna().head(5))
            rows.append(_row(kind, len(group), consumer=consumer,
                             detail=f"{len(group)} messages of stream {stream!r} for consumer "
                                    f"{consumer!r} {what} (stream sequences {seqs}...)"))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for column in ("problem", "subject", "consumer", "observer", "event_id", "detail"):
        frame[column] = frame[column].astype("str")
    frame["count"] = frame["count"].astype("int64")
    return frame


def _loops(members: list[str], cause_of: dict[str, Any]) -> list[list[str]]:
    """Each causation loop among ``members`` once, in effect order (each causes the next),
    starting at the member that comes first in the trace."""
    first = {event: i for i, event in enumerate(members)}
    done: set[str] = set()
    loops = []
    for start in members:
        path: list[str] = []
        node: Any = start
        while isinstance(node, str) and node not in done and node not in path:
            path.append(node)
            node = cause_of.get(node)
        done.update(path)
        if isinstance(node, str) and node in path:  # a loop not reported yet
            backwards = path[path.index(node):]  # each caused by the next
            loop = [backwards[0], *backwards[:0:-1]]
            turn = min(range(len(loop)), key=lambda i: first.get(loop[i], len(first)))
            loops.append(loop[turn:] + loop[:turn])
    return loops


def _row(problem: str, count: int, *, subject: Any = None, consumer: Any = None,
         observer: Any = None, event_id: Any = None, detail: str = "") -> dict[str, Any]:
    return {"problem": problem, "count": int(count), "subject": subject,
            "consumer": consumer, "observer": observer, "event_id": event_id,
            "detail": detail}
