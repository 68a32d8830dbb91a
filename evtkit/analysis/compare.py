"""Compare two runs: what changed between the baseline and the incident?

::

    diff = ek.compare(ek.load("baseline.parquet"), ek.load("incident.parquet"))
    diff.consumers     # per consumer: counts, latency percentiles in both, deltas, statuses
    diff.edges         # per graph edge: counts and latencies in both, and which run lacks it
    diff.findings      # the other run diagnosed against the baseline, worst first
    diff.changes()     # what changed, in words: the findings first, then the biggest deltas

Where trace diffs in tracing tools compare structure only, this compares timing too.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._units import count, duration, ratio

if TYPE_CHECKING:
    from ..trace import Trace

__all__ = ["Comparison", "compare"]

_LATENCIES = ["queue_p50_s", "queue_p95_s", "queue_p99_s", "processing_p50_s",
              "processing_p95_s"]


@dataclass(frozen=True, slots=True)
class Comparison:
    """The result of :func:`compare`.

    Attributes:
        consumers: one row per consumer (and queue group) in either run: ``deliveries``,
            ``errors``, ``dropped``, the latency percentiles and ``status`` with suffix
            ``_base`` and ``_other``, and ``*_delta`` = other − base for the numbers.
        edges: one row per :meth:`~evtkit.trace.Trace.flow_graph` edge in either run:
            ``count`` and ``p50_s``/``p95_s`` in both, deltas, and ``only_in``
            (``base``, ``other`` or empty when in both).
        findings: ``other.diagnose(baseline=base)``: what went wrong in the other run,
            where "slow" also means slower than in the base run.
    """

    consumers: pd.DataFrame
    edges: pd.DataFrame
    findings: pd.DataFrame

    def changes(self, top: int = 10) -> list[str]:
        """What changed, as sentences: the other run's warning and critical findings first
        (root causes before symptoms), then the biggest differences in numbers."""
        found: list[tuple[int, str]] = []
        alarms = self.findings[self.findings["severity"].isin(["critical", "warning"])]
        for row in alarms.sort_values("root_cause", ascending=False, kind="stable") \
                .itertuples(index=False):
            symptom = "" if row.root_cause else f" (a symptom of {row.caused_by})"
            found.append((4 if row.severity == "critical" else 3,
                          f"{row.finding_id} {row.severity}: {row.evidence}{symptom}"))
        for row in self.consumers.itertuples(index=False):
            name = row.consumer
            if row.status_base != row.status_other:
                found.append((2, f"{name}: status {row.status_base} → {row.status_other}"))
            before, after = row.queue_p95_s_base, row.queue_p95_s_other
            if pd.notna(before) and pd.notna(after) and before != after:
                times = after / before if before else np.inf
                if times >= 2 or times <= 0.5:
                    found.append((2, f"{name}: p95 queue time {duration(before)} → "
                                     f"{duration(after)} ({ratio(times)})"))
            if row.errors_delta:
                found.append((2, f"{name}: handler errors {count(row.errors_base)} → "
                                 f"{count(row.errors_other)}"))
        for row in self.edges[self.edges["only_in"] != ""].itertuples(index=False):
            times = row.count_base if row.only_in == "base" else row.count_other
            found.append((1, f"{row.kind} edge {row.source} → {row.target} only in the "
                             f"{row.only_in} run ({count(times)} times)"))
        found.sort(key=lambda item: -item[0])  # stable: findings keep their order
        return [text for _, text in found[:top]]

    def _repr_html_(self) -> str:
        items = "".join(f"<li>{html.escape(t)}</li>" for t in self.changes())
        return f"<div><b>What changed</b><ul>{items or '<li>nothing notable</li>'}</ul></div>"

    def __repr__(self) -> str:
        return "What changed:\n" + "\n".join(f"- {t}" for t in self.changes()) \
            if self.changes() else "What changed: nothing notable"


def compare(base: Trace, other: Trace) -> Comparison:
    """Compare ``other`` (e.g. the incident) against ``base`` (e.g. a healthy run).

    Consumers and edges are matched by name; anything present in only one run is kept
    (its numbers in the other run are missing) and flagged.
    """
    keep = ["consumer", "queue", "deliveries", "errors", "dropped", *_LATENCIES, "status"]
    a = base.lag()[keep].fillna({"queue": ""})
    b = other.lag()[keep].fillna({"queue": ""})
    consumers = a.merge(b, on=["consumer", "queue"], how="outer",
                        suffixes=("_base", "_other"))
    for name in ["deliveries", "errors", "dropped", *_LATENCIES]:
        consumers[f"{name}_delta"] = consumers[f"{name}_other"] - consumers[f"{name}_base"]
    for name in ("status_base", "status_other"):
        consumers[name] = consumers[name].fillna("absent")
    consumers["queue"] = consumers["queue"].replace("", None)

    keys = ["source", "target", "kind"]
    ea = base.flow_graph()[[*keys, "count", "p50_s", "p95_s"]]
    eb = other.flow_graph()[[*keys, "count", "p50_s", "p95_s"]]
    edges = ea.merge(eb, on=keys, how="outer", suffixes=("_base", "_other"), indicator=True)
    edges["only_in"] = edges["_merge"].map({"left_only": "base", "right_only": "other",
                                            "both": ""}).astype("str")
    edges = edges.drop(columns="_merge")
    for name in ("count", "p50_s", "p95_s"):
        edges[f"{name}_delta"] = edges[f"{name}_other"] - edges[f"{name}_base"]
    return Comparison(consumers.reset_index(drop=True), edges.reset_index(drop=True),
                      other.diagnose(baseline=base))
