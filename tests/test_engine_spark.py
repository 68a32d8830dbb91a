"""``ek.open(path, engine="spark")``: the same SQL on a real Spark (local mode, two cores)
gives DuckDB's answers on the same generated trace — the one definition, two engines."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

import evtkit as ek

# pyspark is a dev dependency and .ci/run installs Java: a missing one fails, never skips.


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("evtkit-tests")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "4")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.driver.host", "127.0.0.1")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> str:
    trace = ek.testing.make_trace(1_200, seed=3, failing={"audit": 0.1},
                                  stall=("billing", 2.0, 1.0), stop=("email", 3.0, 1.0))
    target = str(tmp_path_factory.mktemp("spark") / "trace.parquet")
    trace.save(target)
    return target


def test_spark_answers_equal_duckdbs(spark, path):
    with ek.open(path) as duck, ek.open(path, engine="spark", spark=spark) as sp:
        assert sp.engine == "spark" and duck.engine == "duckdb"
        assert sp.summary() == duck.summary()
        a, b = sp.lag("100ms"), duck.lag("100ms")
        assert a[["consumer", "queue"]].equals(b[["consumer", "queue"]])
        numbers = a.select_dtypes("number").columns
        np.testing.assert_allclose(a[numbers].to_numpy(float), b[numbers].to_numpy(float),
                                   rtol=1e-12)
        pd.testing.assert_frame_equal(sp.backlog("100ms"), duck.backlog("100ms"))
        pd.testing.assert_frame_equal(sp.fanout(), duck.fanout())
        pd.testing.assert_frame_equal(sp.flows(), duck.flows())


def test_spark_loads_one_flow_as_a_trace(spark, path):
    trace = ek.load(path)
    flow = trace.chains()["correlation_id"].iloc[0]
    with ek.open(path, engine="spark", spark=spark) as sp:
        pd.testing.assert_frame_equal(sp.critical_path(flow), trace.critical_path(flow))
        assert sp.trace(correlation_id="x' OR '1'='1").observations.empty


def test_spark_joins_shards_as_duckdb_does(spark, tmp_path):
    from evtkit.store import SegmentWriter
    from tests.test_engine import _rows

    path = tmp_path / "sharded.parquet"
    for shard, consumer in (("a", "alpha"), ("b", "beta")):
        writer = SegmentWriter(path, {"shard": shard}, shard=shard)
        writer.write(0, _rows(30, consumer, 1_700_000_000_000_000_000, 0))
        writer.close()
    with ek.open(path) as duck, ek.open(path, engine="spark", spark=spark) as sp:
        assert sp.summary() == duck.summary() and sp.summary()["pending"] == 0
        pd.testing.assert_frame_equal(sp.lag("10ms"), duck.lag("10ms"))


def test_spark_diagnoses_as_duckdb_does(spark, path):
    with ek.open(path) as duck, ek.open(path, engine="spark", spark=spark) as sp:
        found = duck.diagnose()
        assert len(found) and {"stalled_consumer", "stopped_consumer"} <= set(found["kind"])
        pd.testing.assert_frame_equal(sp.diagnose(), found)
        pd.testing.assert_frame_equal(sp.problems(), duck.problems())


def test_spark_follows_flows_as_duckdb_does(spark, path):
    with ek.open(path) as duck, ek.open(path, engine="spark", spark=spark) as sp:
        pd.testing.assert_frame_equal(sp.chains(), duck.chains())
        pd.testing.assert_frame_equal(sp.flow_graph(), duck.flow_graph())
        pd.testing.assert_frame_equal(sp.deliveries(sample=200), duck.deliveries(sample=200),
                                      check_categorical=False)


def test_the_dialects_pick_the_same_row(spark, path):
    """``max_by``: the largest key, ties broken by the largest second key, NULL keys
    skipped, the extreme BIGINTs ordered exactly — alike in both dialects."""
    rows = ("(1, -9223372036854775808, 9223372036854775807), (2, 5, 1), (3, 5, 2), "
            "(4, NULL, 99), (5, -5, 9)")
    with ek.open(path) as duck, ek.open(path, engine="spark", spark=spark) as sp:
        for ds in (duck, sp):
            e = ds._engine
            got = e.frame(f"SELECT {e.max_by('v', 'k', 't')} AS v, "
                          f"{e.min_by('v', 'k')} AS first FROM (VALUES {rows}) AS x(v, k, t)")
            assert (int(got["v"].iloc[0]), int(got["first"].iloc[0])) == (3, 1), ds.engine
