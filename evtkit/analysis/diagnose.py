"""Diagnosis: what went wrong — where, when, how much, and what caused what.

::

    trace.diagnose()                     # findings, worst first
    trace.diagnose(baseline=healthy)     # "slow" also means slower than in ``healthy``

One row per finding: ``finding_id, severity, kind, service, consumer, worker, subject,
start, end, ongoing`` (still holding when the trace ended) ``, duration_s, peak_backlog,
peak_age_s, slowdown, error_rate, lost, affected, evidence, root_cause, caused_by``.
``severity`` is ``critical``, ``warning`` or ``info``; ``kind`` is one of :data:`KINDS`;
``evidence`` says it in one sentence, in human units; ``caused_by`` is the ``finding_id``
of the finding this one is a symptom of.

The evaluator
-------------
Every threshold is relative to the consumer's own behaviour: its *typical* processing
time is the median over its deliveries (a baseline's median only decides whether it was
slow all along), and nothing shorter than a minimum duration counts, so a hiccup of a
few handler calls is never an alarm (the false STOPs Burrow is known for on slow topics).
The defaults are the fields of :class:`Rules`.

``stalled_consumer``  for ``stall_factor`` × typical and at least ``min_duration_s`` a
                      worker neither started nor finished a call while a message waited
                      for it (a call that hung, a consumer frozen between calls or before
                      its first); for a JetStream consumer known only from the server's
                      samples, its ack floor stood still with messages pending for
                      ``stall_factor`` / 5 times the usual time between its moves.
``slow_consumer``     the running median (over ``window`` calls) of the handler's time was
                      ``slow_factor`` × typical or more, for ``min_calls`` calls and at
                      least ``min_duration_s``; with a baseline, instead, over the whole
                      trace when its median is ``slow_factor`` × the baseline's.
``stopped_consumer``  at least ``min_missed`` events on subjects the consumer receives were
                      published over ``min_duration_s`` or more and never reached it; or
                      (a ``warning``) one worker of a queue group received none of so many
                      of the group's messages that chance would explain it less than once
                      in a million.
``failing_handler``   ``min_errors`` failed calls or more, ``min_error_rate`` of the calls
                      (over ``min_duration_s`` at least, or five times ``min_errors``
                      failures; a shorter blip is only ``info``),
                      in a stretch where errors are closer than ``error_gap`` typical gaps
                      between calls, 2 s, and the gap that n errors at their rate λ rarely
                      exceed (ln(100 n)/λ), whichever is longest; neighbouring stretches
                      whose union still fails twice ``min_error_rate`` are one.
``dropped_messages``  deliveries dropped before the handler (pending limits exceeded).
``gave_up``           JetStream stopped redelivering (MAX_DELIVERIES advisories).
``redelivery``        JetStream delivered messages more than once.
``backlog_growth``    messages waited ``lag_factor`` × typical and at least ``min_lag_s``
                      before their handler started, while the handler itself was not slow:
                      the input outran it.
``producer_burst``    a producer of root events published ``min_burst`` events (or more, in
                      overlapping stretches) at ``burst_factor`` × its usual rate or faster.
``upstream_slowdown`` a consumer's input came from a consumer with a slow, stalled or
                      stopped handler, so it arrived late.
``no_subscriber``     a subject that no recorded consumer received (normal at the end of a
                      chain); ``unreceived``: some events on a subject that has consumers
                      reached none.
``clock_skew``, ``disconnect_gap``, ``cycle``, ``duplicate_id``, ``orphan``, ``terminated``:
                      from :func:`evtkit.analysis.problems.problems` and ``trace.gaps``
                      (clocks less than a millisecond apart are ``info``); an observer that
                      receives everything ``AHEAD_S`` or more late (and 20 × the usual
                      floor) has a clock ahead: a ``clock_skew`` warning, and its times
                      taken back by that much before the other rules run.
``contract_violation``, ``undeclared_subject``, ``undeclared_producer``,
``undeclared_consumer``: with event definitions attached (``ek.load(path, spec=)``,
                      ``trace.with_spec``), what ``trace.conformance`` finds, from
                      :func:`evtkit.analysis.problems.problems` (severities in
                      :data:`evtkit.analysis.problems.CONFORMANCE`).

Cause or symptom
----------------
A handler that stalled, slowed, stopped or failed is a *root cause*. Lag at a consumer
whose own handler kept its pace is a *symptom*: of a slow/stalled/stopped consumer
upstream of it on the observed flow graph (a consumer that emits its input subjects), or
of a producer burst into its input, whichever overlaps it; only when neither does is the
backlog growth itself the root (the input rate outgrew the consumer). Drops, give-ups,
redeliveries and unreceived events that overlap a root finding of the same consumer are
its symptoms, as is ``upstream_slowdown``.

Severity: lost messages (stopped, dropped, gave up) and stalls are ``critical``; a failing
handler is ``critical`` from ``critical_error_rate``; slowness and backlog are ``critical``
once messages waited ``critical_age_s`` or more, else ``warning``; a producer burst is a
``warning`` only when it made a consumer lag. Findings are ordered by severity, then root
causes first, then by the number of messages affected (lost, failed or delayed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._units import duration
from . import symptoms, workers
from .consumer import Consumer, Holding
from .evidence import Evidence
from .finding import COLUMNS, HANDLER_KINDS, KINDS, NAT, SEVERITIES, Finding, frame, runs
from .pace import (
    by_worker,
    in_start_order,
    moments,
    running_median_reaches,
    select,
    typical_time,
    waiting,
    with_time,
)

if TYPE_CHECKING:
    from ..trace import Trace

__all__ = ["COLUMNS", "KINDS", "SEVERITIES", "Rules", "diagnose"]


@dataclass(frozen=True, slots=True)
class Rules:
    """The evaluator's thresholds (see the module docstring)."""

    slow_factor: float = 3.0
    window: int = 9
    min_calls: int = 8
    min_duration_s: float = 0.5
    stall_factor: float = 50.0
    min_missed: int = 5
    min_errors: int = 3
    min_error_rate: float = 0.05
    critical_error_rate: float = 0.1
    error_gap: float = 20.0
    lag_factor: float = 20.0
    min_lag_s: float = 0.25
    min_lagged: int = 3
    critical_age_s: float = 1.0
    burst_s: float = 0.2
    burst_factor: float = 5.0
    min_burst: int = 10
    link_s: float = 1.0


