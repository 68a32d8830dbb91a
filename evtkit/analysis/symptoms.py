"""The diagnosis rules that follow the flow: bursts from producers, lag that arrived with
the input, losses that follow a failing handler, subjects nobody received, JetStream
consumers known only from the server's samples, and the problems found elsewhere (see
:mod:`evtkit.analysis.diagnose` for the rules in words)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._units import count, duration
from ..schema import fill
from .finding import LAGGING, NAT, SEVERITIES, Finding, runs
from .problems import CONFORMANCE

if TYPE_CHECKING:
    from .consumer import Consumer
    from .diagnose import Diagnosis

__all__ = ["bursts", "clocks_ahead", "drops", "from_problems", "gave_up", "lagged", "redeliveries",
           "server_stalls", "subjects", "upstream"]



def server_stalls(d: Diagnosis) -> None:
    """JetStream consumers that evtkit saw only in the server's samples: a stall is a
    stretch of ``min_duration_s`` or more with messages pending in which the ack floor
    did not move."""
    info = d.evidence.consumer_info
    known = {c.name for c in d.consumers}
    if info.empty:
        return
    info = info.sort_values("ts", kind="stable")
    for (consumer, stream), part in info.groupby(["consumer", "stream"], sort=True):
        if str(consumer) in known:
            continue
        ts = part["ts"].array.asi8
        floor = part["ack_floor"].to_numpy(dtype=np.int64, na_value=0)
        waiting = part["backlog"].to_numpy(dtype=np.int64, na_value=0) > 0
        stuck = waiting & np.concatenate([[True], floor[1:] == floor[:-1]])
        # Its own pace: how long the ack floor usually takes to move.
        moved = ts[1:][floor[1:] != floor[:-1]]
        pace = float(np.median(np.diff(moved))) / 1e9 if len(moved) > 2 else 0.0
        limit = max(d.rules.min_duration_s, d.rules.stall_factor / 5 * pace)
        for lo, hi in runs(stuck):
            begin, end = int(ts[max(lo - 1, 0)]), int(ts[hi - 1])
            if (end - begin) / 1e9 < limit:
                continue
            backlog = int(part["backlog"].iloc[lo:hi].max())
            f = d.add(Finding("stalled_consumer", "critical", begin, end,
                                 service=str(consumer), consumer=str(consumer),
                                 peak_backlog=float(backlog), affected=backlog))
            f.evidence = (f"{consumer} (JetStream, stream {stream}) made no progress for "
                          f"{duration((end - begin) / 1e9)} from {d.at(begin)} while "
                          f"the server held {count(backlog)} "
                          f"message{'s' if backlog != 1 else ''} for it (its ack floor "
                          "did not move)")


def bursts(d: Diagnosis) -> list[Finding]:
    r = d.rules
    out = []
    for (source, subject), times in d.evidence.root_publishes():
        t = np.sort(times, kind="stable")
        t = t[t != NAT]
        if len(t) < r.min_burst:
            continue
        usual = len(t) / max((t[-1] - t[0]) / 1e9, r.burst_s)
        # A burst: events inside some stretch of min_burst events that came burst_factor ×
        # faster than usual (a pause in the middle of a burst does not split it).
        k = r.min_burst
        dense = (t[k - 1:] - t[:len(t) - k + 1]) <= k * 1e9 / (r.burst_factor * usual)
        marks = np.zeros(len(t) + 1, np.int64)
        np.add.at(marks, np.flatnonzero(dense), 1)
        np.add.at(marks, np.flatnonzero(dense) + k, -1)
        close = 1e9 / (r.burst_factor * usual)
        stretches = []
        for run_lo, run_hi in runs(np.cumsum(marks)[:-1] > 0):
            # A pause longer than a whole dense window's allowance ends a stretch.
            cuts = np.flatnonzero(np.diff(t[run_lo:run_hi]) > k * close) + run_lo + 1
            for lo, hi in zip([run_lo, *cuts], [*cuts, run_hi], strict=True):
                while hi - lo > 1 and t[lo + 1] - t[lo] > close:  # trim ordinary events
                    lo += 1                                         # at the edges
                while hi - lo > 1 and t[hi - 1] - t[hi - 2] > close:
                    hi -= 1
                if hi - lo >= k:
                    stretches.append((lo, hi))
        inside = sum(hi - lo for lo, hi in stretches)
        if len(stretches) >= 5 and inside > 0.2 * len(t):
            continue  # dense stretches again and again: how this producer sends (batches)
        # Its usual rate without the bursts themselves.
        usual = max(len(t) - inside, 1) / max((t[-1] - t[0]) / 1e9, r.burst_s)
        for lo, hi in stretches:
            begin, end, count = int(t[lo]), int(t[hi - 1]), hi - lo
            rate = count / max((end - begin) / 1e9, 1e-6)
            if rate < r.burst_factor * usual:
                continue
            f = Finding("producer_burst", "info", begin, end, service=str(source),
                        subject=str(subject), affected=count, slowdown=rate / usual)
            f.evidence = (f"{source} published {count} {subject} events in "
                          f"{duration((end - begin) / 1e9)} from {d.at(begin)} "
                          f"({f.slowdown:,.0f}× its usual {usual:.3g}/s)")
            out.append(d.add(f))
    return out


def _late(d: Diagnosis, c: Consumer) -> np.ndarray:
    """Positions of ``c``'s rows whose message waited ``lag_limit`` or more for its handler."""
    pub = c.rows["published_at"].array.asi8
    start = c.rows["started_at"].array.asi8
    ok = (pub != NAT) & (start != NAT)
    return np.flatnonzero(np.where(ok, (start - pub) / 1e9, 0.0) >= d.lag_limit(c))


