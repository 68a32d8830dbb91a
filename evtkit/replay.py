"""Replay: publish a recorded trace's events back into NATS, with their original bytes.

::

    stats = await ek.replay("data/shop-incident.parquet", bus, speed=10)
    stats.gaps            # replayed vs original inter-event gaps, for timing accuracy

Each event is sent once, from the observation that describes it best (its publish, else
a tap, else a receive), with its original payload and header block byte for byte, plus one
header, ``evtkit-replay-of``, carrying the original event id — so a capture of the replay
joins to the original even for messages that had no id on the wire. Timing between events
is preserved, divided by ``speed`` (0 means as fast as possible).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm import tqdm

from ._headers import REPLAY_OF
from .capture.bus import Bus
from .capture.envelope import with_header
from .errors import PublishError
from .schema import as_bytes
from .store import load
from .subject import Remap, matches
from .trace import Trace

__all__ = ["ReplayResult", "replay"]


@dataclass
class ReplayResult:
    """What a replay did.

    Attributes:
        sent: events published.
        skipped: events left out by the filter or limit.
        duration_s: wall time of the replay.
        gaps: one row per consecutive pair of replayed events: ``original_s`` (their gap in
            the trace, divided by the speed) and ``replayed_s`` (the gap as sent).
    """

    sent: int = 0
    skipped: int = 0
    duration_s: float = 0.0
    gaps: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        {"original_s": [], "replayed_s": []}))

    @property
    def timing_error_s(self) -> float:
        """Median absolute difference between replayed and (scaled) original gaps."""
        if self.gaps.empty:
            return 0.0
        return float((self.gaps["replayed_s"] - self.gaps["original_s"]).abs().median())


SLOWEST = 1e-6
"""The slowest replay speed (a million times slower than recorded); slower is a mistake."""


def check_speed(speed: float) -> float:
    """Return ``speed`` if a replay can use it; raise ValueError saying why not."""
    if not (speed == 0 or SLOWEST <= speed < float("inf")):  # NaN fails both tests
        raise ValueError(f"speed must be 0 (as fast as possible) or a number from {SLOWEST:g} "
                         f"(a million times slower) up, not {speed!r}")
    return speed


def replay_block(block: bytes | None, original_id: str) -> bytes:
    """The original header block with ``evtkit-replay-of`` added (or a new block)."""
    return with_header(block, REPLAY_OF, original_id)


def _selection(trace: Trace, subject_filter: str | None, limit: int | None) -> pd.DataFrame:
    """The events to replay in publish order, with the bytes of their best observation."""
    best = trace.observations[["subject", "reply", "payload", "header_block"]].iloc[
        trace.event_rows].reset_index(drop=True)
    events = pd.concat([trace.events[["event_id", "published_at"]], best], axis=1)
    if subject_filter:
        keep = [matches(subject_filter, s) for s in events["subject"]]
        events = events[keep].reset_index(drop=True)
    if limit is not None:
        events = events.head(limit)
    for column in ("payload", "header_block"):  # Python bytes (None if missing) to send
        events[column] = pd.Series(as_bytes(events[column]), index=events.index, dtype=object)
    return events


async def replay(
    trace: Trace | str | os.PathLike[str],
    bus: Bus,
    *,
    speed: float = 1.0,
    subject_map: list[str] | None = None,
    subject_filter: str | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> ReplayResult:
    """Publish ``trace``'s events through ``bus`` (see the module docstring).

    Args:
        trace: a Trace, or the path of a trace file.
        bus: a connected :class:`~evtkit.capture.bus.Bus` (its recorder does not record replays).
        speed: 1 keeps the original timing, 10 is ten times faster, 0 as fast as possible.
        subject_map: renames, ``OLD=NEW`` (exact, or prefixes ``a.>=b.>``).
        subject_filter: replay only subjects matching this (wildcards allowed).
        limit: replay at most this many events (after filtering).
        progress: show a progress bar.

    Raises:
        ValueError: negative speed or limit, or a malformed subject map.
        TraceFormatError: the trace file cannot be read.
    """
    check_speed(speed)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must not be negative, not {limit}")
    remap = Remap(subject_map or [])
    if not isinstance(trace, Trace):
        trace = load(trace)
    events = _selection(trace, subject_filter, limit)
    total = len(trace.events)
    pub = events["published_at"].array.asi8
    offsets = (pub - pub[0]) / 1e9 / speed if speed and len(pub) else np.zeros(len(pub))
    sent_at = np.zeros(len(events))
    bar = tqdm(total=len(events), unit="event", disable=not progress, desc="replaying",
               mininterval=0.5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, row in enumerate(events.itertuples(index=False)):
        if speed:
            wait = start + offsets[i] - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        subject = remap.apply(row.subject) if remap else row.subject
        block = replay_block(row.header_block, row.event_id)
        payload = row.payload or b""
        reply = row.reply if isinstance(row.reply, str) else None
        sent_at[i] = time.perf_counter()
        try:
            await bus.send_raw(subject, payload, block, reply=reply)
        except PublishError as exc:  # keeps its type; the note says how far the replay got
            bar.close()
            exc.add_note(f"replay stopped after {i:,} of {len(events):,} events, at event "
                         f"{row.event_id} on {subject!r}")
            raise
        bar.update(1)
    await bus.flush()
    bar.close()
    duration = time.perf_counter() - sent_at[0] if len(events) else 0.0
    gaps = pd.DataFrame({"original_s": np.diff(offsets), "replayed_s": np.diff(sent_at)})
    return ReplayResult(sent=len(events), skipped=total - len(events), duration_s=duration,
                        gaps=gaps)


def describe(result: ReplayResult, speed: float) -> str:
    """A few lines about a finished replay (what ``evtkit replay`` prints)."""
    lines = [f"replayed {result.sent:,} events in {result.duration_s:.3f} s"
             f"{f' ({result.skipped:,} skipped by filter/limit)' if result.skipped else ''}"]
    if speed and len(result.gaps):
        lines.append(f"timing: median |replayed gap - original gap / {speed:g}| = "
                     f"{result.timing_error_s * 1e3:.3f} ms over {len(result.gaps):,} gaps")
    return "\n".join(lines)
