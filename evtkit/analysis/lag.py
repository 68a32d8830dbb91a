"""Consumer lag: who is behind, by how much, and since when?

::

    trace.lag()              # one row per consumer: latency percentiles, status, reason
    trace.backlog("1s")      # per consumer over time: messages waiting, oldest one's age
    trace.lag_status()       # the status of every sliding window, with its reason

Lag is exact here, from both sides of every delivery: an event is *waiting* for a consumer
from its publish until that consumer's handler finished it (or until it was dropped). So
``backlog`` is lag in messages and ``oldest_s`` lag in seconds — no estimate from offsets.
For JetStream consumers sampled with ``bus.watch_jetstream`` the server's own count
(pending + ack pending) is the backlog instead, so messages stored before the capture and
consumers that do not run evtkit count too (``from_server`` in ``backlog()``,
``backlog_source`` in ``lag()``).

``lag()``'s status is the verdict of :func:`evtkit.analysis.diagnose.diagnose` (thresholds
relative to each consumer's own pace, minimum durations, causes told from symptoms).
``lag_status()`` is the raw view underneath, Burrow's rules evaluated over every sliding
window of ``window`` bins, worst first:

``STOP``   the consumer received nothing while events it used to get kept arriving
``STALL``  messages were waiting the whole window and the handler finished none
``ERR``    handler errors reached ``error_rate`` of what it handled (and ``min_errors``)
``WARN``   the backlog rose through the whole window — by at least 2 messages and a tenth of
           what arrived meanwhile — and never reached zero
``OK``     anything else: it reached zero, or is catching up

A window's status says what that window looked like; a short window can call a hiccup a
STALL, which is why ``lag()`` and ``diagnose()`` require minimum durations.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._units import duration
from ..schema import fill, utc
from .pace import waiting

if TYPE_CHECKING:
    from ..trace import Trace

__all__ = ["LAG_COLUMNS", "STATUSES", "add_server_samples", "backlog", "backlog_frame",
           "bin_counts", "grid", "judged", "lag", "lag_status", "nice_width"]

STATUSES = ("OK", "WARN", "ERR", "STALL", "STOP")
"""Lag statuses from least to most severe."""
_NICE = [1, 2, 5]


def auto_freq(trace: Trace, bins: int = 200) -> pd.Timedelta:
    """A round bin width that cuts the trace's time span into about ``bins`` bins."""
    obs = trace.observations
    span = (obs["ts"].max() - obs["ts"].min()).total_seconds() if len(obs) else 1.0
    return nice_width(span, bins)


def nice_width(span_s: float, bins: int = 200) -> pd.Timedelta:
    """A round bin width (1, 2 or 5 × a power of ten seconds) that cuts ``span_s`` seconds
    into about ``bins`` bins."""
    target = max(span_s / bins, 1e-3)
    exponent = math.floor(math.log10(target))
    for step in _NICE + [10]:
        width = step * 10.0 ** exponent
        if width >= target:
            return pd.Timedelta(seconds=width)
    return pd.Timedelta(seconds=10.0 ** (exponent + 1))  # pragma: no cover


def _grid(trace: Trace, freq: str | pd.Timedelta | None) -> tuple[np.ndarray, int]:
    """Bin end times (ns) covering the whole trace, and the bin width (ns)."""
    ts = trace.observations["ts"].array.asi8
    first, last = (int(ts.min()), int(ts.max())) if len(ts) else (0, 0)
    return grid(first, last, freq if freq is not None else auto_freq(trace))


def grid(first: int, last: int, freq: str | pd.Timedelta) -> tuple[np.ndarray, int]:
    """Bin end times (ns) covering ``first``..``last`` (ns) in bins of ``freq``, aligned to
    multiples of it, and the bin width (ns)."""
    step = int(pd.Timedelta(freq).value)
    if step <= 0:
        raise ValueError(f"freq must be positive, not {freq!r}")
    start = first - first % step
    ends = np.arange(start + step, last + 2 * step, step, dtype=np.int64)
    return ends, step