def has_symptoms(d: Diagnosis, c: Consumer) -> bool:
    """Whether :func:`lagged`, :func:`drops` or :func:`redeliveries` can find anything in
    ``c``'s rows (a diagnosis on disk reads them a second time only then). Their first
    tests, repeated: a change to when one of them returns early belongs here too."""
    rows = c.rows
    return (len(_late(d, c)) >= d.rules.min_lagged or bool((rows["outcome"] == "dropped").any())
            or bool((rows["delivery_count"].fillna(1) > 1).any()))


def lagged(d: Diagnosis, c: Consumer, roots: list[Finding], bursts: list[Finding]) -> None:
    """Stretches where messages waited long for a handler that kept its pace."""
    r = d.rules
    late = _late(d, c)
    if len(late) < r.min_lagged:
        return
    pub = c.rows["published_at"].array.asi8
    start = c.rows["started_at"].array.asi8
    order = late[np.argsort(pub[late], kind="stable")]
    split = np.flatnonzero(np.diff(pub[order]) > r.link_s * 1e9) + 1
    slack = int(r.link_s * 1e9)
    own = [f for f in roots if f.consumer == c.name and f.kind in LAGGING]
    upstream = upstream_of(d, c)
    reaching = root_subjects(d, c)  # its own subjects and those of the flows reaching it
    for part in np.split(order, split):
        if len(part) < r.min_lagged:
            continue
        begin, end = int(pub[part].min()), int(start[part].max())
        if any(f.overlaps(begin, end, slack) for f in own):
            continue
        f = Finding("backlog_growth", "warning", begin, end, service=c.name,
                     consumer=c.name)
        d.measure(c, f)
        if f.peak_age_s >= r.critical_age_s:
            f.severity = "critical"
        # Upstream consumers' findings (consumers are visited upstream first, so their
        # own backlog symptoms are known), then bursts into the flows that reach it.
        causes = [g for g in d.found if g.consumer in upstream
                  and g.kind in (*LAGGING, "backlog_growth")]
        causes += [b for b in bursts if b.subject in reaching or b.service in upstream]
        # A cause began before its symptom did (give or take the link slack).
        causes = [g for g in causes if g.overlaps(begin, end, slack) and g.start <= begin + slack]
        why = "its input outran it"
        if causes:
            cause = max(causes, key=lambda g: min(g.end, end) - max(g.start, begin))
            f.blame(cause)
            if cause.kind == "producer_burst":
                cause.severity = "warning"
                why = f"its input arrived in a burst from {cause.service}"
            elif cause.kind == "backlog_growth":
                why = (f"its input arrived late and bunched from {cause.consumer}, which "
                       "was behind itself")
            elif cause.kind == "slow_consumer":
                why = f"its input arrived late and bunched from {cause.consumer}, which was slow"
            else:
                why = f"its input arrived in a rush after {cause.consumer} recovered"
        d.add(f)
        f.evidence = (f"the backlog of {c.name} reached {int(f.peak_backlog)} from "
                      f"{d.at(begin)} for {duration((end - begin) / 1e9)}; messages "
                      f"waited up to {duration(f.peak_age_s)} while its handler kept its "
                      f"typical {duration(c.typical)}: {why}")


