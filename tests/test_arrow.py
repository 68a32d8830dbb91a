"""``evtkit._arrow.filled``: a large result read batch by batch into arrays of its size
gives the frame the whole-table conversion gives, and never holds the result twice."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evtkit._arrow import filled, to_pandas

NAT = np.iinfo(np.int64).min

WORDS = st.one_of(st.none(), st.sampled_from(["ok", "error", "pending", "", "é", "w-1"]))
INTS = st.one_of(st.none(), st.integers(-(2**63) + 1, 2**63 - 1))


@st.composite
def tables(draw: st.DrawFn) -> tuple[pa.Table, list[int]]:
    """A table of every kind of column a query gives, and how it is cut into batches."""
    n = draw(st.integers(0, 40))
    column = st.lists  # (each column n values long)
    table = pa.table({
        "word": pa.array(draw(column(WORDS, min_size=n, max_size=n)), pa.string()),
        "text": pa.array(draw(column(st.one_of(st.none(), st.text(max_size=5)), min_size=n,
                                     max_size=n)), pa.string()),
        "count": pa.array(draw(column(INTS, min_size=n, max_size=n)), pa.int64()),
        "at": pa.array(draw(column(st.one_of(st.none(), st.integers(-(2**62), 2**62)),
                                   min_size=n, max_size=n)), pa.int64()),
        "took": pa.array(draw(column(st.one_of(st.none(), st.floats(allow_nan=False)),
                                     min_size=n, max_size=n)), pa.float64()),
        "flag": pa.array(draw(column(st.one_of(st.none(), st.booleans()), min_size=n,
                                     max_size=n)), pa.bool_()),
        "small": pa.array(draw(column(st.one_of(st.none(), st.integers(-100, 100)),
                                      min_size=n, max_size=n)), pa.int32()),
        "stamp": pa.array(draw(column(st.one_of(st.none(), st.integers(-(2**50), 2**50)),
                                      min_size=n, max_size=n)), pa.timestamp("us")),
        "single": pa.array(draw(column(st.one_of(st.none(), st.floats(-1e6, 1e6, width=32)),
                                       min_size=n, max_size=n)), pa.float32()),
    })
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    return table, cuts


def _batches(table: pa.Table, cuts: list[int]) -> list[pa.RecordBatch]:
    edges = [0, *cuts, len(table)]
    return [b for lo, hi in zip(edges, edges[1:], strict=False)
            for b in table.slice(lo, hi - lo).to_batches()] or table.to_batches()


@settings(max_examples=200, deadline=None)
@given(drawn=tables())
def test_filled_gives_the_frame_of_the_whole_table(drawn: tuple[pa.Table, list[int]]) -> None:
    """Batch by batch, cut anywhere: the values and dtypes of the whole table's conversion
    (times in microseconds too); the categories sorted, in the
    smallest codes."""
    table, cuts = drawn
    options = {"categories": ("word",), "times": ("at", "stamp")}
    got = filled(_batches(table, cuts), table.schema, len(table), **options)
    want = to_pandas(table, **options)
    assert list(got.columns) == list(want.columns)
    words = got["word"].cat.categories
    assert list(words) == sorted(words) and got["word"].cat.codes.dtype == np.int8
    pd.testing.assert_series_equal(got["word"].astype(object), want["word"].astype(object))
    pd.testing.assert_frame_equal(got.drop(columns="word"), want.drop(columns="word"))


def test_a_result_longer_than_said_is_an_error_and_a_shorter_one_a_shorter_frame() -> None:
    table = pa.table({"n": pa.array(range(10), pa.int64())})
    with pytest.raises(ValueError, match="more than the 9 rows"):
        filled(table.to_batches(max_chunksize=4), table.schema, 9)
    short = filled(table.to_batches(max_chunksize=4), table.schema, 12)
    assert short["n"].tolist() == list(range(10))


def _growth(mode: str, text: bool = False) -> dict[str, int]:
    """How much a fresh interpreter's high-water mark grows reading 8 M rows of six
    columns from DuckDB into pandas, ``filled`` or as a whole Arrow table converted (with
    ``text``, the last one an id as text, else missing)."""
    code = textwrap.dedent(f"""
        import json, duckdb
        from evtkit._arrow import filled, to_pandas
        def hwm():
            with open("/proc/self/status") as fh:
                return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM")) * 1024
        n = 8_000_000
        con = duckdb.connect()
        query = (f"SELECT i AS a, i * 2 AS b, i * 3 AS c, i::DOUBLE * 0.5 AS d, "
                 f"CASE WHEN i % 3 = 0 THEN 'x' ELSE 'y' END AS e, "
                 f"{{'i::VARCHAR' if {text!r} else 'NULL::VARCHAR'}} AS id "
                 f"FROM range({{n}}) r(i)")
        con.sql("SELECT 1").fetchall()
        base = hwm()
        if {mode!r} == "filled":
            reader = con.sql(query).to_arrow_reader(1 << 20)
            frame = filled(reader, reader.schema, n, categories=("e",))
        else:
            frame = to_pandas(con.sql(query).to_arrow_table(), categories=("e",))
        print(json.dumps({{"grew": hwm() - base,
                          "frame": int(frame.memory_usage(deep=True).sum())}}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_a_large_result_is_never_held_twice() -> None:
    """The frame (288 MB) and DuckDB's batches, not the frame twice: measured 417-464 MB
    read batch by batch, 754 MB as a whole table converted (each in a fresh interpreter,
    so its high-water mark is this read's alone)."""
    batched, whole = _growth("filled"), _growth("table")
    assert batched["frame"] == whole["frame"] > 250e6
    assert whole["grew"] > 2 * whole["frame"] > batched["grew"], (batched, whole)
    assert batched["grew"] < 0.75 * whole["grew"], (batched, whole)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_text_kept_as_read_does_not_keep_its_batches_other_columns() -> None:
    """Text columns are kept as Arrow chunks: copies of their own, or each batch's other
    columns stayed with them (measured: the read grew by 2.0-2.2× its frame before,
    1.5× since)."""
    read = _growth("filled", text=True)
    assert read["frame"] > 350e6
    assert read["grew"] < 1.8 * read["frame"], read
