"""The tidy views derived from the observations: one row per event, one per delivery.

Both are computed on integer arrays (row positions, id codes, nanoseconds) and then take
each column they need from the observations once, in the final order: no intermediate
frame of the observations is copied, and the ids keep the observations' categories (a
view's ``event_id`` codes are the observations' codes), so they join by their codes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._arrow import positions
from .observation import MESSAGE_KINDS
from .schema import DELIVERIES, EVENTS, conform, fill, utc

__all__ = ["deliveries_of", "events_of"]

_NEVER = np.iinfo(np.int64).max
_NAT = np.iinfo(np.int64).min

# Observation columns an event's row in ``events`` is taken from, as they are.
_AS_IS = ("event_id", "type", "subject", "source", "correlation_id", "causation_id",
          "trace_id", "size", "content_type", "mode", "id_synthetic", "replay_of", "payload",
          "headers", "event_time")


def events_of(obs: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The ``events`` frame, and for each of its rows the position in ``obs`` of the row
    that describes the event (its publish, else a tap, else a receive; the first by seq).

    Events are ordered by publish time, then first sighting, then first appearance.
    """
    kind = obs["kind"]
    rows = np.flatnonzero(kind.isin(MESSAGE_KINDS).to_numpy())
    if not len(rows):
        return EVENTS.empty(), np.zeros(0, np.int64)
    codes, n_codes = _codes(obs["event_id"], rows)
    # 0 publish, 1 tap, 2 receive: which row describes an event best
    rank = _per_kind(kind, rows, {"publish": 0, "tap": 1}, 2)
    ts = obs["ts"].array.asi8[rows]
    seq = obs["seq"].to_numpy(dtype=np.int64, na_value=0)[rows]
    if len(seq) < 2 or bool((seq[1:] > seq[:-1]).all()):  # in seq order: position decides
        key = (rank.astype(np.int64) << 61) | np.arange(len(rows), dtype=np.int64)
        best = np.full(n_codes, _NEVER)
        np.minimum.at(best, codes, key)
        present = np.flatnonzero(best != _NEVER)
        pick = best[present] & ((1 << 61) - 1)
    else:
        order = np.lexsort((seq, rank, codes))
        pick = order[np.r_[True, codes[order][1:] != codes[order][:-1]]]
        present = codes[pick]
    del seq, rank
    first_seen = _least(codes, ts, n_codes)[present]
    is_pub = _per_kind(kind, rows, {"publish": True}, False)
    published = _least(codes[is_pub], ts[is_pub], n_codes)[present]
    # Without a recorded publish, the first sighting is the best publish time we have:
    # ce-time states when the occurrence happened (and a replay keeps the original's).
    published = np.where(published == _NEVER, first_seen, published)
    is_receive = _per_kind(kind, rows, {"receive": True}, False)
    received = np.bincount(codes[is_receive], minlength=n_codes)[present]
    appeared = _least(codes, np.arange(len(rows), dtype=np.int64), n_codes)[present]
    del codes, ts, is_pub, is_receive
    order = np.lexsort((appeared, first_seen, published))
    best = rows[pick[order]]
    was_published = (kind.array.take(best) == "publish")
    frame: dict[str, Any] = {name: _take(obs[name], best) for name in _AS_IS}
    unpublished = np.where(was_published, np.arange(len(best)), -1)
    frame.update({
        "published_at": _utc(published[order]),
        "first_seen_at": _utc(first_seen[order]),
        "producer": _take(obs["observer"], best).take(unpublished, allow_fill=True),
        "emitted_by": _take(obs["consumer"], best).take(unpublished, allow_fill=True),
        "emitted_seq": _take(obs["ref"], best).take(unpublished, allow_fill=True),
        "deliveries": received[order],
    })
    return conform(pd.DataFrame(frame, copy=False), EVENTS), best