def _per_consumer(trace: Trace, ends: np.ndarray, step: int) -> dict[str, dict[str, np.ndarray]]:
    """For each consumer, per bin: backlog and oldest age at the bin end, and counts of
    arrivals, receives, handled, errors and missed (expected but never delivered)."""
    dv = trace.deliveries
    ev = trace.events
    out: dict[str, dict[str, np.ndarray]] = {}
    never, nat = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    ev_pub = ev["published_at"].array.asi8
    ev_subject, _ = pd.factorize(ev["subject"])
    dv_event = trace.delivery_events
    received_all = dv["received_at"].array.asi8
    published_all = dv["published_at"].array.asi8
    published_all = np.where(published_all == nat, received_all, published_all)
    done_all = dv["done_at"].array.asi8
    dropped_all = (dv["outcome"] == "dropped").to_numpy()
    error_all = (dv["outcome"] == "error").to_numpy()
    for consumer, rows in dv.groupby("consumer", sort=True).indices.items():
        pub, received, done = published_all[rows], received_all[rows], done_all[rows]
        dropped = dropped_all[rows]
        finished = np.where(dropped, received, done)
        finished = np.where(finished == nat, never, finished)
        # Waiting from publish until finished: backlog = started waiting - stopped waiting.
        backlog = waiting(pub, finished, ends)
        # Oldest waiting at t: among those still waiting after t (finished > t), the
        # earliest publish — if that is not after t.
        by_end = np.argsort(finished, kind="stable")
        suffix_min = np.minimum.accumulate(pub[by_end][::-1])[::-1]
        k = np.searchsorted(finished[by_end], ends, "right")
        oldest_pub = np.where(k < len(pub), suffix_min[np.minimum(k, len(pub) - 1)], never)
        oldest = np.where(oldest_pub <= ends, (ends - oldest_pub) / 1e9, 0.0)

        # Events this consumer would get: those on subjects it received, from the first.
        subjects = np.unique(ev_subject[dv_event[rows][dv_event[rows] >= 0]])
        expected = np.isin(ev_subject, subjects) & (ev_pub >= pub.min())
        delivered = np.zeros(len(ev), bool)
        delivered[dv_event[rows][dv_event[rows] >= 0]] = True
        missed = expected & ~delivered
        count = lambda t: bin_counts(t, int(ends[0]) - step, step, len(ends))  # noqa: E731
        handled_at = done[~dropped & (done != nat)]
        out[str(consumer)] = {
            "backlog": backlog,
            "oldest_s": oldest,
            "arrivals": count(ev_pub[expected]),
            "received": count(received),
            "handled": count(handled_at),
            "errors": count(done[error_all[rows]]),
            "missed": count(ev_pub[missed]),
            "from_server": np.zeros(len(ends), bool),
        }
    add_server_samples(trace, ends, out)
    return out


def bin_counts(times: np.ndarray, start: int, step: int, bins: int) -> np.ndarray:
    """How many of ``times`` (ns; NaT and values outside the bins left out) fall in each of
    ``bins`` bins of ``step`` ns from ``start``, the last bin closed: ``np.histogram(times,
    edges)[0]`` for those uniform edges, without the sort ``np.histogram`` makes of the
    values (0.3 s of the in-memory ``lag()`` of 1 M events)."""
    stop = start + bins * step
    inside = times[(times >= start) & (times <= stop)]
    at = (inside - start) // step
    return np.bincount(np.minimum(at, bins - 1), minlength=bins)


def _sampler(part: pd.DataFrame, pick: np.ndarray, have: np.ndarray):  # noqa: ANN202
    """``column → its latest sample at each bin end`` (0 before the first sample)."""

    def sampled(column: str) -> np.ndarray:
        values = part[column].to_numpy(dtype=np.int64, na_value=0)[pick]
        return np.where(have, values, 0)

    return sampled