def diagnose(trace: Trace | Evidence, baseline: Trace | Evidence | None = None, *,
             rules: Rules | None = None) -> pd.DataFrame:
    """Findings about ``trace``, worst first; see the module docstring for the rules.

    Args:
        baseline: a trace of the same system when healthy: consumers whose typical handler
            time is several times the baseline's are slow even if they were slow all along.
        rules: thresholds other than the defaults of :class:`Rules`.
    """
    rules = rules or Rules()
    d = Diagnosis(_evidence(trace), None if baseline is None else _evidence(baseline), rules)
    try:
        return frame(d.run())
    finally:  # (done, or a rule failed: nothing more will be read, nor held)
        d.holding.visit([])
        d.holding.release()


def _evidence(source: Trace | Evidence) -> Evidence:
    return source if isinstance(source, Evidence) else Evidence(source)


class Diagnosis:
    """The state of one diagnosis: the trace, the rules, each consumer's profile and the
    findings so far (the rules that follow a flow live in :mod:`.symptoms`)."""

    def __init__(self, evidence: Evidence, baseline: Evidence | None, rules: Rules) -> None:
        self.evidence = evidence
        self.rules = rules
        self.t0, self.t_end = evidence.span()
        self.found: list[Finding] = []
        self.holding = Holding(evidence, self._arranged)
        self.consumers = [Consumer(name, self.holding.load) for name in evidence.consumers()]
        self.holding.visit(self.consumers)  # (while the clocks are checked, say, read ahead)
        self.ahead = symptoms.clocks_ahead(self)
        self._base = baseline.handler_medians() if baseline is not None else {}
        self.upstream: dict[str, set[str]] = {}
        self._emitters: dict[str, set[str]] | None = None

    def emitters(self) -> dict[str, set[str]]:
        """Subject → the consumers whose handlers published events on it."""
        if self._emitters is None:
            self._emitters = self.evidence.emitters()
        return self._emitters

    # -- inputs -------------------------------------------------------------------------

    def _arranged(self, rows: pd.DataFrame) -> pd.DataFrame:
        """One consumer's deliveries in handler start order, an observer's clock running
        ahead taken back (its times, not its durations)."""
        if self.ahead:
            shift = rows["observer"].map(self.ahead).fillna(0).astype("int64").to_numpy()
            rows = rows.assign(**{c: pd.to_datetime(rows[c].array.asi8 - shift, utc=True)
                                  .where(rows[c].notna()) for c in ("received_at",
                                                                     "started_at", "done_at")})
        return in_start_order(rows)

    def profile(self, c: Consumer) -> None:
        """``c``'s typical handler time, baseline, workers and subjects (each consumer's
        rules need its own profile only, so it is taken with the rows they read)."""
        rows = c.rows
        done = c.calls["processing_s"].dropna()
        c.typical = max(typical_time(done.to_numpy(dtype=float)), 1e-5)
        c.baseline = self._base.get(c.name)
        # (the distinct names first: a categorical's rows as text are Python strings)
        c.workers = sorted(map(str, rows["observer"].dropna().unique()))
        c.subjects = sorted(map(str, rows["subject"].dropna().unique()))
        c.revisit = symptoms.has_symptoms(self, c)

    def at(self, ns: int) -> str:
        """``+12.3 s`` from the trace start."""
        return f"+{duration((ns - self.t0) / 1e9)}"

    def add(self, finding: Finding) -> Finding:
        self.found.append(finding)
        return finding

    # -- the rules ----------------------------------------------------------------------

    def run(self) -> list[Finding]:
        for c in self.consumers:  # one read of each consumer's rows for all of these
            self.profile(c)
            self._slow(c)
            self._stalls(c)
            self._stopped(c)
            self._errors(c)
        symptoms.server_stalls(self)
        roots = [f for f in self.found if f.kind in HANDLER_KINDS]
        bursts = symptoms.bursts(self)
        upstream_first = [c for c in sorted(self.consumers, key=lambda c: len(
            symptoms.upstream_of(self, c))) if c.revisit]
        self.holding.visit(upstream_first)
        for c in upstream_first:
            symptoms.lagged(self, c, roots, bursts)
            symptoms.drops(self, c, roots)
            symptoms.redeliveries(self, c, roots)
        symptoms.gave_up(self, roots)
        symptoms.upstream(self, roots)
        symptoms.subjects(self, roots)
        symptoms.from_problems(self)
        for f in self.found:
            f.ongoing = self.ongoing(f)
        return self.found

    def ongoing(self, f: Finding) -> bool:
        """Whether ``f`` still held when the trace ended (within 1 % of its span)."""
        return f.end >= self.t_end - max(1_000_000, (self.t_end - self.t0) // 100)

    def worker_name(self, c: Consumer, workers: set[str]) -> str | None:
        """The affected workers of a queue group, if not all of them."""
        if len(c.workers) > 1 and workers and set(c.workers) - workers:
            return ", ".join(sorted(workers))
        return None

    def _stalls(self, c: Consumer) -> None:
        """Stretches of ``stall_factor`` × typical (and ``min_duration_s``) in which a
        worker neither started nor finished a handler call while a message waited for it:
        a call that hung, or a consumer that froze between calls."""
        r = self.rules
        limit = int(max(r.min_duration_s, r.stall_factor * c.typical) * 1e9)
        live = select(c.rows, c.rows["outcome"] != "dropped")
        for worker, rows in by_worker(live):
            start = rows["started_at"].array.asi8
            done = rows["done_at"].array.asi8
            avail = rows["published_at"].array.asi8
            avail = np.where(avail == NAT, rows["received_at"].array.asi8, avail)
            progress = moments(start, done)
            if (done == NAT).any():
                progress = with_time(progress, self.t_end)
            if len(progress) and (avail != NAT).any():  # hung from before the first call
                progress = with_time(progress, int(avail[avail != NAT].min()))
            long = np.flatnonzero(np.subtract(progress[1:], progress[:-1]) >= max(limit, 1))
            begun = np.where(start == NAT, self.t_end, start) if len(long) else start
            for k in long:
                lo, hi = int(progress[k]), int(progress[k + 1])
                # Someone waited through (at least half of) it, unserved.
                if not ((avail <= lo + (hi - lo) // 2) & (begun >= hi)).any():
                    continue
                if any(g.kind == "slow_consumer" and g.consumer == c.name and g.overlaps(lo, hi)
                       and hi - lo < 10 * g.slowdown * c.typical * 1e9 for g in self.found):
                    continue  # one of the slow calls of a slow stretch, not a stall
                f = Finding("stalled_consumer", "critical", lo, hi, service=c.name,
                             consumer=c.name, slowdown=(hi - lo) / 1e9 / c.typical,
                             worker=self.worker_name(c, {str(worker)}))
                self._merge_or_add(f)
        for f in self.found:
            if f.kind == "stalled_consumer" and f.consumer == c.name and not f.evidence:
                self.measure(c, f)
                hung = "still stalled at the end of the trace" if self.ongoing(f) else \
                    "then it recovered"
                who = f"{c.name} ({f.worker})" if f.worker else c.name
                f.evidence = (
                    f"{who} stalled for {duration((f.end - f.start) / 1e9)} from "
                    f"{self.at(f.start)} ({f.slowdown:,.0f}× its typical handler time "
                    f"{duration(c.typical)}): {int(f.peak_backlog)} messages waited up to "
                    f"{duration(f.peak_age_s)} and none was handled; {hung}; cause: its "
                    "handler, not its input")

    def _merge_or_add(self, f: Finding) -> None:
        """Overlapping findings of one kind and consumer (several workers) become one."""
        for g in self.found:
            if g.kind == f.kind and g.consumer == f.consumer and g.overlaps(f.start, f.end):
                g.start, g.end = min(g.start, f.start), max(g.end, f.end)
                g.slowdown = np.nanmax([g.slowdown, f.slowdown])
                workers = {w.strip() for x in (g.worker, f.worker) if x for w in x.split(",")}
                c = next(c for c in self.consumers if c.name == f.consumer)
                g.worker = self.worker_name(c, workers) if g.worker and f.worker else None
                return
        self.add(f)

    def _slow(self, c: Consumer) -> None:
        r = self.rules
        rows = c.calls
        whole = float(rows["processing_s"].median()) / c.baseline if c.baseline else 0.0
        if whole >= r.slow_factor and len(rows) >= r.min_calls:
            # Slower than the baseline all along: one finding over the whole trace.
            self.add(Finding("slow_consumer", "warning", int(rows["started_at"].array.asi8.min()),
                             int(rows["done_at"].array.asi8.max()), service=c.name,
                             consumer=c.name, slowdown=whole))
            rows = rows.iloc[:0]
        # Each worker on its own (one slow worker of a queue group), and the group's calls
        # together (all of them slow, each worker too seldom called to show it alone).
        sequences = by_worker(rows)
        if len(sequences) > 1:
            sequences.append(("", rows))
        for worker, part in sequences:
            ratio = part["processing_s"].to_numpy(dtype=float) / c.typical
            if len(ratio) < r.min_calls:
                continue
            slow = running_median_reaches(ratio, r.window, max(3, r.window // 2),
                                          r.slow_factor)
            start = part["started_at"].array.asi8
            done = part["done_at"].array.asi8
            for lo, hi in runs(slow):
                if hi - lo < r.min_calls:
                    continue
                begin, end = int(start[lo]), int(done[hi - 1])
                if (end - begin) / 1e9 < max(r.min_duration_s, 20 * c.typical):
                    continue
                f = Finding("slow_consumer", "warning", begin, end, service=c.name,
                             consumer=c.name, slowdown=float(np.median(ratio[lo:hi])),
                             worker=self.worker_name(c, {str(worker)}) if worker else None)
                self._merge_or_add(f)
        for f in self.found:
            if f.kind == "slow_consumer" and f.consumer == c.name and not f.evidence:
                if whole < r.slow_factor and len(c.workers) > 1:
                    workers.slow(self, c, rows, f)
                self.measure(c, f)
                if f.peak_age_s >= r.critical_age_s:
                    f.severity = "critical"
                who = f"{c.name} ({f.worker})" if f.worker else c.name
                than = (f"its baseline {duration(c.baseline)}" if whole >= r.slow_factor
                        else f"its typical {duration(c.typical)}")
                kept = (f"its backlog reached {int(f.peak_backlog)} and messages waited up "
                        f"to {duration(f.peak_age_s)}" if f.peak_age_s >= self.lag_limit(c)
                        else f"it kept up (messages waited at most {duration(f.peak_age_s)})")
                f.evidence = (f"{who}'s handler took {f.slowdown:.3g}× {than} from "
                              f"{self.at(f.start)} for {duration((f.end - f.start) / 1e9)}: "
                              f"{kept}; cause: its handler, not its input")

    def _stopped(self, c: Consumer) -> None:
        r = self.rules
        got = c.rows["received_at"].array.asi8
        got = got[got != NAT]
        if not len(got):
            return
        if len(c.workers) > 1:
            workers.stopped(self, c)
        mine, missed = self.evidence.expected(c.name, c.subjects, int(got.min()))
        if len(missed) < r.min_missed:
            return
        gaps = np.diff(missed)
        usual = np.median(np.diff(mine)) if len(mine) > 1 else 1e9
        split = np.flatnonzero(gaps > max(20 * usual, r.min_duration_s * 1e9)) + 1
        for part in np.split(missed, split):
            if len(part) < r.min_missed or (part[-1] - part[0]) / 1e9 < r.min_duration_s:
                continue
            f = self.add(Finding("stopped_consumer", "critical", int(part[0]), int(part[-1]),
                                  service=c.name, consumer=c.name, lost=len(part),
                                  affected=len(part)))
            f.evidence = (f"{c.name} received nothing for {duration((f.end - f.start) / 1e9)}"
                          f" from {self.at(f.start)}: {len(part)} of its events "
                          f"({', '.join(c.subjects)}) never reached it; cause: it stopped "
                          "consuming, not its input")

    def _errors(self, c: Consumer) -> None:
        r = self.rules
        rows = c.calls
        failed = (rows["outcome"] == "error").to_numpy()
        if failed.sum() < r.min_errors:
            return
        at = rows["started_at"].array.asi8
        fail_at = at[failed]
        usual = float(np.median(np.diff(at))) if len(at) > 1 else 1e9
        # Errors at rate λ are rarely further apart than ln(100 n)/λ: longer gaps split.
        rate = len(fail_at) / max(float(fail_at[-1] - fail_at[0]), 1.0)
        apart = max(r.error_gap * usual, np.log(100 * len(fail_at)) / rate, 2e9)
        split = np.flatnonzero(np.diff(fail_at) > apart) + 1
        parts = np.split(np.arange(len(fail_at)), split)
        # Neighbouring stretches whose union still fails twice the minimum rate are one.
        merged = parts[:1]
        for part in parts[1:]:
            union = np.concatenate([merged[-1], part])
            calls = ((at >= fail_at[union[0]]) & (at <= fail_at[union[-1]])).sum()
            if len(union) >= 2 * r.min_error_rate * calls:
                merged[-1] = union
            else:
                merged.append(part)
        for part in merged:
            if len(part) < r.min_errors:
                continue
            begin, end = int(fail_at[part[0]]), int(fail_at[part[-1]])
            calls = int(((at >= begin) & (at <= end)).sum())
            rate = len(part) / max(calls, 1)
            if rate < r.min_error_rate:
                continue
            done = rows["done_at"].array.asi8[failed][part[-1]]
            end = int(done) if done != NAT else end
            common = rows.loc[failed, "error"].iloc[part].value_counts()
            what = f" ({common.index[0]})" if len(common) else ""
            severity = "critical" if rate >= r.critical_error_rate else "warning"
            if (end - begin) / 1e9 < r.min_duration_s and len(part) < 5 * r.min_errors:
                severity = "info"  # a blip of a few calls: noted, not an alarm
            f = self.add(Finding("failing_handler", severity, begin, end, service=c.name,
                                 consumer=c.name, error_rate=rate, affected=len(part)))
            f.worker = self.worker_name(c, set(rows.loc[failed, "observer"].iloc[part]
                                                .astype(str)))
            f.evidence = (f"{c.name}'s handler failed {len(part)} of {calls} calls "
                          f"({rate:.0%}) from {self.at(begin)} for "
                          f"{duration((end - begin) / 1e9)}{what}")

    def lag_limit(self, c: Consumer) -> float:
        return max(self.rules.min_lag_s, self.rules.lag_factor * c.typical)

    def measure(self, c: Consumer, f: Finding) -> None:
        """Peak backlog and the longest wait of messages that waited during ``f``: a
        message waits from its publish until its handler starts (until the end of the
        trace if it never does); a dropped message stops waiting when it is dropped."""
        rows = c.rows
        pub = rows["published_at"].array.asi8
        pub = np.where(pub == NAT, rows["received_at"].array.asi8, pub)
        stop = rows["started_at"].array.asi8
        dropped = (rows["outcome"] == "dropped").to_numpy()
        stop = np.where(dropped, rows["received_at"].array.asi8, stop)
        never = np.iinfo(np.int64).max
        stop = np.where(stop == NAT, never, stop)
        inside = (pub <= f.end) & (stop >= f.start) & ~dropped & (pub != NAT)
        waits = (np.minimum(stop[inside], max(f.end, self.t_end)) - pub[inside]) / 1e9
        f.peak_age_s = float(waits.max()) if len(waits) else 0.0
        f.affected = max(f.affected, int((waits >= self.lag_limit(c)).sum()))
        # Waiting at each moment a handler started in the window, and at its end.
        probe = np.append(stop[inside & (stop <= f.end)], f.end)
        f.peak_backlog = float(max(int(waiting(pub[pub != NAT], stop, probe).max()), 0))

