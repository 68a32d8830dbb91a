"""The demo shop: every service, the queue group split, and injected faults in its trace."""

from __future__ import annotations

import subprocess
import sys

import pytest

import evtkit as ek
from evtkit.demo import parse_fault


@pytest.fixture(scope="module")
def shop_trace(nats_server) -> ek.Trace:
    import asyncio

    return asyncio.run(ek.demo.run_shop(
        url=nats_server.url, duration=4, rate=40, seed=3, progress=False,
        faults=["slow:billing:10@0.5+1.5", "errors:shipping:0.3", "stall:inventory@1.5+1",
                "stop:notifications@2+1.5", "burst:orders:60@0.3"]))


def test_every_service_on_its_own_connection(shop_trace):
    observers = set(shop_trace.observations["observer"].dropna())
    assert {"orders", "inventory", "billing-1", "billing-2", "shipping", "notifications",
            "analytics"} <= observers
    subjects = set(shop_trace.events["subject"])
    assert {"orders.placed", "inventory.reserved", "payments.captured",
            "shipments.created"} <= subjects
    assert set(shop_trace.deliveries["consumer"]) == {"inventory", "billing", "shipping",
                                                      "notifications"}
    # analytics taps everything: it saw every event.
    taps = shop_trace.observations[shop_trace.observations["kind"] == "tap"]
    assert set(taps["event_id"]) == set(shop_trace.events["event_id"])


def test_queue_group_split_across_both_workers(shop_trace):
    billing = shop_trace.deliveries[shop_trace.deliveries["consumer"] == "billing"]
    per_worker = billing.groupby("observer").size()
    assert set(per_worker.index) == {"billing-1", "billing-2"} and per_worker.min() > 0
    assert billing["event_id"].is_unique  # each event to one worker only


def test_injected_faults_are_visible(shop_trace):
    lag = shop_trace.lag().set_index("consumer")
    assert lag.loc["inventory", "status"] == "STALL"
    assert lag.loc["notifications", "status"] == "STOP"
    assert lag.loc["shipping", "errors"] > 0
    assert lag.loc["billing", "queue_max_s"] > 10 * lag.loc["inventory", "queue_p50_s"]
    # The burst: 60 orders within a few milliseconds.
    placed = shop_trace.events[shop_trace.events["subject"] == "orders.placed"]
    gaps = placed["published_at"].diff().dt.total_seconds()
    assert (gaps < 0.005).sum() >= 59
    # Causality is complete: every event but the orders has a known cause.
    lin = shop_trace.lineage().set_index("event_id")
    not_orders = shop_trace.events[shop_trace.events["subject"] != "orders.placed"]["event_id"]
    assert (lin.loc[not_orders, "link"] == "explicit").all()


@pytest.mark.parametrize("spec", ["slow:billing", "errors:billing:2", "stall:shipping",
                                  "nope:billing:1", "slow:orders:2", "stop:x@1+1", "burst"])
def test_bad_fault_specs(spec):
    with pytest.raises(ValueError, match="fault"):
        parse_fault(spec)


def test_cli_writes_a_loadable_trace(url, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "evtkit", "demo", "--orders", "30", "--rate", "60", "--server",
         url, "--out", str(tmp_path), "--name", "d.parquet", "--quiet"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"trace written to {tmp_path / 'd.parquet'}" in result.stdout
    trace = ek.load(tmp_path / "d.parquet")
    assert (trace.events["subject"] == "orders.placed").sum() == 30


def test_cli_bad_fault_is_one_line():
    result = subprocess.run([sys.executable, "-m", "evtkit", "demo", "--fault", "slow:x"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("evtkit: error: fault 'slow:x'")