def add_server_samples(trace: Trace, ends: np.ndarray,
                        out: dict[str, dict[str, np.ndarray]]) -> None:
    """Where JetStream ConsumerInfo samples exist, the server's count is the backlog: it
    also knows messages stored before the capture began and consumers that do not run
    evtkit. At each bin end the latest sample counts (``pending + ack_pending``, summed over
    streams); bins before a consumer's first sample keep evtkit's own count. A consumer
    known only from samples gets arrivals / received / handled from how its sequences moved
    (stream head, delivered sequence, ack floor)."""
    info = trace.consumer_info
    if info.empty:
        return
    info = info.sort_values("ts", kind="stable")
    groups = info.groupby(["consumer", "stream"], sort=True).indices
    for (consumer, _stream), rows in groups.items():
        part = info.iloc[rows]
        at = np.searchsorted(part["ts"].array.asi8, ends, "right") - 1
        have = at >= 0
        sampled = _sampler(part, np.maximum(at, 0), have)

        s = out.get(str(consumer))
        if s is None:
            head = sampled("delivered_stream_seq") + sampled("pending")
            moved = lambda v: np.diff(v, prepend=v[0]).clip(min=0)  # noqa: E731
            zeros = np.zeros(len(ends), np.int64)
            s = out[str(consumer)] = {
                "backlog": zeros, "oldest_s": np.zeros(len(ends)), "arrivals": moved(head),
                "received": moved(sampled("delivered_seq")), "handled": moved(
                    sampled("ack_floor")), "errors": zeros, "missed": zeros,
                "from_server": np.zeros(len(ends), bool),
            }
        server = s["from_server"]
        s["backlog"] = np.where(have, np.where(server, s["backlog"], 0) + sampled("backlog"),
                                s["backlog"])
        s["from_server"] = server | have


def backlog(trace: Trace, freq: str | pd.Timedelta | None = None) -> pd.DataFrame:
    """Lag over time, one row per consumer and bin.

    Columns: ``time`` (bin end), ``consumer``, ``backlog`` (events published but not yet
    handled by it: lag in messages), ``oldest_s`` (age of the oldest of those: lag in
    seconds), and per bin ``arrivals``, ``received``, ``handled``, ``errors``, ``missed``,
    and ``from_server``: True where ``backlog`` is the JetStream server's count (sampled
    with ``bus.watch_jetstream``: pending + ack pending) rather than evtkit's own.

    Args:
        freq: bin width (``"100ms"``, ``"1s"``, a Timedelta); default: about 200 bins.
    """
    ends, step = _grid(trace, freq)
    return backlog_frame(_per_consumer(trace, ends, step), ends)


def backlog_frame(series: dict[str, dict[str, np.ndarray]], ends: np.ndarray) -> pd.DataFrame:
    """``backlog()``'s frame from each consumer's per-bin arrays (bins ending at ``ends``)."""
    frames = [pd.DataFrame({"time": utc(ends), "consumer": name, **cols})
              for name, cols in series.items()]
    if not frames:
        return pd.DataFrame({"time": utc(np.array([], np.int64)),
                             "consumer": pd.array([], "str"),
                             **{c: np.array([], np.int64) for c in (
                                 "backlog", "arrivals", "received", "handled", "errors",
                                 "missed")}, "oldest_s": np.array([], float),
                             "from_server": np.array([], bool)})
    out = pd.concat(frames, ignore_index=True)
    out["consumer"] = out["consumer"].astype("str")
    return out


def lag_status(trace: Trace, freq: str | pd.Timedelta | None = None, *,
               window: int = 5, error_rate: float = 0.1, min_errors: int = 3) -> pd.DataFrame:
    """The status of every sliding window of ``window`` bins, per consumer.

    Columns: ``consumer, start, end, status, reason``.
    """
    if window < 2:
        raise ValueError("window must be at least 2 bins")
    ends, step = _grid(trace, freq)
    rows = []
    for consumer, s in _per_consumer(trace, ends, step).items():
        w = min(window, len(ends))
        for k, (status, reason) in enumerate(
                _windows(s, w, step, error_rate, min_errors), start=w - 1):
            rows.append((consumer, ends[k - w + 1] - step, ends[k], status, reason))
    frame = pd.DataFrame(rows, columns=["consumer", "start", "end", "status", "reason"])
    frame["start"] = utc(frame["start"].to_numpy(dtype=np.int64))
    frame["end"] = utc(frame["end"].to_numpy(dtype=np.int64))
    frame["consumer"] = frame["consumer"].astype("str")
    return frame


