"""Frame schemas: conformance problems, columns added per version, empty frames, the
Arrow round trip, conform(), and the helpers positions(), utc() and describe()."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evtkit as ek
from evtkit._arrow import categorical, ids
from evtkit.observation import build_observations
from evtkit.schema import (
    DELIVERIES,
    EVENTS,
    OBSERVATIONS,
    SCHEMA_VERSION,
    as_dicts,
    concat,
    conform,
    fill,
    positions,
    text,
    to_frame,
    to_table,
    utc,
    with_missing,
)
from evtkit.schema import column as to_pandas_column

SCHEMAS = [OBSERVATIONS, EVENTS, DELIVERIES]
SEC = 1_000_000_000
T = 1_700_000_000 * SEC
BLOCK = b"NATS/1.0\r\nce-id: e1\r\nce-type: placed\r\nx-tenant: acme\r\n\r\n"
JETSTREAM_COLUMNS = ["stream", "stream_seq", "consumer_seq", "delivery_count", "ack", "pending",
                     "ack_pending", "redelivered", "waiting", "ack_floor", "last_active",
                     "server"]


def observations() -> pd.DataFrame:
    """A few rows of different kinds, so most columns hold something."""
    return build_observations([
        ("publish", T, "shop", None, None, b"orders.placed", None, b"{}", BLOCK, None),
        ("receive", T + SEC, "w", "billing", "g", b"orders.placed", None, b"{}", BLOCK, None),
        ("handled", T + 2 * SEC, "w", "billing", "g", None, None, None, None,
         (1, T + SEC, "error", "ValueError: no")),
        ("drop", T + 3 * SEC, "w", "billing", None, b"orders.placed", None, None, None,
         (4, "slow consumer")),
        ("consumer_info", T + 4 * SEC, "w", "billing", None, None, None, None, None,
         ("ORDERS", 3, 1, 0, 0, 9, 10, 8, T, "n1")),
    ], first_seq=5)


class TestColumns:
    def test_names_are_in_declared_order_and_unique(self):
        for schema in SCHEMAS:
            assert schema.names == [c.name for c in schema.columns]
            assert len(set(schema.names)) == len(schema.names)
            assert list(schema.by_name) == schema.names

    def test_arrow_schema_has_one_field_per_column(self):
        arrow = OBSERVATIONS.arrow
        assert arrow.names == OBSERVATIONS.names
        assert arrow.field("seq").type == pa.int64()
        assert arrow.field("ts").type == pa.timestamp("ns", tz="UTC")
        assert arrow.field("payload").type == pa.binary()
        assert arrow.field("headers").type == pa.map_(pa.string(), pa.string())


class TestProblems:
    def test_a_conforming_frame_has_none(self):
        assert OBSERVATIONS.problems(observations()) == []
        for schema in SCHEMAS:
            assert schema.problems(schema.empty()) == []

    def test_a_missing_column_is_named(self):
        frame = observations().drop(columns=["ts"])
        assert OBSERVATIONS.problems(frame) == ["missing column 'ts'"]

    def test_a_wrong_dtype_is_named_with_both_dtypes(self):
        frame = observations()
        frame["seq"] = frame["seq"].astype("int64")
        assert OBSERVATIONS.problems(frame) == ["column 'seq' has dtype int64, expected Int64"]

    def test_every_problem_is_listed_in_column_order(self):
        frame = observations().drop(columns=["kind", "server"])
        frame["size"] = frame["size"].astype("float64")
        frame["sampled"] = frame["sampled"].astype(object)
        assert OBSERVATIONS.problems(frame) == [
            "missing column 'kind'",
            "column 'size' has dtype float64, expected Int64",
            "column 'sampled' has dtype object, expected boolean",
            "missing column 'server'",
        ]

    def test_naive_timestamps_are_not_utc(self):
        frame = observations()
        frame["ts"] = frame["ts"].dt.tz_localize(None)
        [problem] = OBSERVATIONS.problems(frame)
        assert problem.startswith("column 'ts' has dtype datetime64[ns]")

    def test_extra_columns_are_not_a_problem(self):
        frame = observations().assign(note="x")
        assert OBSERVATIONS.problems(frame) == []


class TestSince:
    def test_version_2_added_the_jetstream_and_server_columns(self):
        assert OBSERVATIONS.since(1) == JETSTREAM_COLUMNS
        assert DELIVERIES.since(1) == ["delivery_count", "ack"]
        assert EVENTS.since(1) == []

    def test_nothing_is_newer_than_the_current_version(self):
        for schema in SCHEMAS:
            assert schema.since(SCHEMA_VERSION) == []

    def test_every_column_is_newer_than_version_0(self):
        for schema in SCHEMAS:
            assert schema.since(0) == schema.names


class TestEmpty:
    def test_every_column_in_order_and_no_rows(self):
        for schema in SCHEMAS:
            frame = schema.empty()
            assert list(frame.columns) == schema.names
            assert len(frame) == 0
            assert schema.problems(frame) == []

    def test_dtypes_are_the_pandas_ones(self):
        frame = OBSERVATIONS.empty()
        assert str(frame["seq"].dtype) == "Int64"
        assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
        assert str(frame["sampled"].dtype) == "boolean"
        assert str(frame["kind"].dtype) == "category"  # few distinct values: codes
        assert str(frame["event_id"].dtype) == "category"  # ids too: one code per row
        assert frame["payload"].dtype == pd.ArrowDtype(pa.binary())  # bytes stay in Arrow
        assert str(frame["headers"].dtype) == "map<string, string>[pyarrow]"
        assert str(DELIVERIES.empty()["queue_s"].dtype) == "float64"


class TestArrowRoundTrip:
    def test_observations_survive_table_and_back(self):
        frame = observations()
        table = to_table(frame, OBSERVATIONS)
        assert table.schema.equals(OBSERVATIONS.arrow)
        back = to_frame(table, OBSERVATIONS)
        pd.testing.assert_frame_equal(back, frame)
        assert as_dicts(back["headers"])[0] == {"x-tenant": "acme"}
        assert back.loc[3, "count"] == 4 and back.loc[4, "stream"] == "ORDERS"

    def test_events_and_deliveries_survive_table_and_back(self):
        trace = ek.testing.make_trace(30, seed=1)
        for frame, schema in ((trace.events, EVENTS), (trace.deliveries, DELIVERIES)):
            back = to_frame(to_table(frame, schema), schema)
            # the same values; the derived frames' ids keep all the observations' categories
            pd.testing.assert_frame_equal(back, frame, check_categorical=False)

    def test_to_table_takes_the_schema_columns_in_order(self):
        frame = observations()
        shuffled = frame[list(reversed(frame.columns))].assign(note="dropped")
        table = to_table(shuffled, OBSERVATIONS)
        assert table.column_names == OBSERVATIONS.names
        pd.testing.assert_frame_equal(to_frame(table, OBSERVATIONS), frame)

    def test_to_table_refuses_a_frame_without_a_column(self):
        with pytest.raises(KeyError, match="ts"):
            to_table(observations().drop(columns=["ts"]), OBSERVATIONS)

    def test_with_missing_adds_null_columns_of_the_right_type(self):
        table = pa.table({"seq": pa.array([1, 2], pa.int64())})
        full = with_missing(table, OBSERVATIONS)
        assert set(full.column_names) == set(OBSERVATIONS.names)
        assert full.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
        assert full.column("stream").null_count == 2
        frame = to_frame(full, OBSERVATIONS)
        assert OBSERVATIONS.problems(frame) == []
        assert frame["seq"].tolist() == [1, 2]


class TestConform:
    def test_adds_missing_columns_drops_others_and_orders_them(self):
        frame = pd.DataFrame({"kind": ["receive", "publish"], "junk": [1, 2],
                              "seq": np.array([7, 3])}, index=[10, 20])
        out = conform(frame, OBSERVATIONS)
        assert list(out.columns) == OBSERVATIONS.names
        assert OBSERVATIONS.problems(out) == []
        assert out.index.tolist() == [10, 20]
        assert out["seq"].tolist() == [7, 3]
        assert out["kind"].tolist() == ["receive", "publish"]
        assert out["ts"].isna().all() and out["stream"].isna().all()

    def test_casts_to_the_schema_dtypes(self):
        frame = pd.DataFrame({"seq": np.array([1], dtype="int32"),
                              "queue_s": np.array([1], dtype="int64"),
                              "consumer": np.array(["billing"], dtype=object)})
        out = conform(frame, DELIVERIES)
        assert str(out["seq"].dtype) == "Int64"
        assert str(out["queue_s"].dtype) == "float64" and out.loc[0, "queue_s"] == 1.0
        assert str(out["consumer"].dtype) == "category"
        assert out["consumer"].cat.categories.tolist() == ["billing"]
        assert str(out["event_id"].dtype) == "category"
        assert out["event_id"].dtype == out["correlation_id"].dtype  # one set of ids
        assert DELIVERIES.problems(out) == []

    def test_a_conforming_frame_is_unchanged(self):
        frame = observations()
        pd.testing.assert_frame_equal(conform(frame, OBSERVATIONS), frame)

    def test_categories_no_row_uses_go_and_a_column_that_uses_all_is_not_copied(self):
        used = pd.Categorical(["ok", "error", "ok"], categories=["error", "ok"])
        spare = pd.Categorical(["ok", "ok", "ok"], categories=["error", "ok", "pending"])
        frame = pd.DataFrame({"outcome": used, "ack": spare}, copy=False)
        out = conform(frame, DELIVERIES)
        assert np.shares_memory(out["outcome"].array.codes, frame["outcome"].array.codes)
        assert out["ack"].cat.categories.tolist() == ["ok"] and out["ack"].tolist() == ["ok"] * 3

    def test_an_empty_frame_conforms_to_the_empty_schema(self):
        out = conform(pd.DataFrame(), EVENTS)
        assert len(out) == 0 and EVENTS.problems(out) == []


class TestPositions:
    def test_where_each_value_is_or_minus_one(self):
        values = pd.Series(["b", "x", "a", None], dtype="str")
        keys = pd.Series(["a", "b"], dtype="str")
        found = positions(values, keys)
        assert found.dtype == np.int32  # (fewer than 2**31 keys: half the memory)
        assert found.tolist() == [1, -1, 0, -1]

    def test_indexes_and_object_arrays_work_too(self):
        assert positions(pd.Index(["a", "q"]), pd.Index(["q"])).tolist() == [-1, 0]
        objects = pd.Series(["a", "b"], dtype=object)
        assert positions(objects, pd.Series(["b"], dtype=object)).tolist() == [-1, 0]

    def test_missing_keys_never_match_missing_values(self):
        keys = pd.Series([None, "a"], dtype="str")
        assert positions(pd.Series([None, "a"], dtype="str"), keys).tolist() == [-1, 1]

    def test_duplicate_keys_give_the_first_position(self):
        keys = pd.Series(["a", "b", "a", "b"], dtype="str")
        assert positions(pd.Series(["b", "a"], dtype="str"), keys).tolist() == [1, 0]

    def test_no_keys_means_nothing_is_found(self):
        empty = pd.Series([], dtype="str")
        assert positions(pd.Series(["a"], dtype="str"), empty).tolist() == [-1]

    @settings(max_examples=100)
    @given(st.lists(st.sampled_from("abcdef")), st.lists(st.sampled_from("abcdef")))
    def test_agrees_with_list_index(self, values, keys):
        found = positions(pd.Series(values, dtype="str"), pd.Series(keys, dtype="str"))
        assert found.tolist() == [keys.index(v) if v in keys else -1 for v in values]


class TestCategorical:
    def test_positions_of_a_categorical_look_each_category_up_once(self):
        values = pd.Series(["b", None, "a", "zz", "b"], dtype="category")
        keys = pd.Series(["a", "b"], dtype="str")
        assert positions(values, keys).tolist() == [1, -1, 0, -1, 1]

    def test_fill_adds_the_value_as_a_category_in_sorted_order(self):
        values = pd.Series(["b", None], dtype="category")
        filled = fill(values, "a")
        assert filled.tolist() == ["b", "a"]
        assert filled.cat.categories.tolist() == ["a", "b"]
        assert fill(values, pd.Series(["x", "y"])).tolist() == ["b", "y"]

    def test_text_columns_with_few_values_become_codes_not_strings(self):
        row = ("tap", 1, "o", None, None, b"s", None, b"", None, "syn-1")
        frame = build_observations([row, row])
        assert str(frame["kind"].dtype) == "category" and frame["kind"].tolist() == ["tap"] * 2
        assert frame["kind"].cat.codes.dtype == np.int8


class TestUtc:
    def test_nanoseconds_become_utc_timestamps(self):
        out = utc(np.array([0, T, T + 1], dtype=np.int64))
        assert str(out.dtype) == "datetime64[ns, UTC]"
        assert out[0] == pd.Timestamp("1970-01-01", tz="UTC")
        assert out[1] == pd.Timestamp("2023-11-14 22:13:20", tz="UTC")
        assert out[2].value - out[1].value == 1

    def test_the_minimum_int64_is_nat(self):
        out = utc(np.array([np.iinfo(np.int64).min, 5]))
        assert pd.isna(out[0]) and out[1].value == 5

    def test_lists_are_accepted(self):
        assert utc([T]).iloc[0].value == T

    @settings(max_examples=100)
    @given(st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1))
    def test_every_other_int64_round_trips(self, ns):
        assert utc(np.array([ns])).iloc[0].value == ns


class TestText:
    def test_arrow_strings_become_pandas_str(self):
        out = text(pa.array(["a", None]))
        assert out.dtype == pd.StringDtype(na_value=float("nan"))
        assert out[0] == "a" and pd.isna(out[1])

    def test_dictionary_strings_are_decoded(self):
        out = text(pa.array(["x", "y", "x"]).dictionary_encode())
        assert list(out) == ["x", "y", "x"]
        assert out.dtype == pd.StringDtype(na_value=float("nan"))


class TestDescribe:
    def test_one_line_per_column_in_order(self):
        for schema in SCHEMAS:
            lines = schema.describe().splitlines()
            assert [line.split()[0] for line in lines] == schema.names

    def test_each_line_has_the_dtype_and_the_meaning(self):
        lines = dict(zip(OBSERVATIONS.names, OBSERVATIONS.describe().splitlines(),
                         strict=True))
        for column in OBSERVATIONS.columns:
            assert str(column.pandas) in lines[column.name]
            assert lines[column.name].endswith(column.doc)
        assert "datetime64[ns, UTC]" in lines["ts"]


def test_positions_of_object_columns_with_missing_values():
    """Object columns (not Arrow-backed) with NaN or None: missing, so -1."""
    import numpy as np
    import pandas as pd

    from evtkit.schema import positions

    values = pd.Series(["a", np.nan, None, "b"], dtype=object)
    keys = pd.Series(["b", "a"], dtype="str")
    assert positions(values, keys).tolist() == [1, -1, -1, 0]


class TestIds:
    """Id columns: categoricals sharing one set of categories per frame."""

    def test_plain_dictionary_and_chunked_columns_share_one_set(self):
        events = pa.array(["a", "b", None, "c"])
        causes = pa.array(["x", "a", "a", None]).dictionary_encode()
        flows = pa.chunked_array([pa.array(["f", "a"]), pa.array(["b", "f"]).dictionary_encode()
                                  .cast(pa.string())])
        out = ids({"event_id": events, "causation_id": causes, "correlation_id": flows})
        assert [out[k].tolist() for k in ("event_id", "causation_id", "correlation_id")] == [
            ["a", "b", np.nan, "c"], ["x", "a", "a", np.nan], ["f", "a", "b", "f"]]
        dtype = out["event_id"].dtype
        assert all(c.dtype is dtype for c in out.values())
        assert dtype.categories.tolist() == ["a", "b", "c", "x", "f"]  # first appearance

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.tuples(*[st.one_of(st.none(), st.sampled_from("abcd"))] * 3),
                    min_size=1, max_size=12))
    def test_rows_equal_to_an_earlier_column_take_its_code(self, rows):
        """(a parent span id usually is the event id: those rows are not hashed again)"""
        columns = {name: pa.array([row[i] for row in rows], pa.string())
                   for i, name in enumerate(("event_id", "trace_id", "parent_id"))}
        out = ids(columns)
        for name, values in columns.items():
            assert out[name].tolist() == [np.nan if v is None else v for v in values.to_pylist()]

    def test_all_missing_columns_take_no_memory(self):
        out = ids({"event_id": pa.array(["a"] * 3), "replay_of": pa.nulls(3, pa.string())})
        assert out["replay_of"].codes.strides == (0,) and out["replay_of"].isna().all()

    @pytest.mark.parametrize("name", ["last_active", "header_block", "headers", "reply"])
    def test_all_missing_columns_of_other_types_take_no_memory_either(self, name):
        """(a timestamp from one NaT; text, bytes and maps from zero pages, not Arrow's)"""
        spec, n = OBSERVATIONS.by_name[name], 1_000_000
        before = pa.total_allocated_bytes()
        out = to_pandas_column(pa.nulls(n, spec.arrow), spec)  # (the file's copy: gone once read)
        assert pa.total_allocated_bytes() - before < 1000
        assert str(pd.Series(out).dtype) == str(spec.pandas) and pd.Series(out).isna().all()
        if name == "last_active":
            assert out._ndarray.strides == (0,)
        else:
            arrow = pa.chunked_array(out._pa_array) if hasattr(out, "_pa_array") else None
            assert arrow is not None and arrow.null_count == n
            arrow.validate(full=True)

    def test_conform_makes_hand_built_text_ids_share_one_set(self):
        frame = pd.DataFrame({"event_id": ["e1", "e2"], "correlation_id": ["e1", "e1"],
                              "causation_id": [None, "e1"]})
        out = conform(frame, EVENTS)
        assert out["event_id"].dtype is out["causation_id"].dtype
        assert (out["correlation_id"] == out["event_id"]).tolist() == [True, False]
        assert out["event_id"].tolist() == ["e1", "e2"] and out["trace_id"].isna().all()

    def test_concat_joins_the_sets_of_ids(self):
        a = build_observations([("tap", T, "t", None, None, b"s", None, b"", BLOCK, None)])
        b = build_observations([("tap", T, "t", None, None, b"s", None, b"", None, "syn-2")])
        both = concat([a, b])
        assert both["event_id"].tolist() == ["e1", "syn-2"]
        assert both["event_id"].dtype is both["correlation_id"].dtype
        assert OBSERVATIONS.problems(both) == []


class TestCategoricalChunks:
    def test_chunks_with_their_own_dictionaries_become_one_sorted_set(self):
        chunks = pa.chunked_array([pa.array(["b", None, "a"]).dictionary_encode(),
                                   pa.array(["c", "b"]).dictionary_encode(), pa.array(["a"])
                                   .dictionary_encode()])
        out = categorical(chunks)
        assert out.tolist() == ["b", np.nan, "a", "c", "b", "a"]
        assert out.categories.tolist() == ["a", "b", "c"] and out.codes.dtype == np.int8