def deliveries_of(obs: pd.DataFrame, events: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The ``deliveries`` frame (in seq order), and for each of its rows the position of its
    event in ``events`` (-1 if unknown)."""
    kind = obs["kind"]
    receives = np.flatnonzero((kind == "receive").to_numpy())
    if not len(receives):
        return DELIVERIES.empty(), np.zeros(0, np.int64)
    seq = obs["seq"].to_numpy(dtype=np.int64, na_value=0)
    recv_seq = seq[receives]
    if len(recv_seq) > 1 and not bool((recv_seq[1:] > recv_seq[:-1]).all()):
        receives = receives[np.argsort(recv_seq, kind="stable")]
        recv_seq = seq[receives]
    handled = np.flatnonzero((kind == "handled").to_numpy())
    # Match each handled row to its receive by seq (the last one wins if repeated).
    # (as integers: a float64 is exact to 2^53 only, and seq may reach 10^18)
    ref = obs["ref"].to_numpy(dtype=np.int64, na_value=0)[handled]
    known = obs["ref"].notna().to_numpy()[handled]
    by_seq = np.argsort(recv_seq, kind="stable")
    at = np.minimum(np.searchsorted(recv_seq[by_seq], ref), len(recv_seq) - 1)
    hit = (recv_seq[by_seq][at] == ref) & known
    done = np.full(len(receives), -1, np.int64)
    done[by_seq[at[hit]]] = handled[hit]
    del seq, recv_seq, ref, known, by_seq, at, hit, handled
    where = positions(obs["event_id"].iloc[receives], events["event_id"])
    outcome = _take(obs["outcome"], done, fill=True)
    dropped = np.asarray(outcome == "dropped", dtype=bool)
    published = _take(events["published_at"], where, fill=True)
    started = _take(obs["started_at"], done, fill=True)
    finished = _take(obs["ts"], np.where(dropped, -1, done), fill=True)
    frame = {
        "event_id": _take(obs["event_id"], receives),
        "consumer": _take(obs["consumer"], receives),
        "queue": _take(obs["queue"], receives),
        "observer": _take(obs["observer"], receives),
        "subject": _take(obs["subject"], receives),
        "type": _take(events["type"], where, fill=True),
        "correlation_id": _take(events["correlation_id"], where, fill=True),
        "published_at": published,
        "received_at": _take(obs["ts"], receives),
        "started_at": started,
        "done_at": finished,
        "queue_s": _seconds(published, started),
        "processing_s": _seconds(started, finished),
        "outcome": fill(pd.Series(outcome, copy=False), "pending").array,
        "error": _take(obs["error"], done, fill=True),
        "delivery_count": _take(obs["delivery_count"], receives),
        "ack": _take(obs["ack"], done, fill=True),
        "seq": _take(obs["seq"], receives),
    }
    return conform(pd.DataFrame(frame, copy=False), DELIVERIES), where


def _codes(ids: pd.Series, rows: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer codes of ``ids`` at ``rows`` (-1 never occurs: message rows have ids), and
    how many codes there can be."""
    if isinstance(ids.dtype, pd.CategoricalDtype):
        codes = np.asarray(ids.array.codes)[rows]
        if not (codes < 0).any():
            return codes, len(ids.dtype.categories)
    codes, uniques = pd.factorize(ids.iloc[rows], use_na_sentinel=False)
    return codes, len(uniques)


def _per_kind(kind: pd.Series, rows: np.ndarray, values: dict[str, Any], other: Any
              ) -> np.ndarray:
    """For each of ``rows``: ``values[its kind]``, else ``other`` (a lookup of the kind's
    category codes, not a comparison of strings)."""
    if isinstance(kind.dtype, pd.CategoricalDtype):
        table = np.array([values.get(k, other) for k in kind.dtype.categories] + [other])
        return table[np.asarray(kind.array.codes)[rows]]
    return np.array([values.get(k, other) for k in kind.to_numpy()[rows]])


def _least(codes: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """The least value per code (``_NEVER`` for codes that do not occur)."""
    out = np.full(n, _NEVER)
    np.minimum.at(out, codes, values)
    return out


def _take(values: pd.Series, rows: np.ndarray, *, fill: bool = False) -> Any:
    """``values`` at ``rows`` as an array of the same dtype (with ``fill``, -1 gives a
    missing value); from an Int64 column without values, one whose data pages are never
    touched (most JetStream and server columns are empty)."""
    array = values.array
    if isinstance(array, pd.arrays.IntegerArray) and array.isna().all():
        return pd.arrays.IntegerArray(np.zeros(len(rows), np.int64), np.ones(len(rows), bool))
    return array.take(rows, allow_fill=fill)


def _utc(ns: np.ndarray) -> Any:
    return utc(ns).array


def _seconds(start: Any, end: Any) -> np.ndarray:
    """``end - start`` in float seconds, NaN where either is missing."""
    a, b = start.asi8, end.asi8
    out = (b - a) / 1e9
    out[(a == _NAT) | (b == _NAT)] = np.nan
    return out
