"""Analysis of traces larger than memory: the same questions asked of Parquet files through
an engine — DuckDB in this process (default) or Apache Spark on a cluster — with the
analyses written once, as SQL (:mod:`evtkit.engine.sql`)."""

from .dataset import ENGINES, Dataset, open
from .files import BYTES_PER_ROW, choose_engine, rows_on_disk

__all__ = ["BYTES_PER_ROW", "ENGINES", "Dataset", "choose_engine", "open", "rows_on_disk"]