def upstream_of(d: Diagnosis, c: Consumer) -> set[str]:
    """Consumers that emit, directly or further up, the subjects ``c`` receives."""
    if c.name in d.upstream:
        return d.upstream[c.name]
    emitted = d.emitters()
    inputs: dict[str, list[str]] = {x.name: x.subjects for x in d.consumers}
    seen: set[str] = set()
    todo = [c.name]
    while todo:
        for subject in inputs.get(todo.pop(), []):
            for up in emitted.get(subject, set()) - seen:
                seen.add(up)
                todo.append(up)
    seen.discard(c.name)
    d.upstream[c.name] = seen
    return seen


def root_subjects(d: Diagnosis, c: Consumer) -> set[str]:
    """Subjects of root events whose flows reach ``c`` (through the emitters above it)."""
    up = upstream_of(d, c)
    return {s for x in d.consumers if x.name in up or x.name == c.name
            for s in x.subjects}


def drops(d: Diagnosis, c: Consumer, roots: list[Finding]) -> None:
    rows = c.rows[c.rows["outcome"] == "dropped"]
    if rows.empty:
        return
    at = rows["received_at"].array.asi8
    at = at[at != NAT]
    begin, end = (int(at.min()), int(at.max())) if len(at) else (d.t0, d.t_end)
    f = d.add(Finding("dropped_messages", "critical", begin, end, service=c.name,
                          consumer=c.name, lost=len(rows), affected=len(rows)))
    total = len(c.rows)
    f.evidence = (f"{len(rows)} of {total} messages for {c.name} were dropped before its "
                  f"handler from {d.at(begin)} for {duration((end - begin) / 1e9)} "
                  "(pending limits exceeded)")
    blame_own(d, f, roots, "because its handler fell behind")


def blame_own(d: Diagnosis, f: Finding, roots: list[Finding], because: str) -> None:
    slack = int(d.rules.link_s * 1e9)
    own = [g for g in roots if g.consumer == f.consumer and g.overlaps(f.start, f.end,
                                                                        slack)]
    if own:
        cause = max(own, key=lambda g: SEVERITIES.index(g.severity) * -1)
        f.blame(cause)
        f.evidence += f" {because} ({cause.kind.replace('_', ' ')})"
        cause.lost += f.lost


def redeliveries(d: Diagnosis, c: Consumer, roots: list[Finding]) -> None:
    again = c.rows[c.rows["delivery_count"].fillna(1) > 1]
    if again.empty:
        return
    at = again["received_at"].array.asi8
    f = d.add(Finding("redelivery", "info", int(at.min()), int(at.max()),
                          service=c.name, consumer=c.name, affected=len(again)))
    f.evidence = (f"JetStream delivered {again['seq'].nunique()} messages to {c.name} "
                  f"again ({len(again)} redeliveries) from {d.at(f.start)}")
    blame_own(d, f, roots, "after its handler failed")


def gave_up(d: Diagnosis, roots: list[Finding]) -> None:
    adv = d.evidence.advisories
    for advisory, kind in (("MAX_DELIVERIES", "gave_up"), ("MSG_TERMINATED", "terminated")):
        hits = adv[adv["advisory"] == advisory]
        for (stream, consumer), part in hits.groupby([fill(hits["stream"], "?"),
                                                      fill(hits["consumer"], "?")]):
            at = part["ts"].array.asi8
            f = d.add(Finding(kind, "critical" if kind == "gave_up" else "info",
                                  int(at.min()), int(at.max()), service=str(consumer),
                                  consumer=str(consumer), lost=len(part),
                                  affected=len(part)))
            what = ("JetStream gave up on" if kind == "gave_up" else
                    "the consumer terminated")
            f.evidence = (f"{what} {len(part)} messages of stream {stream} for "
                          f"{consumer} from {d.at(f.start)}: they will not be "
                          "redelivered")
            if kind == "gave_up":
                blame_own(d, f, roots, "after its handler failed every delivery")


def upstream(d: Diagnosis, roots: list[Finding]) -> None:
    """Consumers fed by a lagging consumer get their input late: a symptom, noted."""
    for c in d.consumers:
        for g in roots:
            if g.kind not in LAGGING or g.consumer not in direct_upstream(d, c):
                continue
            if g.kind == "stopped_consumer" and g.worker:  # the rest of its group went on
                continue
            if any(f.cause is g and f.consumer == c.name for f in d.found):
                continue
            f = d.add(Finding("upstream_slowdown", "info", g.start, g.end,
                                  service=c.name, consumer=c.name))
            f.blame(g)
            f.evidence = (f"the input of {c.name} from {g.consumer} arrived late or not "
                          f"at all "
                          f"from {d.at(g.start)} for "
                          f"{duration((g.end - g.start) / 1e9)}: {g.consumer} was "
                          f"{g.kind.split('_')[0]}")


