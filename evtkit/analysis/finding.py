"""Findings: the closed vocabulary, the frame :func:`~evtkit.analysis.diagnose.diagnose`
returns, and the lag status each finding implies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..schema import utc

__all__ = ["COLUMNS", "KINDS", "SEVERITIES", "Finding", "frame", "headlines", "runs",
           "statuses"]

SEVERITIES = ("critical", "warning", "info")
"""Finding severities, most severe first."""

KINDS = {
    "stalled_consumer": "a handler call hung while messages waited",
    "stopped_consumer": "a consumer stopped receiving its events",
    "slow_consumer": "a handler took several times its typical time",
    "failing_handler": "a handler raised for a share of its calls",
    "dropped_messages": "messages dropped before the handler (pending limits)",
    "gave_up": "JetStream stopped redelivering messages (max deliveries)",
    "redelivery": "JetStream delivered messages more than once",
    "backlog_growth": "messages waited long while the handler kept its pace",
    "producer_burst": "a producer published far above its usual rate",
    "upstream_slowdown": "a consumer's input arrived late from a slow consumer upstream",
    "unreceived": "events on a subject with consumers that reached none",
    "no_subscriber": "a subject nobody recorded received (end of a chain)",
    "clock_skew": "an observer saw events before they were published",
    "disconnect_gap": "a connection was down for a while",
    "cycle": "causation ids form a loop",
    "duplicate_id": "one event id published more than once",
    "orphan": "events whose cause is not in the trace",
    "terminated": "a JetStream consumer terminated messages",
    "contract_violation": "events that break the schema their event definitions declare",
    "undeclared_subject": "events on a subject the event definitions do not declare",
    "undeclared_producer": "a service published where the event definitions do not say so",
    "undeclared_consumer": "a service received where the event definitions do not say so",
}
"""The closed vocabulary of finding kinds."""

COLUMNS = ["finding_id", "severity", "kind", "service", "consumer", "worker", "subject",
           "start", "end", "ongoing", "duration_s", "peak_backlog", "peak_age_s", "slowdown",
           "error_rate", "lost", "affected", "evidence", "root_cause", "caused_by"]
"""Columns of :func:`diagnose`'s frame."""

NAT = np.iinfo(np.int64).min
"""pandas' NaT as int64 nanoseconds."""
HANDLER_KINDS = ("stalled_consumer", "slow_consumer", "stopped_consumer", "failing_handler")
LAGGING = ("stalled_consumer", "slow_consumer", "stopped_consumer")
STATUS = {"stopped_consumer": "STOP", "stalled_consumer": "STALL", "failing_handler": "ERR",
           "gave_up": "ERR", "dropped_messages": "ERR", "slow_consumer": "WARN",
           "backlog_growth": "WARN", "redelivery": "WARN"}



@dataclass(slots=True)
class Finding:
    """One finding while it is being built: times in ns, and the finding it is a symptom of."""

    kind: str
    severity: str
    start: int
    end: int
    evidence: str = ""
    service: str | None = None
    consumer: str | None = None
    worker: str | None = None
    subject: str | None = None
    peak_backlog: float = np.nan
    peak_age_s: float = np.nan
    slowdown: float = np.nan
    error_rate: float = np.nan
    lost: int = 0
    affected: int = 0
    ongoing: bool = False
    cause: Finding | None = None
    finding_id: str = ""

    def overlaps(self, start: int, end: int, slack: int = 0) -> bool:
        return self.start - slack <= end and start <= self.end + slack

    def blame(self, cause: Finding) -> None:
        """Mark this finding a symptom of ``cause``."""
        self.cause = cause