def _windows(s: dict[str, np.ndarray], w: int, step: int, error_rate: float,
             min_errors: int) -> list[tuple[str, str]]:
    """Status and reason of each window of ``w`` bins, sliding one bin at a time."""
    last = len(s["backlog"])
    return [_judge({name: v[k - w + 1:k + 1] for name, v in s.items()}, step / 1e9,
                   error_rate, min_errors) for k in range(w - 1, last)]


def _judge(s: dict[str, np.ndarray], bin_s: float, error_rate: float, min_errors: int
           ) -> tuple[str, str]:
    """One window's status and the reason, by the rules in the module docstring."""
    span = len(s["backlog"]) * bin_s
    b = s["backlog"]
    arrivals, received, handled = s["arrivals"].sum(), s["received"].sum(), s["handled"].sum()
    errors, missed = s["errors"].sum(), s["missed"].sum()
    if missed > 0 and received == 0 and arrivals > 0:
        return "STOP", (f"received nothing for {span:.3g} s while {arrivals} of its events "
                        f"were published ({missed} never reached it)")
    if b.min() > 0 and handled == 0:
        return "STALL", (f"{b.min()}–{b.max()} messages waiting and none handled for "
                         f"{span:.3g} s (oldest waiting {s['oldest_s'].max():.3g} s)")
    if errors >= min_errors and errors >= error_rate * max(handled, 1):
        return "ERR", (f"{errors} of {handled} handled failed ({errors / max(handled, 1):.0%}) "
                       f"in {span:.3g} s")
    grew = b[-1] - b[0]
    if b.min() > 0 and (np.diff(b) >= 0).all() and grew >= max(2, 0.1 * arrivals):
        return "WARN", (f"backlog rose from {b[0]} to {b[-1]} in {span:.3g} s "
                        f"(+{(b[-1] - b[0]) / span:.3g} msg/s), oldest waiting "
                        f"{s['oldest_s'][-1]:.3g} s")
    if b.min() == 0:
        return "OK", f"caught up (backlog reached 0) within {span:.3g} s"
    return "OK", f"backlog {b[-1]} and not rising"


def lag(trace: Trace, freq: str | pd.Timedelta | None = None) -> pd.DataFrame:
    """One row per consumer (and queue group): how far behind it is and why.

    Columns: ``consumer, queue, deliveries, queue_p50_s, queue_p95_s, queue_p99_s,
    queue_max_s, processing_p50_s, processing_p95_s, errors, dropped, backlog_max,
    oldest_max_s, status, status_now, reason, backlog_source`` (``server`` when the backlog
    came from JetStream ConsumerInfo samples, else ``evtkit``); JetStream consumers seen
    only in samples get a row with no deliveries. Percentiles are linear-interpolated over
    the consumer's deliveries; ``queue_s`` is publish → handler start.

    ``status`` and ``reason`` come from :func:`evtkit.analysis.diagnose.diagnose`: the
    consumer's worst warning or critical finding (STOP: stopped; STALL: stalled; ERR:
    failing handler, dropped messages or messages JetStream gave up on; WARN: slow handler
    or backlog growth), and ``reason`` is that finding's evidence, then the others'.
    ``status_now`` is the status of a finding still open at the end of the trace, else OK.

    Args:
        freq: bin width for ``backlog_max`` and ``oldest_max_s`` (default: about 200 bins).
    """
    dv = trace.deliveries
    keys = ["consumer", "queue"]
    if dv.empty and trace.consumer_info.empty:
        return pd.DataFrame(columns=LAG_COLUMNS)
    frame = _delivery_stats(dv, keys) if len(dv) else pd.DataFrame(columns=LAG_COLUMNS[:11])

    ends, step = _grid(trace, freq)
    return judged(frame, trace.diagnose(), _per_consumer(trace, ends, step))


