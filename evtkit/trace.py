"""A trace: captured observations plus metadata, with tidy views derived from them.

::

    trace = bus.trace()            # or ek.load("run.parquet")
    trace.events                   # one row per event
    trace.deliveries               # one row per event × consumer
    trace.observations             # the raw rows (what files store)
    trace.drops, trace.gaps        # what was lost, and when the connection was down
    trace.save("run.parquet")
"""

from __future__ import annotations

import html
import os
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from .observation import MESSAGE_KINDS
from .schema import DELIVERIES, EVENTS, SCHEMA_VERSION, conform

__all__ = ["Trace"]

# Which observation describes an event best: the publish, then a tap, then a receive.
_PRIORITY = {"publish": 0, "tap": 1, "receive": 2}


class Trace:
    """Observations and metadata of one capture, with derived ``events`` and ``deliveries``.

    Args:
        observations: a frame with the columns of :data:`evtkit.schema.OBSERVATIONS`.
        metadata: capture metadata (server, client, times, ...); JSON-serialisable.
    """

    def __init__(self, observations: pd.DataFrame, metadata: dict[str, Any] | None = None):
        self.observations = observations
        self.metadata: dict[str, Any] = {"schema_version": SCHEMA_VERSION, **(metadata or {})}

    # -- derived views ---------------------------------------------------------------------

    @cached_property
    def events(self) -> pd.DataFrame:
        """One row per event; columns in :data:`evtkit.schema.EVENTS`."""
        obs = self.observations
        msgs = obs[obs["kind"].isin(MESSAGE_KINDS)]
        if msgs.empty:
            return EVENTS.empty()
        rank = msgs["kind"].map(_PRIORITY).astype(np.int64)
        order = np.lexsort((msgs["seq"].to_numpy(), rank.to_numpy()))
        best = msgs.iloc[order].drop_duplicates("event_id", keep="first").set_index("event_id")
        by_event = msgs.groupby("event_id", sort=False)
        published = msgs[msgs["kind"] == "publish"].groupby("event_id")["ts"].min()
        received = msgs[msgs["kind"] == "receive"].groupby("event_id").size()
        first_seen = by_event["ts"].min()
        frame = best.assign(
            published_at=published.reindex(best.index)
            .fillna(best["event_time"])
            .fillna(first_seen.reindex(best.index)),
            first_seen_at=first_seen.reindex(best.index),
            producer=best["observer"].where(best["kind"] == "publish"),
            emitted_by=best["consumer"].where(best["kind"] == "publish"),
            emitted_seq=best["ref"].where(best["kind"] == "publish"),
            deliveries=received.reindex(best.index).fillna(0).astype("int64"),
        ).reset_index()
        frame = frame.sort_values(["published_at", "first_seen_at"], kind="stable")
        return conform(frame.reset_index(drop=True), EVENTS)

    @cached_property
    def deliveries(self) -> pd.DataFrame:
        """One row per event × consumer; columns in :data:`evtkit.schema.DELIVERIES`."""
        obs = self.observations
        receives = obs[obs["kind"] == "receive"]
        if receives.empty:
            return DELIVERIES.empty()
        handled = obs.loc[obs["kind"] == "handled", ["ref", "ts", "started_at", "outcome", "error"]]
        handled = handled.drop_duplicates("ref", keep="last").rename(
            columns={"ref": "seq", "ts": "done_at"}
        )
        columns = ["seq", "event_id", "consumer", "queue", "observer", "subject", "ts"]
        frame = receives[columns].rename(columns={"ts": "received_at"})
        frame = frame.merge(handled.astype({"seq": "int64"}), on="seq", how="left")
        info = self.events.set_index("event_id")[["type", "correlation_id", "published_at"]]
        frame = frame.join(info, on="event_id")
        frame["outcome"] = frame["outcome"].fillna("pending")
        frame["done_at"] = frame["done_at"].where(frame["outcome"] != "dropped")
        frame["queue_s"] = (frame["started_at"] - frame["published_at"]).dt.total_seconds()
        frame["processing_s"] = (frame["done_at"] - frame["started_at"]).dt.total_seconds()
        return conform(frame.sort_values("seq").reset_index(drop=True), DELIVERIES)

    # -- counters --------------------------------------------------------------------------

    @property
    def drops(self) -> int:
        """Messages lost: slow-consumer drops reported by the client plus deliveries dropped
        because a handler fell behind its pending limits."""
        obs = self.observations
        reported = obs.loc[obs["kind"] == "drop", "count"].fillna(1).sum()
        dropped = ((obs["kind"] == "handled") & (obs["outcome"] == "dropped")).sum()
        return int(reported + dropped)

    @property
    def gaps(self) -> pd.DataFrame:
        """Connection gaps: one row per disconnect with ``observer, start, end, gap_s``
        (``end`` is NaT if the connection never came back during the capture)."""
        obs = self.observations
        rows = []
        for observer, group in obs[obs["kind"].isin(("disconnect", "reconnect"))].groupby(
            "observer", sort=True
        ):
            start = None
            for kind, ts in zip(group["kind"], group["ts"], strict=True):
                if kind == "disconnect" and start is None:
                    start = ts
                elif kind == "reconnect" and start is not None:
                    rows.append((observer, start, ts))
                    start = None
            if start is not None:
                rows.append((observer, start, pd.NaT))
        frame = pd.DataFrame(rows, columns=["observer", "start", "end"]).astype(
            {"observer": "str", "start": "datetime64[ns, UTC]", "end": "datetime64[ns, UTC]"}
        )
        frame["gap_s"] = (frame["end"] - frame["start"]).dt.total_seconds()
        return frame

    @property
    def errors(self) -> int:
        """Handler calls that raised."""
        obs = self.observations
        return int(((obs["kind"] == "handled") & (obs["outcome"] == "error")).sum())

    # -- summary ---------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Headline numbers: time span, counts of events, deliveries, consumers, subjects,
        drops, gaps and handler errors."""
        obs = self.observations
        start, end = (obs["ts"].min(), obs["ts"].max()) if len(obs) else (pd.NaT, pd.NaT)
        deliveries = self.deliveries
        gaps = self.gaps
        return {
            "start": start,
            "end": end,
            "duration_s": float((end - start).total_seconds()) if len(obs) else 0.0,
            "observations": len(obs),
            "events": len(self.events),
            "deliveries": len(deliveries),
            "subjects": int(self.events["subject"].nunique()),
            "consumers": int(deliveries["consumer"].nunique()),
            "drops": self.drops,
            "handler_errors": self.errors,
            "gaps": len(gaps),
            "gap_s": float(gaps["gap_s"].fillna(0).sum()),
            "pending": int((deliveries["outcome"] == "pending").sum()),
        }

    def describe(self) -> str:
        """A one-screen text summary (what ``evtkit info`` prints)."""
        s = self.summary()
        meta = self.metadata
        lines = [
            f"trace        {meta.get('source_path', '(in memory)')}",
            f"server       {meta.get('server_url', '?')} "
            f"(nats-server {meta.get('server_version', '?')})",
            f"captured     {_when(s['start'])} → {_when(s['end'])} ({s['duration_s']:.3f} s)",
            f"events       {s['events']:,} on {s['subjects']:,} subjects",
            f"deliveries   {s['deliveries']:,} to {s['consumers']:,} consumers "
            f"({s['pending']:,} pending, {s['handler_errors']:,} handler errors)",
            f"drops        {s['drops']:,}",
            f"gaps         {s['gaps']:,} ({s['gap_s']:.3f} s disconnected)",
        ]
        if s["events"]:
            top = self.events["subject"].value_counts().head(8)
            lines.append("top subjects " + ", ".join(f"{k} ({v:,})" for k, v in top.items()))
        if s["deliveries"]:
            per = self.deliveries.groupby("consumer")["queue_s"].median().sort_values()
            lines.append(
                "consumers    "
                + ", ".join(f"{k} (median queue {v * 1e3:.2f} ms)" for k, v in per.items())
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        s = self.summary()
        rows = [
            ("Captured", f"{_when(s['start'])} → {_when(s['end'])} ({s['duration_s']:.3f} s)"),
            ("Server", f"{self.metadata.get('server_url', '?')}"),
            ("Events", f"{s['events']:,} on {s['subjects']:,} subjects"),
            ("Deliveries", f"{s['deliveries']:,} to {s['consumers']:,} consumers"),
            ("Handler errors", f"{s['handler_errors']:,}"),
            ("Drops", f"{s['drops']:,}"),
            ("Gaps", f"{s['gaps']:,} ({s['gap_s']:.3f} s)"),
        ]
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
            for k, v in rows
        )
        subjects = ""
        if s["events"]:
            counts = self.events["subject"].value_counts().head(10)
            subjects = "<p><b>Top subjects:</b> " + ", ".join(
                f"{html.escape(str(k))} ({v:,})" for k, v in counts.items()
            ) + "</p>"
        return f"<div><b>evtkit Trace</b><table>{body}</table>{subjects}</div>"

    def __repr__(self) -> str:
        return (
            f"<Trace {len(self.observations):,} observations, {len(self.events):,} events, "
            f"{len(self.deliveries):,} deliveries>"
        )

    def __len__(self) -> int:
        return len(self.events)

    # -- files -----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the trace to ``path``: ``.parquet`` (native) or ``.jsonl`` (``.gz`` ok).

        Returns:
            The path written.
        """
        from .store import save

        return save(self, path)


def _when(ts: Any) -> str:
    return "—" if pd.isna(ts) else pd.Timestamp(ts).isoformat()
