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

With event definitions attached to the trace (``ek.load(path, spec=...)``,
``trace.with_spec(spec)``), what :meth:`Trace.conformance <evtkit.trace.Trace.conformance>`
finds too (see :data:`CONFORMANCE`):

``contract_violation``   events that break their message's schema, per message type (the
                         first one's first violation: where and what)
``undeclared_subject``   events on subjects no channel declares, per subject shape
``undeclared_producer``  a sender the definitions do not declare on a channel, per channel
``undeclared_consumer``  a receiver the definitions do not declare on a channel
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from .._units import clock, count, duration, percent
from ..schema import fill

if TYPE_CHECKING:
    from ..trace import Trace
    from .conformance import Conformance

__all__ = ["CONFORMANCE", "advisory_rows", "clock_row", "conformance_rows", "cycle_rows",
           "duplicate_rows", "orphan_row", "outcome_row", "problems", "to_frame",
           "unreceived_row"]

COLUMNS = ["problem", "count", "subject", "consumer", "observer", "event_id", "detail"]

CONFORMANCE = {"contract_violation": "warning", "undeclared_subject": "warning",
               "undeclared_producer": "warning", "undeclared_consumer": "warning"}
"""The problems found against the trace's event definitions, and the severity of the
finding each becomes in ``diagnose()``."""


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
        rows += cycle_rows(_loops(cycle["event_id"].tolist(), cause_of))

    obs = trace.observations  # (a mask, not query(): that copies every column)
    published = obs["event_id"][(obs["kind"] == "publish").to_numpy()]
    rows += duplicate_rows(list(published[published.duplicated()].unique()))

    early = dv[(dv["received_at"] < dv["published_at"]) | (dv["queue_s"] < 0)]
    for observer, group in early.groupby("observer", sort=True, observed=True):
        worst = (group["published_at"] - group[["received_at", "started_at"]].min(axis=1))
        rows.append(clock_row(str(observer), len(group), group["event_id"].iloc[0],
                              sorted(set(group["consumer"])),
                              worst.dt.total_seconds().max()))

    for kind, outcome in (("failed", "error"), ("dropped", "dropped")):
        bad = dv[dv["outcome"] == outcome]
        for consumer, group in bad.groupby("consumer", sort=True, observed=True):
            common = group["error"].value_counts()
            rows.append(outcome_row(kind, str(consumer), len(group),
                                    int((dv["consumer"] == consumer).sum()),
                                    sorted(set(group["subject"].dropna())),
                                    group["event_id"].iloc[0],
                                    common.index[0] if len(common) else None))

    orphans = lin[lin["link"] == "orphan"]
    if len(orphans):
        rows.append(orphan_row(len(orphans), orphans["event_id"].iloc[0],
                               orphans["cause_id"].iloc[0]))

    if len(dv):
        lonely = ev[ev["deliveries"] == 0]
        for subject, group in lonely.groupby(fill(lonely["subject"], "?"), sort=True,
                                             observed=True):
            rows.append(unreceived_row(str(subject), len(group), group["event_id"].iloc[0]))
    rows += advisory_rows(trace.advisories)
    if trace.spec is not None:
        rows += conformance_rows(trace.conformance(trace.spec))
    return to_frame(rows)


# -- the rows, in words: shared by every way of finding them (in memory, on an engine) --------


def cycle_rows(loops: list[list[str]]) -> list[dict[str, Any]]:
    """One row per causation loop (each in effect order)."""
    return [_row("cycle", len(loop), event_id=loop[0], detail=(
        f"causation ids form a cycle: {' → '.join([*loop, loop[0]])} (each causes "
        "the next)")) for loop in loops]


def duplicate_rows(twice: list[str]) -> list[dict[str, Any]]:
    """A row for event ids published more than once (``twice``, in capture order)."""
    if not twice:
        return []
    return [_row("duplicate_id", len(twice), event_id=twice[0], detail=(
        f"{len(twice)} event ids were published more than once (e.g. {twice[0]}): their "
        "rows merged into one event each, so their deliveries and times are unreliable"))]


def clock_row(observer: str, n: int, event_id: Any, consumers: list[str],
              early_s: float) -> dict[str, Any]:
    """``observer`` saw ``n`` events before they were published, up to ``early_s``."""
    return _row(
        "clock_skew", n, observer=observer, event_id=event_id,
        consumer=", ".join(consumers),
        detail=(f"observer {observer!r} saw {n} events before they were "
                f"published (up to {duration(early_s)} early): its clock and the publishers' "
                "disagree, so their latencies are not trustworthy"))


def outcome_row(kind: str, consumer: str, n: int, total: int, subjects: list[str],
                event_id: Any, common: Any) -> dict[str, Any]:
    """``n`` of ``total`` deliveries to ``consumer`` failed (``kind="failed"``, with the
    most ``common`` error) or were dropped."""
    example = f"; most common: {common}" if common is not None else ""
    return _row(kind, n, consumer=consumer, subject=", ".join(subjects), event_id=event_id,
                detail=f"{n} of {total} deliveries to {consumer!r} "
                       f"{'failed' if kind == 'failed' else 'were dropped'}{example}")


