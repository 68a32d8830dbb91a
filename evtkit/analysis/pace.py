"""How fast a consumer works, as the diagnosis measures it: its typical handler time, where
a running median of its handler times reaches a level, and its deliveries in the order its
handler started them, selected and split by worker without copying them. Plain numpy and
pandas over one consumer's rows (running medians by
bottleneck: pandas' own takes seconds on a consumer's millions of calls)."""

from __future__ import annotations

import bottleneck as bn
import numpy as np
import pandas as pd

from .._order import in_order, lex_order
from .finding import NAT

__all__ = ["by_worker", "centred_count", "in_start_order", "moments", "running_median",
           "running_median_reaches", "select", "start_order", "typical_time", "waiting",
           "with_time"]


def moments(*times: np.ndarray) -> np.ndarray:
    """The known instants (ns; NaT left out) of several arrays of times, sorted into one
    array made once (sorted in place; repeats kept: a gap between two moments is never
    changed by them)."""
    known = [ns != NAT for ns in times]
    out = np.empty(sum(int(k.sum()) for k in known), np.int64)
    at = 0
    for ns, k in zip(times, known, strict=True):
        n = int(k.sum())
        np.compress(k, ns, out=out[at:at + n])
        at += n
    out.sort(kind="stable")
    return out


def waiting(starts: np.ndarray, stops: np.ndarray, at: np.ndarray) -> np.ndarray:
    """How many are waiting at each instant of ``at`` (ns): started (``starts``) at or
    before it, less those stopped (``stops``) by then — a backlog from two sorts, no loop
    over the instants (times sorted stable: see :mod:`evtkit._order`)."""
    return np.searchsorted(np.sort(starts, kind="stable"), at, "right") - np.searchsorted(
        np.sort(stops, kind="stable"), at, "right")


def with_time(times: np.ndarray, t: int) -> np.ndarray:
    """Sorted distinct ``times`` with ``t`` among them (inserted, not sorted again)."""
    at = int(np.searchsorted(times, t))
    return times if at < len(times) and times[at] == t else np.insert(times, at, t)


def start_order(rows: pd.DataFrame) -> slice | np.ndarray:
    """Positions of ``rows`` in handler start order, then receive order, then capture
    order (``seq``; missing times last): a slice when they are in that order already.
    Rows may come in any order (an engine's, unsorted: sorting here is quicker than the
    engine's sort of whole rows; see :func:`evtkit._order.lex_order`)."""
    big = np.iinfo(np.int64).max
    keys = [np.where(ns == NAT, big, ns) for ns in (
        rows["started_at"].array.asi8, rows["received_at"].array.asi8)]
    keys.append(rows["seq"].to_numpy(dtype=np.int64))
    return slice(None) if in_order(keys) else lex_order(keys)


def in_start_order(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` in :func:`start_order`, reordered a column at a time and each column let go
    of as its reordered copy is made (so one column's worth of memory is held twice, not
    the whole frame: a consumer's 3.3 M rows are ~300 MB). ``rows`` itself is returned
    when in order already; otherwise it is emptied."""
    order = start_order(rows) if len(rows) > 1 else slice(None)
    if isinstance(order, slice):
        return rows
    index = rows.index.take(order)  # (once, not a copy per column)
    return pd.DataFrame({name: rows.pop(name).array.take(order) for name in list(rows.columns)},
                        index=index, copy=False)


def running_median(values: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    """The centred running median of ``values`` over ``window`` of them (NaN skipped; NaN
    where fewer than ``min_periods`` are known): ``pd.Series.rolling(window, center=True,
    min_periods=min_periods).median()``, the same numbers ~7× sooner. bottleneck's
    windows trail: padding before (so a window may be longer than the values) and after
    (so each ends where pandas' centred one does) makes them line up."""
    after = (window - 1) // 2
    padded = np.concatenate([np.full(window, np.nan), np.asarray(values, float),
                             np.full(after, np.nan)])
    return bn.move_median(padded, window, min_count=min_periods)[window + after:]


def centred_count(flags: np.ndarray, window: int) -> np.ndarray:
    """How many of ``flags`` are set in each centred window of ``window`` (as pandas'
    ``rolling(window, center=True, min_periods=1).sum()``: the window has ``(window - 1)
    // 2`` values after its centre, cut at the ends), by differences of a running total
    taken as shifted slices of it, in place (indexing it by computed positions took 80 ms
    per million values; joined copies of it held four arrays of a consumer's 33 M calls)."""
    if window < 1:
        raise ValueError(f"a window holds at least one value, not {window}")
    n = len(flags)
    total = np.zeros(n + 1, np.int64)
    np.cumsum(flags, dtype=np.int64, out=total[1:])
    after = (window - 1) // 2
    before = window - 1 - after
    # Window i ends at total[min(i + after + 1, n)] and begins at total[max(i - before, 0)].
    counts = np.full(n, total[n])
    inside = max(n - after - 1, 0)
    counts[:inside] = total[after + 1:after + 1 + inside]
    counts[before:] -= total[:max(n - before, 0)]
    return counts


def running_median_reaches(values: np.ndarray, window: int, min_periods: int,
                           level: float) -> np.ndarray:
    """Where the centred running median of ``values`` (NaN skipped) is ``level`` or more.

    A median reaches ``level`` only where at least half the window's values do: those
    counts are cheap running sums, and the median itself (seconds on millions of calls)
    is computed only when some window passes that test."""
    if level > 0:  # (else a window with too few known values reaches it: its median is 0)
        known = centred_count(~np.isnan(values), window)
        high = centred_count(values >= level, window)  # (NaN is never >= level)
        if not ((known >= min_periods) & (2 * high >= known)).any():
            return np.zeros(len(values), bool)
        del known, high
    running = running_median(values, window, min_periods)
    reached = running >= level
    if level <= 0:
        reached |= np.isnan(running)
    return reached


def typical_time(took: np.ndarray) -> float:
    """A consumer's typical handler time: the median of its calmer stretches (the 20th
    percentile of a running median over 25 calls), so a slowdown that lasts most of the
    trace does not become the norm; the plain median for few calls."""
    if len(took) == 0:
        return 1e-3
    typical = float(np.median(took))
    if len(took) >= 50:
        running = pd.Series(running_median(took, 25, 13))
        typical = min(typical, float(running.quantile(0.2)))
    return max(typical, 1e-5) if typical > 0 else 1e-3


def select(rows: pd.DataFrame, mask: pd.Series | np.ndarray) -> pd.DataFrame:
    """``rows[mask]``, without copying a consumer's millions of rows when all are kept."""
    mask = np.asarray(mask, dtype=bool)
    return rows if mask.all() else rows[mask]


def by_worker(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """``rows`` split by ``observer``, in name order (one worker: the rows themselves)."""
    names = rows["observer"].dropna().unique()
    if len(names) == 1 and rows["observer"].notna().all():
        return [(str(names[0]), rows)]
    return [(str(worker), part) for worker, part in rows.groupby("observer", sort=True,
                                                                  observed=True)]