def _seldom_failures(lag: pd.DataFrame) -> str | None:
    """The handler errors no finding reports, in a sentence (None when there are none):
    failures spread too thin for the failing-handler rule are not nothing."""
    from .._units import count, percent

    hit = lag[lag["errors"] > 0].sort_values(["errors", "consumer"], ascending=[False, True])
    if hit.empty:
        return None
    each = [f"{row.consumer} {count(row.errors)} of its {count(row.deliveries)} deliveries "
            f"({percent(row.errors / row.deliveries)})" for row in hit.head(3).itertuples()]
    more = f" and {count(len(hit) - 3)} more consumers" if len(hit) > 3 else ""
    return (f"No warning or critical finding, but handlers failed {count(hit['errors'].sum())} "
            f"times, too seldom for a finding: {', '.join(each)}{more}.")


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``[lo, hi)`` index ranges where ``flags`` is True."""
    padded = np.concatenate([[False], flags.astype(bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _rank(f: Finding) -> tuple[int, int, int]:
    return (SEVERITIES.index(f.severity), 0 if f.cause is None else 1, -(f.lost + f.affected))


def frame(found: list[Finding]) -> pd.DataFrame:
    found = sorted(found, key=_rank)
    for i, f in enumerate(found, start=1):
        f.finding_id = f"F{i}"
    rows = [{**{k: getattr(f, k) for k in COLUMNS if k not in (
        "duration_s", "root_cause", "caused_by")},
        "duration_s": (f.end - f.start) / 1e9, "root_cause": f.cause is None,
        "caused_by": f.cause.finding_id if f.cause is not None else None} for f in found]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["start"] = utc(frame["start"].to_numpy(dtype=np.int64))
    frame["end"] = utc(frame["end"].to_numpy(dtype=np.int64))
    for column in ("finding_id", "severity", "kind", "service", "consumer", "worker",
                   "subject", "evidence", "caused_by"):
        frame[column] = frame[column].astype("str")
    for column in ("peak_backlog", "peak_age_s", "slowdown", "error_rate", "duration_s"):
        frame[column] = frame[column].astype(float)
    frame["lost"] = frame["lost"].astype(np.int64)
    frame["affected"] = frame["affected"].astype(np.int64)
    frame["root_cause"] = frame["root_cause"].astype(bool)
    frame["ongoing"] = frame["ongoing"].astype(bool)
    return frame


def statuses(findings: pd.DataFrame) -> dict[str, tuple[str, str, str]]:
    """Per consumer: the lag status its worst warning/critical finding implies, the status
    at the end of the trace (of a finding still ``ongoing`` then), and the reason (that
    finding's evidence, then the others')."""
    out: dict[str, tuple[str, str, str]] = {}
    alarms = findings[findings["severity"].isin(["critical", "warning"])
                      & findings["kind"].isin(list(STATUS))]
    order = ["OK", "WARN", "ERR", "STALL", "STOP"]
    for consumer, part in alarms.groupby("consumer", sort=False):
        ranked = sorted(part.itertuples(index=False),
                        key=lambda f: (-order.index(STATUS[f.kind]),
                                       SEVERITIES.index(f.severity)))
        worst = ranked[0]
        now = next((STATUS[f.kind] for f in ranked if f.ongoing), "OK")
        reason = "; also ".join([worst.evidence, *(f.evidence for f in ranked[1:])])
        out[str(consumer)] = (STATUS[worst.kind], now, reason)
    return out



def headlines(findings: pd.DataFrame, most: int = 5,
              failed: Callable[[], pd.DataFrame] | None = None) -> list[str]:
    """What a person should read first: one sentence per critical finding (root causes
    first, a symptom says what it is a symptom of), or, without any, how many warnings
    there are and the worst; or that nothing went wrong — unless handlers failed too
    seldom for a finding, which ``failed`` tells (called only then: deliveries and errors
    per consumer, as ``lag()`` gives them)."""
    critical = findings[findings["severity"] == "critical"]
    if critical.empty:
        warnings = findings[findings["severity"] == "warning"]
        if warnings.empty:
            thin = _seldom_failures(failed()) if failed is not None else None
            return [thin or "Nothing went wrong: no warning or critical finding."]
        first = str(warnings["evidence"].iloc[0])
        many = f"{len(warnings)} warnings" if len(warnings) > 1 else "one warning"
        return [f"No critical finding; {many}. {first}."]
    ordered = critical.sort_values("root_cause", ascending=False, kind="stable")
    lines = []
    for row in ordered.head(most).itertuples(index=False):
        text = str(row.evidence)
        if not row.root_cause:
            text += f" (a symptom of {row.caused_by})"
        lines.append(text + ".")
    if len(ordered) > most:
        lines.append(f"… and {len(ordered) - most} more critical findings.")
    return lines