def orphan_row(n: int, event_id: Any, cause_id: Any) -> dict[str, Any]:
    """``n`` events name a cause not in the trace (``event_id`` names ``cause_id``)."""
    return _row("orphan", n, event_id=event_id,
                detail=f"{n} events name a cause that is not in the trace "
                       f"(e.g. {cause_id}): it happened before the capture, or elsewhere")


def unreceived_row(subject: str, n: int, event_id: Any) -> dict[str, Any]:
    """``n`` events on ``subject`` reached no recorded consumer."""
    return _row("unreceived", n, subject=subject, event_id=event_id,
                detail=f"{n} events on {subject!r} reached no recorded consumer")


def advisory_rows(advisories: pd.DataFrame) -> list[dict[str, Any]]:
    """Messages JetStream gave up on or that were terminated, per stream and consumer."""
    rows = []
    for kind, advisory, what in (("gave_up", "MAX_DELIVERIES", "reached max deliveries: "
                                  "JetStream will not redeliver them"),
                                 ("terminated", "MSG_TERMINATED", "were terminated by the "
                                  "consumer: JetStream will not redeliver them")):
        hits = advisories[advisories["advisory"] == advisory]
        for (stream, consumer), group in hits.groupby(
                [fill(hits["stream"], "?"), fill(hits["consumer"], "?")], sort=True,
                observed=True):
            seqs = ", ".join(str(x) for x in group["stream_seq"].dropna().head(5))
            rows.append(_row(kind, len(group), consumer=consumer,
                             detail=f"{len(group)} messages of stream {stream!r} for consumer "
                                    f"{consumer!r} {what} (stream sequences {seqs}...)"))
    return rows


def conformance_rows(result: Conformance) -> list[dict[str, Any]]:
    """The failing findings of a conformance check (:data:`CONFORMANCE`), in words: per
    message type, how many of its events break its schema and the first one's first
    violation; per undeclared subject, producer and consumer, how many events, when."""
    spec, res = result.spec, result.events
    title = f"{spec.title!r} {spec.version}"
    rows = []
    for row in result.summary().itertuples(index=False):
        n, when = int(row.count), _when(row.first_seen, row.last_seen)
        if row.kind == "violations":
            on = (res["channel"] == row.channel) & (res["message"] == row.message)
            first = res.loc[(res["event_id"] == row.event_id) & on, "violations"]
            found = first.iloc[0][0] if len(first) and first.iloc[0] else None
            where = ("" if found is None else
                     f"; the first, {row.event_id}, at {found['part']} "
                     f"{found['path'] or '(as a whole)'}: {found['message']}")
            total = int(on.sum())
            rows.append(_row("contract_violation", n, subject=row.subject,
                             event_id=row.event_id, detail=(
                f"{count(n)} of {count(total)} {row.message} events on channel "
                f"{row.channel!r} ({percent(n / total)}) {'breaks' if n == 1 else 'break'} "
                f"the schema {title} "
                f"declares for it, {when}{where}")))
        elif row.kind == "undeclared_subject":
            example = str(res.loc[res["event_id"] == row.event_id, "subject"].iloc[0])
            also = f" (e.g. {example})" if example != row.subject else ""
            rows.append(_row("undeclared_subject", n, subject=row.subject,
                             event_id=row.event_id, detail=(
                f"{_events(n)} on {row.subject!r}{also}, {when}, "
                f"{'matches' if n == 1 else 'match'} no channel that {title} declares")))
        elif row.kind in ("undeclared_producer", "undeclared_consumer"):
            sends = row.kind == "undeclared_producer"
            declared = (spec.producers if sends else spec.consumers)(str(row.channel))
            who = {"observer" if sends else "consumer": row.application}
            rows.append(_row(row.kind, n, subject=row.subject, event_id=row.event_id, **who,
                             detail=(
                f"{row.application!r} {'published' if sends else 'received'} {_events(n)} "
                f"on channel {row.channel!r} ({row.subject}), {when}, where {title} declares "
                f"only {', '.join(repr(a) for a in declared)} to "
                f"{'send' if sends else 'receive'}")))
    return rows


def _events(n: int) -> str:
    return f"{count(n)} event{'' if n == 1 else 's'}"


def _when(first: Any, last: Any) -> str:
    """``at 17:46:42.000`` or ``from 17:46:42.000 to 17:46:43.000 (1 s)``."""
    if pd.isna(first):
        return "at a time not recorded"
    if first == last:
        return f"at {clock(first)}"
    return f"from {clock(first)} to {clock(last)} ({duration((last - first).total_seconds())})"


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The problems frame of ``rows``."""
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