def direct_upstream(d: Diagnosis, c: Consumer) -> set[str]:
    emitted = d.emitters()
    return {up for subject in c.subjects for up in emitted.get(subject, set())} - {c.name}


def subjects(d: Diagnosis, roots: list[Finding]) -> None:
    for row in d.evidence.coverage().itertuples(index=False):
        name, lonely, total = row.subject, int(row.lonely), int(row.events)
        if not lonely:
            continue
        begin, end = int(row.begin), int(row.end)
        if lonely == total:
            f = d.add(Finding("no_subscriber", "info", begin, end, subject=str(name),
                                  affected=lonely))
            f.evidence = (f"no recorded consumer received {name} ({lonely} events): "
                          "normal at the end of a chain, or its consumer is not recorded")
            continue
        f = d.add(Finding("unreceived", "warning", begin, end, subject=str(name),
                              lost=lonely, affected=lonely))
        f.evidence = (f"{lonely} of {total} events on {name} reached no consumer, "
                      f"from {d.at(begin)}")
        slack = int(d.rules.link_s * 1e9)
        stops = [g for g in roots if g.kind == "stopped_consumer"
                 and g.overlaps(begin, end, slack)]
        if stops:
            f.blame(stops[0])
            f.severity = "info"
            f.evidence += f", while {stops[0].consumer} was stopped"


AHEAD_S = 0.01
"""An observer whose every receive comes at least this long after the publish (and 20 times
the usual floor) is taken to have a clock running ahead."""


def clocks_ahead(d: Diagnosis) -> dict[str, int]:
    """Observers that saw every event at least ``AHEAD_S`` (and 20 times the usual
    floor) after its publish: their clocks run ahead (or the network to them is that
    slow). Their times are taken back by that much for the rules, and it is a finding."""
    floor = d.evidence.floors()
    if floor.empty:
        return {}
    usual = float(floor.median())
    ahead = floor[(floor >= AHEAD_S * 1e9) & (floor >= 20 * max(usual, 0))]
    for observer, by in ahead.items():
        f = d.add(Finding("clock_skew", "warning", d.t0, d.t_end,
                             service=str(observer),
                             affected=d.evidence.received_by(str(observer))))
        f.evidence = (f"{observer} saw every event at least {duration(by / 1e9)} after "
                      f"it was published, where the others see them within "
                      f"{duration(usual / 1e9)}: its clock likely runs ahead by about "
                      "that much (or the network to it is that slow); its waits are "
                      "taken as that much shorter")
    return {str(k): int(v) for k, v in ahead.items()}


CLOCK_TOLERANCE_S = 0.001
"""Clocks that disagree by less than this are noted (``info``), not a warning: hosts
synchronised by NTP on one network usually agree to within a millisecond."""


def from_problems(d: Diagnosis) -> None:
    kinds = {"clock_skew": "warning", "cycle": "warning", "duplicate_id": "warning",
             "orphan": "info", **CONFORMANCE}
    problems = d.evidence.problems()
    for row in problems.itertuples(index=False):
        if row.problem not in kinds:
            continue
        f = d.add(Finding(str(row.problem), kinds[str(row.problem)], d.t0,
                              d.t_end, affected=int(row.count), evidence=str(row.detail)))
        f.consumer = None if pd.isna(row.consumer) or row.consumer in ("nan", "None") \
            else str(row.consumer)
        f.service = f.consumer or (None if row.observer in ("nan", "None") or
                                   pd.isna(row.observer) else str(row.observer))
        if f.kind == "clock_skew" and d.evidence.early_s(str(row.observer)) < \
                CLOCK_TOLERANCE_S:
            f.severity = "info"  # within what clocks on one network agree to
    gaps = d.evidence.gaps
    for row in gaps.itertuples(index=False):
        begin = int(pd.Timestamp(row.start).value)
        end = d.t_end if pd.isna(row.end) else int(pd.Timestamp(row.end).value)
        f = d.add(Finding("disconnect_gap", "warning", begin, end,
                              service=str(row.observer)))
        f.evidence = (f"{row.observer} was disconnected for "
                      f"{duration((end - begin) / 1e9)} from {d.at(begin)}: what it "
                      "would have seen meanwhile is missing")


