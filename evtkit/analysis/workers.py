"""Queue-group workers in a diagnosis: which workers of a group were slow, and a worker
that stopped receiving while the rest of its group went on (see
:mod:`evtkit.analysis.diagnose` for the rules in words)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._units import count, duration
from .finding import NAT, Finding

if TYPE_CHECKING:
    from .consumer import Consumer
    from .diagnose import Diagnosis

__all__ = ["slow", "stopped"]


def slow(d: Diagnosis, c: Consumer, rows: pd.DataFrame, f: Finding) -> None:
    """Which workers of a queue group were slow during ``f`` (their median handler time
    there ``slow_factor`` × typical or more): all of them, or only some — named only when
    the others ran near their usual pace (under √``slow_factor`` × typical). A worker in
    between was slowed too, less within the window's edges: the group is named (a group
    slowed 8× once had one worker at 2.9× and was pinned on the other)."""
    at = rows["started_at"].array.asi8
    inside = rows[(at >= f.start) & (at <= f.end)]
    ratio = inside.groupby("observer")["processing_s"].median() / c.typical
    slow = set(ratio[ratio >= d.rules.slow_factor].index.astype(str))
    if slow:
        usual = (ratio < d.rules.slow_factor ** 0.5) | ratio.index.astype(str).isin(slow)
        f.worker = d.worker_name(c, slow) if usual.all() else None
        mine = inside[inside["observer"].astype(str).isin(slow)]
        f.slowdown = float(mine["processing_s"].median()) / c.typical


def stopped(d: Diagnosis, c: Consumer) -> None:
    """A queue-group worker that received nothing for ``min_duration_s`` or more while
    the group received so many messages that missing its even share of all of them by
    chance is less likely than one in a million: the others took its share, nothing
    was lost."""
    r = d.rules
    everyone = np.sort(c.rows["received_at"].array.asi8, kind="stable")
    everyone = everyone[everyone != NAT]
    for worker, rows in c.rows.groupby("observer", sort=True):
        got = np.sort(rows["received_at"].array.asi8, kind="stable")
        got = got[got != NAT]
        if len(got) < 2:
            continue
        gaps = np.diff(got)
        for k in np.flatnonzero(gaps >= r.min_duration_s * 1e9):
            first = int(np.searchsorted(everyone, got[k], "right"))
            last = int(np.searchsorted(everyone, got[k + 1], "left")) - 1
            others = last - first + 1
            share = 1 / len(c.workers)  # a queue group shares out evenly, on average
            # Missing its share of that many by chance: less likely than one in a million.
            if others < r.min_missed or (1 - share) ** others > 1e-6:
                continue
            # From the first message the others got in its place to the last one.
            lo, hi = int(everyone[first]), int(everyone[last])
            f = d.add(Finding("stopped_consumer", "warning", lo, hi, service=c.name,
                                 consumer=c.name, worker=str(worker), affected=others))
            f.evidence = (f"{c.name} ({worker}) received nothing for "
                          f"{duration((hi - lo) / 1e9)} from {d.at(lo)} while the rest "
                          f"of its queue group received {count(others)} messages: "
                          "nothing was lost, but the group ran short of a worker")
