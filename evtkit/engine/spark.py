"""Apache Spark as an engine: the analyses of :mod:`evtkit.engine.sql` in Spark SQL over the
trace's files, through a session the caller has (a cluster, Databricks, Spark Connect, or
``local[*]``)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .._arrow import to_pandas
from .backends import Engine
from .sql import COLUMNS

__all__ = ["SparkEngine"]


def _spark(sql_type: str) -> str:
    return {"MAP": "map<string,string>"}.get(sql_type, sql_type.lower())


class SparkEngine(Engine):
    """Spark SQL over the same files through an existing session (a cluster, Databricks,
    Spark Connect, or ``local[*]``). Parquet's nanosecond timestamps are read as BIGINT
    (``spark.sql.legacy.parquet.nanosAsLong``), which is what the queries expect.

    Args:
        files: Parquet paths the cluster can read (``s3a://``, ``abfss://``, ``hdfs://``, local).
        spark: a ``pyspark.sql.SparkSession``.
    """

    name = "spark"
    _views = 0

    def __init__(self, files: list[str], shifts: dict[str, int], spark: Any) -> None:
        from pyspark.sql import functions as F  # noqa: N812 - pyspark's convention

        self.spark = spark
        self.shifts = shifts
        spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
        frame = spark.read.option("mergeSchema", "true").parquet(*files)
        present = set(frame.columns)
        columns = [F.col(n).cast(_spark(t)) if n in present
                   else F.lit(None).cast(_spark(t)).alias(n) for n, t in COLUMNS.items()]
        SparkEngine._views += 1
        self.prefix = f"evtkit_{os.getpid()}_{SparkEngine._views}_"
        self.names = {"raw": f"{self.prefix}raw"}
        frame.select(*columns, F.col("_metadata.file_name").alias("file")) \
            .createOrReplaceTempView(self.names["raw"])

    def _define(self, name: str, select: str, *, keep: bool) -> None:
        if name in self.names:  # defined again: its old cache goes first
            self.spark.catalog.uncacheTable(self.names[name])
        self.names[name] = f"{self.prefix}{name}"
        self.spark.sql(select).createOrReplaceTempView(self.names[name])
        if keep:
            self.spark.catalog.cacheTable(self.names[name])

    def _shifts(self) -> None:
        self.names["shifts"] = f"{self.prefix}shifts"
        self.spark.createDataFrame(list(self.shifts.items()), "file string, shift bigint") \
            .createOrReplaceTempView(self.names["shifts"])

    def frame(self, sql: str, params: Mapping[str, Any] | None = None, *,
              categories: Sequence[str] = (), times: Sequence[str] = (),
              size: int | None = None) -> pd.DataFrame:
        """Run ``sql`` (with ``:name`` parameters) and return the result as pandas (its
        ``size`` not needed: Spark hands it over whole)."""
        self.prepare()
        result = self.spark.sql(self.text(sql), args=dict(params or {}))
        return to_pandas(result.toArrow(), categories, times)

    @staticmethod
    def percentiles(column: str, qs: tuple[float, ...]) -> str:  # noqa: D102 - see Engine
        return f"percentile({column}, array({', '.join(map(str, qs))}))"

    @staticmethod
    def min_by(value: str, key: str) -> str:  # noqa: D102 - see Engine
        return f"min_by({value}, {key})"

    @staticmethod
    def max_by(value: str, key: str, tiebreak: str) -> str:  # noqa: D102 - see Engine
        return f"max_by({value}, CASE WHEN {key} IS NOT NULL THEN struct({key}, {tiebreak}) END)"

    def close(self) -> None:
        """Drop the views (the session is the caller's)."""
        for name in self.names.values():
            self.spark.catalog.dropTempView(name)
