"""The kept tables stored small (evtkit/engine/kept.py): few-valued text as DuckDB ENUMs,
the deliveries' durations computed where read — the same answers, whatever the words are,
and where a column has too many distinct values to be an ENUM."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

import evtkit as ek
from evtkit._arrow import filled, to_pandas
from evtkit.engine import kept
from tests.test_engine import same_answers
from tests.test_engine_diagnose import same_verdicts

# Quotes, an empty name, a backslash, text that reads as SQL, words that sort differently
# by bytes and by locale, the word the deliveries make of a receive not handled, a NUL
# byte and a line break.
HOSTILE = ["o'brien", "", "back\\slash", "x'); DROP TABLE events; --", "Émile", "zoë",
           "Zed", "pending", "a b", "nul\x00byte", "line\nbreak"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[ek.Trace, str]:
    """A generated trace (with failures, a stall and lost messages) whose consumers,
    queues, subjects and error messages are renamed to :data:`HOSTILE` words."""
    base = ek.testing.make_trace(1_500, seed=3, failing={"audit": 0.2},
                                 stall=("billing", 2.0, 1.0), stop=("email", 3.0, 1.0))
    obs = base.observations.copy()
    for column in ("consumer", "queue", "observer", "subject", "error"):
        values = obs[column].astype(object)
        names = sorted(values.dropna().unique())
        renamed = {name: f"{HOSTILE[i % len(HOSTILE)]}{i // len(HOSTILE) or ''}"
                   for i, name in enumerate(names)}
        obs[column] = values.map(renamed, na_action="ignore")
    path = str(tmp_path_factory.mktemp("kept") / "hostile.parquet")
    ek.Trace(obs, base.metadata).save(path)
    return ek.load(path), path


def _types(ds: ek.Dataset, table: str) -> dict[str, str]:
    con = ds._engine.con
    return {str(name): str(kind) for name, kind, *_ in con.execute(f"DESCRIBE {table}").fetchall()}


def test_kept_tables_are_stored_small_with_the_same_answers(hostile):
    trace, path = hostile
    with ek.open(path) as ds:
        same_answers(trace, ds)
        pd.testing.assert_frame_equal(ds.deliveries(), trace.deliveries, check_categorical=False)
        stored = _types(ds, "deliveries")
        for column in ("consumer", "queue", "observer", "subject", "outcome", "error"):
            assert stored[column].startswith("ENUM("), (column, stored[column])
        assert stored["event_id"] == "VARCHAR"  # one per event: text
        assert "queue_s" not in stored and "processing_s" not in stored  # (computed)
        assert _types(ds, "events")["subject"].startswith("ENUM(")
        # The diagnosis blames the same consumers by their (hostile) names.
        found = same_verdicts(trace, ds)
        assert found["consumer"].isin(HOSTILE + [f"{w}1" for w in HOSTILE]).any()


def test_a_column_with_too_many_values_stays_text_with_the_same_answers(hostile, monkeypatch):
    trace, path = hostile
    subjects = trace.observations["subject"].nunique()
    monkeypatch.setattr(kept, "MOST", subjects - 1)  # subjects: one too many
    with ek.open(path) as ds:
        same_answers(trace, ds)
        stored = _types(ds, "deliveries")
        assert stored["subject"] == "VARCHAR"
        assert stored["outcome"].startswith("ENUM(")  # (three values)


def test_an_enum_result_reads_as_text_and_its_categories_as_held():
    """An ENUM comes as an Arrow dictionary of every value of its type: read as text, or
    as a categorical of the values the rows hold (not the type's others)."""
    kind = pa.dictionary(pa.uint8(), pa.string())
    words = pa.array(["a", "b", "c", "d"])
    column = pa.DictionaryArray.from_arrays(pa.array([3, None, 1, 3], pa.uint8()), words)
    assert column.type == kind
    table = pa.table({"name": column, "n": pa.array([1, 2, 3, 4])})

    as_text = to_pandas(pa.table({"name": pa.array(["d", None, "b", "d"]), "n": table["n"]}))
    plain = to_pandas(table)
    pd.testing.assert_frame_equal(plain, as_text)
    held = to_pandas(table, categories=["name"])["name"]
    assert sorted(held.cat.categories) == ["b", "d"]  # (those held, in order met)
    assert held.isna().tolist() == [False, True, False, False]

    batches = table.to_batches(max_chunksize=2)
    read = filled(batches, table.schema, 4, categories=["name"])["name"]
    assert list(read.cat.categories) == ["b", "d"]
    pd.testing.assert_series_equal(read.astype(as_text["name"].dtype), as_text["name"])
    pd.testing.assert_frame_equal(filled(batches, table.schema, 4), as_text)
