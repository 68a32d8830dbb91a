"""Recording to a file: tap subjects and write the trace in segments as it grows.

This is what ``evtkit record`` runs; in a notebook::

    path = await ek.record("run.parquet", subjects=["orders.>"], duration=10)
    trace = ek.load(path)

Several recorders can share one capture: with ``shard="a"``, ``"b"``, … each joins the queue
group ``group`` for its tap, so the server hands every message to one of them, and each
writes its own parts of the same directory (``part-a-000000.parquet``, …); loading the
directory gives the union as one trace. Run them on one host or many: ``out`` on a shared
or network file system, or a URL of an object store (``s3://bucket/run.parquet``,
``gs://...``; anything :mod:`pyarrow.fs` or fsspec opens), where each part is one object.

Rows are flushed to disk every ``flush_interval`` seconds (default 1), so a recorder killed
with SIGKILL loses at most the last interval; a stop request (SIGINT/SIGTERM in the CLI, or
cancelling the task) flushes everything and marks the trace complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from .capture.bus import Bus
from .store import SegmentWriter, check_shard, destination, trace_format

__all__ = ["record"]


async def record(
    out: str | os.PathLike[str],
    *,
    url: str | None = None,
    subjects: Sequence[str] = (">",),
    collect: bool = False,
    jetstream: float | None = None,
    msg_traces: bool = False,
    duration: float | None = None,
    count: int | None = None,
    flush_interval: float = 0.5,
    name: str = "evtkit-record",
    progress: bool = True,
    stop: asyncio.Event | None = None,
    on_ready: Any = None,
    shard: str | None = None,
    group: str = "evtkit-record",
    **nats_options: Any,
) -> dict[str, Any]:
    """Tap ``subjects`` and write every message to ``out`` until a limit or ``stop``.

    Args:
        out: trace path (``.parquet`` → a directory of parts, ``.jsonl`` → appended lines),
            or the URL of a ``.parquet`` directory (``s3://bucket/run.parquet``).
        url: NATS server; default ``$NATS_URL``, else an embedded server.
        subjects: subjects or wildcards to capture (may be empty when collecting).
        collect: also merge telemetry rows sent by evtkit services (see
            :mod:`evtkit.capture.telemetry`).
        jetstream: also sample every JetStream consumer this often (seconds) and record
            advisories (see :meth:`Bus.watch_jetstream`).
        msg_traces: also record the server's message-trace reports sent to
            :data:`evtkit.MSG_TRACE_SUBJECT` (an account ``msg_trace`` destination).
        duration: stop after this many seconds.
        count: stop after this many messages.
        flush_interval: seconds between writes to disk. A crash loses at most this plus
            the time one write takes (rows are drained at the start of each write): with
            the default, about a second.
        name: connection name.
        progress: show a live progress bar (messages, rate, drops).
        stop: an event that ends the recording when set (the CLI sets it on SIGINT).
        on_ready: called with the bus once the tap is subscribed (e.g. to print its URL).
        shard: this recorder's name among several sharing the capture (see the module
            docstring); ``out`` must be a ``.parquet`` directory.
        group: the queue group the shards' taps share.

    Returns:
        Totals: ``path, messages, drops, parts, rows, duration_s, complete``.
    """
    if duration is not None and duration <= 0:
        raise ValueError(f"duration must be positive, not {duration}")
    if count is not None and count <= 0:
        raise ValueError(f"count must be positive, not {count}")
    if not 0 < flush_interval <= 60:
        raise ValueError(f"flush_interval must be in (0, 60] seconds, not {flush_interval}")
    if not subjects and not (collect or jetstream or msg_traces):
        raise ValueError("nothing to record: give subjects, collect, jetstream or msg_traces")
    if jetstream is not None and jetstream <= 0:
        raise ValueError(f"jetstream sampling interval must be positive, not {jetstream}")
    if shard is not None:
        check_shard(shard)
        if trace_format(out) != "parquet":
            raise ValueError(f"shards write a Parquet directory, not {os.fspath(out)!r}")
        if collect or jetstream or msg_traces:
            raise ValueError("a shard records only its share of the tap; record telemetry, "
                             "JetStream and message traces with one recorder without --shard")
        if name == "evtkit-record":
            name = f"evtkit-record-{shard}"
    destination(out)  # an unknown scheme, an unreachable store: before connecting
    stop = stop or asyncio.Event()
    # The recorder writes its own rows; it must not also ship them as telemetry.
    nats_options.setdefault("telemetry", 0)
    async with Bus(url, name=name, **nats_options) as bus:
        if subjects:
            await bus.tap(*subjects, queue=group if shard is not None else None)
        if collect:
            await bus.collect()
        if jetstream:
            await bus.watch_jetstream(interval=jetstream)
        if msg_traces:
            await bus.record_message_traces()
        writer = SegmentWriter(out, {**bus.recorder.metadata, "subjects": list(subjects),
                                     "started_at_ns": bus.recorder.started_ns}, shard)
        if on_ready is not None:
            on_ready(bus)
        started = time.monotonic()
        what = ", ".join([*subjects, *(["telemetry"] if collect else []),
                          *(["JetStream"] if jetstream else []),
                          *(["message traces"] if msg_traces else [])])
        who = f"shard {shard}: " if shard is not None else ""
        bar = tqdm(total=count or None, unit="msg", disable=not progress, leave=True,
                   desc=f"{who}recording {what}", dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 5.0)
        shown = 0
        next_flush = started + flush_interval
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.05)
                stats = bus.recorder.stats()
                bar.update(stats.messages - shown)
                shown = stats.messages
                bar.set_postfix(drops=stats.drops, refresh=False)
                now = time.monotonic()
                if (duration is not None and now - started >= duration) or (
                    count is not None and stats.messages >= count
                ):
                    break
                if now >= next_flush:
                    await _flush(bus, writer)
                    next_flush = now + flush_interval
        finally:
            # Whatever ended the loop (limit, stop, cancel), keep what was captured.
            await asyncio.shield(_finish(bus, writer))
            bar.close()
        trace_meta = writer.metadata
        return {
            "path": os.fspath(out),
            "messages": bus.recorder.stats().messages,
            "drops": bus.recorder.drops,
            "parts": writer.parts,
            "rows": writer.rows,
            "duration_s": time.monotonic() - started,
            "complete": trace_meta.get("complete", False),
        }


def _progress_meta(bus: Bus) -> dict[str, Any]:
    """Metadata that changes while recording (the processes collected from, if any)."""
    meta = {"ended_at_ns": time.time_ns(), "drops": bus.recorder.drops}
    if "collected" in bus.recorder.metadata:
        meta["collected"] = bus.recorder.metadata["collected"]
    return meta


async def _flush(bus: Bus, writer: SegmentWriter) -> None:
    first, rows = bus.recorder.drain()
    await asyncio.to_thread(writer.write, first, rows, _progress_meta(bus))


async def _finish(bus: Bus, writer: SegmentWriter) -> None:
    # Messages the server sent before now are in the rows after this; a broken
    # connection must not lose what was captured, so its errors are ignored here.
    with contextlib.suppress(Exception):
        await bus.flush(timeout=2)
    await _flush(bus, writer)
    writer.close(_progress_meta(bus))
