"""``Dataset.diagnose()``, ``problems()`` and ``lag()``'s verdicts on a trace left on disk
equal the in-memory ones: the same rules, fed by queries, one consumer's deliveries at a
time — on generated faults, the recorded shop traces and a live demo run with JetStream,
a queue group and worker faults."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

import evtkit as ek
from evtkit.engine.evidence import EngineEvidence
from tests.paths import ROOT
from tests.watching import calls_to

FAULTS = {
    "stall": {"stall": ("billing", 4.0, 2.0)},
    "stop": {"stop": ("email", 6.0, 1.5)},
    "failing": {"failing": {"audit": 0.2}},
    "slow": {"slow": "search"},
    "skewed clock": {"skew": {"shipping": 0.05}},
    "clock behind": {"skew": {"shipping": -0.05}},
    "everything": {"failing": {"audit": 0.1}, "stall": ("billing", 4.0, 2.0),
                   "stop": ("email", 6.0, 1.5), "orphans": 5, "cycle": True},
}


def same_verdicts(trace: ek.Trace, ds: ek.Dataset) -> pd.DataFrame:
    found = trace.diagnose()
    pd.testing.assert_frame_equal(ds.diagnose(), found)
    pd.testing.assert_frame_equal(ds.problems(), trace.problems())
    mine, theirs = trace.lag(), ds.lag()
    assert mine["consumer"].tolist() == theirs["consumer"].tolist()
    for column in ("status", "status_now", "reason", "backlog_max"):
        assert mine[column].tolist() == theirs[column].tolist(), column
    assert ds.verdict() == trace.verdict()
    return found


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_generated_faults_are_found_alike(name, tmp_path):
    path = tmp_path / "trace.parquet"
    ek.testing.make_trace(3_000, seed=5, **FAULTS[name]).save(path)
    with ek.open(path) as ds:
        found = same_verdicts(ek.load(path), ds)
    assert len(found)  # every fault here leaves a finding to compare


def test_the_cycle_and_orphans_are_named_alike(tmp_path):
    path = tmp_path / "trace.parquet"
    ek.testing.make_trace(600, seed=2, orphans=4, cycle=True).save(path)
    with ek.open(path) as ds:
        problems = ds.problems().set_index("problem")
    assert problems.loc["orphan", "count"] == 4
    assert problems.loc["cycle", "count"] == 3
    assert "cycle-a" in problems.loc["cycle", "detail"]


@pytest.mark.parametrize("name", ["shop-incident.parquet", "shop-baseline.parquet"])
def test_recorded_shop_traces_alike_with_and_without_a_baseline(name):
    path = ROOT / "data" / name
    with ek.open(path) as ds, ek.open(ROOT / "data" / "shop-baseline.parquet") as base:
        same_verdicts(ek.load(path), ds)
        against = ek.load(path).diagnose(baseline=ek.load(ROOT / "data" /
                                                           "shop-baseline.parquet"))
        pd.testing.assert_frame_equal(ds.diagnose(baseline=base), against)


def test_a_live_run_with_jetstream_and_workers_alike(nats_server, tmp_path):
    trace = asyncio.run(ek.demo.run_shop(
        url=nats_server.url, duration=4, rate=40, seed=5, progress=False, jetstream=True,
        faults=["errors:ledger:1@1+1.5", "stop:billing-1@1+2", "stall:inventory@1.5+1"]))
    path = tmp_path / "demo.parquet"
    trace.save(path)
    with ek.open(path) as ds:
        found = same_verdicts(ek.load(path), ds)
    kinds = set(found["kind"])
    assert {"gave_up", "failing_handler", "stalled_consumer"} <= kinds


def test_one_consumers_rows_at_a_time(tmp_path):
    path = tmp_path / "trace.parquet"
    ek.testing.make_trace(2_000, seed=1, stall=("billing", 3.0, 1.0)).save(path)
    with ek.open(path) as ds:
        evidence = EngineEvidence(ds)
        from evtkit.analysis.diagnose import Diagnosis, Rules

        d = Diagnosis(evidence, None, Rules())
        d.run()
        held = [c.name for c in d.consumers if c._rows is not None]
        assert len(held) <= 1 and len(d.consumers) > 3


def test_a_trace_without_deliveries(tmp_path):
    from evtkit.store import SegmentWriter

    path = tmp_path / "published-only.parquet"
    writer = SegmentWriter(path, {})
    writer.write(0, [("publish", 1_700_000_000_000_000_000 + i, "pub", None, None, b"a.b",
                      None, b"{}", b"NATS/1.0\r\nce-id: e%d\r\n\r\n" % i, None)
                     for i in range(5)])
    writer.close()
    with ek.open(path) as ds:
        trace = ek.load(path)
        assert ds.lag().empty and list(ds.lag().columns) == list(trace.lag().columns)
        pd.testing.assert_frame_equal(ds.diagnose(), trace.diagnose())
        pd.testing.assert_frame_equal(ds.problems(), trace.problems())


def test_ids_published_twice_are_found_alike(tmp_path):
    """Duplicate publishes are looked for only when the kept events count one: found, in
    the order of their second publish, as in memory."""
    trace = ek.testing.make_trace(300, seed=4)
    obs = trace.observations
    again = obs[obs["kind"] == "publish"].iloc[[7, 3]].copy()
    again["seq"] = (obs["seq"].max() + 1 + pd.Series(range(len(again)))).to_numpy()
    twice = ek.Trace(pd.concat([obs, again], ignore_index=True), dict(trace.metadata))
    path = tmp_path / "twice.parquet"
    twice.save(path)
    with ek.open(path) as ds:
        problems = ds.problems()
    pd.testing.assert_frame_equal(problems, ek.load(path).problems())
    row = problems.set_index("problem").loc["duplicate_id"]
    assert row["count"] == 2 and row["event_id"] == str(again["event_id"].iloc[0])


def test_each_consumers_rows_are_read_ahead_on_the_other_connection(tmp_path):
    """While the rules work on one consumer's rows, the next one's are read on DuckDB's
    other connection: no row query of the diagnosis runs on the main one, each consumer is
    read once, and rows read ahead equal rows read when asked; a request out of turn is
    read there and then, and the read under way goes on if it is still the next one."""
    path = tmp_path / "trace.parquet"
    ek.testing.make_trace(1_500, seed=3, stall=("billing", 3.0, 1.0)).save(path)
    with ek.open(path) as ds:
        ds.problems()
        engine = ds._engine
        asked = calls_to(engine, "frame")
        soon = calls_to(engine, "frame_soon", lambda sql, p, **k: p["c"])
        found = ds.diagnose()
        assert not [q for q in asked if "WHERE consumer = :c" in q and "deliveries" in q]
        assert len(found) and set(soon) == set(EngineEvidence(ds).consumers())
        assert all(a != b for a, b in zip(soon, soon[1:], strict=False))  # (none read twice
        # in a row: a consumer is read again only when a later rule revisits it)
        names = EngineEvidence(ds).consumers()
        ahead, asked_now = EngineEvidence(ds), EngineEvidence(ds)
        soon.clear()
        ahead.read_ahead(names[:2])
        for name in (names[0], names[2], names[1]):  # (the second one out of turn)
            pd.testing.assert_frame_equal(ahead.deliveries_of(name),
                                          asked_now.deliveries_of(name))
            assert ahead._ahead == ([names[1]] if name != names[1] else [])
        assert soon == names[:2]  # (the read under way was not begun again)


def test_closing_stops_a_read_under_way(tmp_path):
    """A dataset closed while its other connection still reads does not wait for the read
    to finish: DuckDB is interrupted, and whoever waits for the rows gets an error."""
    path = tmp_path / "trace.parquet"
    ek.testing.make_trace(200, seed=3).save(path)
    ds = ek.open(path)
    endless = ds._engine.frame_soon("SELECT count(*) AS n FROM range(1000000000000) a")
    ds.close()  # (the suite's timeout, were it to wait: the count takes hours)
    with pytest.raises(Exception, match="(?i)interrupt"):
        endless.result(timeout=60)
