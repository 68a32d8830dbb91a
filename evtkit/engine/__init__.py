"""Analysis of traces larger than memory: the same questions asked of Parquet files through
an engine — DuckDB in this process (default) or Apache Spark on a cluster — with the
analyses written once, as SQL (:mod:`evtkit.engine.sql`)."""

from .dataset import ENGINES, Dataset, open

__all__ = ["ENGINES", "Dataset", "open"]
