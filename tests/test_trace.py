"""Trace views and summaries, from hand-built rows with known answers (no server)."""

from __future__ import annotations

import pandas as pd

import evtkit as ek
from evtkit.observation import build_observations

SEC = 1_000_000_000
BLOCK = b"NATS/1.0\r\nce-id: %s\r\nce-source: shop\r\n\r\n"


def rows():
    t = 1_700_000_000 * SEC
    return [
        ("publish", t, "shop", None, None, b"<script>x", None, b"{}", BLOCK % b"e1", None),
        ("receive", t + 2 * SEC, "w", "billing", "g", b"<script>x", None, b"{}", BLOCK % b"e1",
         None),
        ("handled", t + 5 * SEC, "w", "billing", "g", None, None, None, None,
         (1, t + 3 * SEC, "ok", None)),
        ("receive", t + 6 * SEC, "w", "audit", None, b"<script>x", None, b"{}", BLOCK % b"e1",
         None),
        ("disconnect", t + 7 * SEC, "w", None, None, None, None, None, None, "down"),
        ("reconnect", t + 9 * SEC, "w", None, None, None, None, None, None, "up"),
        ("disconnect", t + 10 * SEC, "w", None, None, None, None, None, None, "down"),
    ]


def test_deliveries_have_exact_times_and_pending_rows():
    trace = ek.Trace(build_observations(rows()))
    d = trace.deliveries.set_index("consumer")
    assert d.loc["billing", "queue_s"] == 3.0 and d.loc["billing", "processing_s"] == 2.0
    assert d.loc["billing", "outcome"] == "ok" and d.loc["billing", "queue"] == "g"
    assert d.loc["audit", "outcome"] == "pending" and pd.isna(d.loc["audit", "queue_s"])
    assert trace.events.loc[0, "deliveries"] == 2


def test_gaps_pair_disconnects_with_reconnects():
    gaps = ek.Trace(build_observations(rows())).gaps
    assert gaps["gap_s"].iloc[0] == 2.0
    assert len(gaps) == 2 and pd.isna(gaps["end"].iloc[1])  # still down at the end


def test_summary_and_html_escape_what_they_show():
    trace = ek.Trace(build_observations(rows()), {"server_url": "nats://h:1"})
    s = trace.summary()
    assert (s["events"], s["deliveries"], s["consumers"], s["gaps"], s["pending"]) == (
        1, 2, 2, 2, 1)
    html = trace._repr_html_()
    assert "<script>x" not in html and "&lt;script&gt;x" in html
    assert "evtkit Trace" in html and "1 on 1 subjects" in html
    assert "<script>x (1)" in trace.describe()


def test_views_keep_the_observations_ids():
    """events and deliveries take the observations' id codes: one set of ids, no copies of
    the text, and ids still compare as text."""
    trace = ek.Trace(build_observations(rows()))
    categories = trace.observations["event_id"].cat.categories
    assert trace.events["event_id"].cat.categories is categories
    assert trace.deliveries["correlation_id"].cat.categories is categories
    assert (trace.deliveries["event_id"] == "e1").all()
    assert trace.events["event_id"].tolist() == ["e1"]