def judged(frame: pd.DataFrame, findings: pd.DataFrame,
           series: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """``lag()``'s rows: the per-consumer statistics in ``frame`` with each consumer's
    status, status now and reason from ``findings``, and its backlog peaks from ``series``
    (each consumer's per-bin arrays; JetStream consumers known only from samples get a row
    of their own)."""
    from .finding import statuses

    only_server = sorted(set(series) - set(frame["consumer"].astype(str)))
    if only_server:  # JetStream consumers known from ConsumerInfo samples alone
        frame = pd.concat([frame, pd.DataFrame({"consumer": only_server, "queue": "",
                                                "deliveries": 0, "errors": 0, "dropped": 0})],
                          ignore_index=True)
    peaks = {consumer: (int(s["backlog"].max()), float(s["oldest_s"].max()),
                        "server" if s["from_server"].any() else "evtkit")
             for consumer, s in series.items()}
    verdict = statuses(findings)
    queue_max = frame.groupby("consumer")["queue_max_s"].max().to_dict()
    verdicts = {}
    for consumer, (backlog_max, oldest_max, source) in peaks.items():
        status, now, reason = verdict.get(consumer, ("OK", "OK", ""))
        if not reason:
            waited = queue_max.get(consumer)
            reason = (f"kept up: messages waited at most {duration(waited)} for its handler"
                      if waited is not None and not pd.isna(waited) else
                      "kept up: no findings")
        verdicts[consumer] = (status, now, reason, backlog_max, oldest_max, source)
    extra = pd.DataFrame.from_dict(
        verdicts, orient="index",
        columns=["status", "status_now", "reason", "backlog_max", "oldest_max_s",
                 "backlog_source"])
    frame = frame.join(extra, on="consumer")
    frame["queue"] = frame["queue"].replace("", None)
    for column in ("consumer", "queue", "status", "status_now", "reason", "backlog_source"):
        frame[column] = frame[column].astype("str")
    for column in ("deliveries", "errors", "dropped"):
        frame[column] = frame[column].astype(np.int64)
    return frame[LAG_COLUMNS]


def _delivery_stats(dv: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per consumer and queue group: deliveries, queue-time and processing percentiles,
    errors and drops.

    Group by group on numpy arrays (pandas' grouped quantiles sorted copies of every
    column at once: 0.19 GB at 3 M deliveries, the peak of ``lag()``)."""
    keyed = pd.DataFrame({key: fill(dv[key], "") if key == "queue" else dv[key]
                          for key in keys}, copy=False)  # (queue group: "" for none)
    queue_s, work = dv["queue_s"].to_numpy(dtype=float), dv["processing_s"].to_numpy(dtype=float)
    outcome = dv["outcome"]
    failed, lost = (outcome == "error").to_numpy(), (outcome == "dropped").to_numpy()
    rows = []
    for key, at in keyed.groupby(keys, sort=False, observed=True).indices.items():
        waited, worked = queue_s[at], work[at]
        rows.append([*(key if isinstance(key, tuple) else (key,)), len(at),
                     *_quantiles(waited, (0.5, 0.95, 0.99, 1.0)),  # (1: the max)
                     *_quantiles(worked, (0.5, 0.95)), int(failed[at].sum()),
                     int(lost[at].sum())])
    numbers = ["queue_p50_s", "queue_p95_s", "queue_p99_s", "queue_max_s",
               "processing_p50_s", "processing_p95_s"]
    frame = pd.DataFrame(rows, columns=[*keys, "deliveries", *numbers, "errors", "dropped"])
    return frame.astype(dict.fromkeys(numbers, float)).sort_values(keys, ignore_index=True)


def _quantiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Linear-interpolated quantiles of the values that are not NaN (NaN if none are),
    computed as pandas computes them, to the last bit (``a + (b - a) * frac``; numpy's
    ``quantile`` interpolates from the other end above the median): only the ranks needed
    are put in place, no full sort."""
    known = values[~np.isnan(values)]
    if not len(known):
        return [np.nan] * len(qs)
    at = [q * (len(known) - 1) for q in qs]
    ranks = sorted({int(i) for i in at} | {min(int(i) + 1, len(known) - 1) for i in at})
    ranked = np.partition(known, ranks)
    out = []
    for i in at:
        low, frac = int(i), i % 1
        a = float(ranked[low])
        out.append(a if frac == 0 else a + (float(ranked[low + 1]) - a) * frac)
    return out


LAG_COLUMNS = ["consumer", "queue", "deliveries", "queue_p50_s", "queue_p95_s",
                "queue_p99_s", "queue_max_s", "processing_p50_s", "processing_p95_s",
                "errors", "dropped", "backlog_max", "oldest_max_s", "status", "status_now",
                "reason", "backlog_source"]
