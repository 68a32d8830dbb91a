"""Trace files: round trips keep every column and dtype; bad files give TraceFormatError."""

from __future__ import annotations

import gzip
import json
import time

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evtkit as ek
from evtkit import TraceFormatError
from evtkit.observation import build_observations
from evtkit.schema import DELIVERIES, EVENTS, OBSERVATIONS, SCHEMA_VERSION, as_bytes, as_dicts
from evtkit.store import META_KEY, SegmentWriter, load

FORMATS = ["t.parquet", "t.jsonl", "t.jsonl.gz"]


def sample_trace() -> ek.Trace:
    """Every kind of row, awkward bytes included, built without a server."""
    t = time.time_ns()
    block = (b"NATS/1.0\r\nce-specversion: 1.0\r\nce-id: e1\r\nce-source: s\r\nce-type: t\r\n"
             b"ce-time: 2026-11-26T10:00:00.123456789Z\r\nce-correlationid: c\r\n"
             b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
             b"X-Extra: \xc3\xa9\r\n\r\n")
    rows = [
        ("publish", t, "shop", None, None, b"orders.placed", b"_INBOX.1", b'{"a":1}', block, None),
        ("tap", t + 1, "tap", None, None, b"raw", None, b"\x00\xff\xfe", None, "syn-ab-0"),
        ("tap", t + 2, "tap", None, None, b"empty", None, b"", None, "syn-cd-0"),
        ("receive", t + 3, "shop", "inv", "g", b"orders.placed", None, b'{"a":1}', block, None),
        ("handled", t + 9, "shop", "inv", "g", None, None, None, None, (3, t + 4, "error", "E: x")),
        ("drop", t + 10, "shop", "inv", None, b"orders.placed", None, None, None, (2, "slow")),
        ("disconnect", t + 11, "shop", None, None, None, None, None, None, "down"),
        ("reconnect", t + 12, "shop", None, None, None, None, None, None, "up"),
        ("error", t + 13, "shop", None, None, None, None, None, None, "OSError: x"),
    ]
    return ek.Trace(build_observations(rows), {"server_url": "nats://h:1", "note": "x"})


class TestRoundTrip:
    @pytest.mark.parametrize("name", FORMATS)
    def test_every_column_and_dtype_survives(self, tmp_path, name):
        trace = sample_trace()
        path = tmp_path / name
        assert trace.save(path) == str(path)
        loaded = load(path)
        pd.testing.assert_frame_equal(loaded.observations, trace.observations)
        pd.testing.assert_frame_equal(loaded.events, trace.events)
        pd.testing.assert_frame_equal(loaded.deliveries, trace.deliveries)
        assert loaded.metadata["note"] == "x" and loaded.metadata["complete"] is True
        assert loaded.drops == trace.drops == 2 and len(loaded.gaps) == 1

    def test_schemas_are_what_the_frames_have(self):
        trace = sample_trace()
        for frame, schema in ((trace.observations, OBSERVATIONS), (trace.events, EVENTS),
                              (trace.deliveries, DELIVERIES)):
            assert schema.problems(frame) == []
            assert list(frame.columns) == schema.names

    def test_parquet_is_plain_parquet_with_metadata(self, tmp_path):
        path = tmp_path / "t.parquet"
        sample_trace().save(path)
        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[META_KEY])
        assert meta["schema_version"] == SCHEMA_VERSION
        assert table.schema.field("headers").type == pa.map_(pa.string(), pa.string())
        assert table.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"

    def test_jsonl_is_readable_text(self, tmp_path):
        path = tmp_path / "t.jsonl"
        sample_trace().save(path)
        lines = path.read_text().splitlines()
        assert "evtkit_trace" in lines[0] and "evtkit_end" in lines[-1]
        raw_row = json.loads(lines[2])
        assert raw_row["payload_b64"] == "AP/+" and "payload" not in raw_row
        assert json.loads(lines[1])["payload"] == '{"a":1}'

    def test_empty_trace(self, tmp_path):
        for name in FORMATS:
            ek.Trace(OBSERVATIONS.empty()).save(tmp_path / name)
            loaded = load(tmp_path / name)
            assert len(loaded.observations) == 0 and len(loaded.events) == 0


class TestLeanColumns:
    """Bytes stay in Arrow and text with few values is categorical, after a load too."""

    @pytest.mark.parametrize("name", FORMATS)
    def test_bytes_stay_arrow_backed_and_read_back_as_published(self, tmp_path, name):
        trace = ek.testing.make_trace(30, seed=3)
        trace.save(tmp_path / name)
        loaded = load(tmp_path / name)
        for frame in (loaded.observations, loaded.events):
            assert frame["payload"].dtype == pd.ArrowDtype(pa.binary())
            assert str(frame["headers"].dtype) == "map<string, string>[pyarrow]"
        published = [b'{"n":%d}' % i for i in range(len(trace.events))]
        assert sorted(as_bytes(loaded.events["payload"])) == sorted(published)
        assert isinstance(loaded.events["payload"].iloc[0], bytes)  # one element: bytes
        assert as_bytes(loaded.observations["header_block"])[0] is None

    def test_a_copy_of_a_loaded_frame_takes_writes_into_its_empty_columns(self, tmp_path):
        """(an empty column is one missing value seen from every row: read-only)"""
        ek.testing.make_trace(30, seed=3).save(tmp_path / "t.parquet")
        obs = load(tmp_path / "t.parquet").observations.copy()
        at = pd.Timestamp("2026-01-01", tz="UTC")
        obs.loc[obs.index[0], "last_active"] = at
        obs.loc[obs.index[1], "pending"] = 7
        assert obs["last_active"].iloc[0] == at and obs["last_active"].iloc[1:].isna().all()
        assert obs["pending"].iloc[1] == 7

    def test_headers_read_back_as_dicts(self, tmp_path):
        trace = sample_trace()
        trace.save(tmp_path / "t.parquet")
        headers = as_dicts(load(tmp_path / "t.parquet").observations["headers"])
        assert headers[0] == {"X-Extra": "é"} and headers[1] is None

    def test_text_with_few_values_is_categorical_with_sorted_categories(self, tmp_path):
        trace = ek.testing.make_trace(60, seed=3)
        trace.save(tmp_path / "t.parquet")
        obs = load(tmp_path / "t.parquet").observations
        for name in ("kind", "observer", "consumer", "subject", "outcome"):
            categories = obs[name].cat.categories.tolist()
            assert categories == sorted(set(obs[name].dropna()))
        assert str(obs["event_id"].dtype) == "category"

    @pytest.mark.parametrize("name", FORMATS)
    def test_ids_are_codes_into_one_set_and_compare_as_text(self, tmp_path, name):
        """Every id column of every frame shares one set of categories: each id is held
        once, a row holds a small code, and ids still compare, filter and join as text."""
        ek.testing.make_trace(60, seed=3, orphans=2).save(tmp_path / name)
        loaded = load(tmp_path / name)
        obs, ev, dv = loaded.observations, loaded.events, loaded.deliveries
        categories = obs["event_id"].cat.categories
        for frame, names in ((obs, OBSERVATIONS.ids), (ev, EVENTS.ids), (dv, DELIVERIES.ids)):
            for column in names:
                assert frame[column].cat.categories is categories, column
                assert frame[column].cat.codes.dtype.itemsize <= 4
        first = ev["event_id"].iloc[0]
        assert isinstance(first, str)
        as_text = obs["event_id"].astype(str)
        assert ((obs["event_id"] == first) == (as_text == first)).all()
        assert (obs["event_id"] == first).sum() > 1  # its publish, receives and more
        assert ev["event_id"].str.len().eq(16).sum() == 60  # .str works on ids
        assert dv["event_id"].isin(ev["event_id"]).all()
        roots = ev["causation_id"].isna()
        assert not (ev["correlation_id"] == ev["event_id"])[~roots].any()  # id vs id
        lineage = loaded.lineage()
        assert lineage["cause_id"].astype(str).where(~roots, None).dropna().tolist() == \
            ev["causation_id"].dropna().astype(str).tolist()

    def test_parts_with_different_values_stay_categorical(self, tmp_path):
        path = tmp_path / "fleet.parquet"
        writer = SegmentWriter(path, {})
        writer.write(0, _delivery(1_900_000_000_000_000_000, "e1", "c1"))
        writer.write(3, [(k, t, o, c, q, s, r, p, b, (4, *x[1:]) if k == "handled" else x)
                         for k, t, o, c, q, s, r, p, b, x in _delivery(2, "e2", "c2")])
        trace = load(path)
        assert str(trace.observations["consumer"].dtype) == "category"
        assert trace.deliveries["consumer"].tolist() == ["c1", "c2"]
        assert trace.deliveries["outcome"].tolist() == ["ok", "ok"]
        ids = trace.observations["event_id"]  # each part had its own ids: now one set
        assert ids.cat.categories is trace.observations["correlation_id"].cat.categories
        assert trace.deliveries["event_id"].tolist() == ["e1", "e2"]


class TestSegments:
    @pytest.mark.parametrize("name", ["s.parquet", "s.jsonl"])
    def test_parts_add_up_and_are_readable_before_close(self, tmp_path, name):
        rows_a = [("tap", 1, "o", None, None, b"a", None, b"1", None, "syn-1")]
        rows_b = [("tap", 2, "o", None, None, b"b", None, b"2", None, "syn-2")]
        writer = SegmentWriter(tmp_path / name, {"server_url": "x"})
        writer.write(0, rows_a)
        writer.write(1, rows_b)
        partial = load(tmp_path / name)  # as a killed recorder leaves it
        assert partial.events["subject"].tolist() == ["a", "b"]
        assert partial.metadata["complete"] is False
        writer.close({"drops": 0})
        final = load(tmp_path / name)
        assert final.metadata["complete"] is True and len(final.events) == 2

    def test_parquet_parts_from_another_trace_are_rejected(self, tmp_path):
        path = tmp_path / "s.parquet"
        writer = SegmentWriter(path, {})
        writer.write(0, [("tap", 1, "o", None, None, b"a", None, b"1", None, "syn-1")])
        sample_trace().save(path / "part-000005.parquet")
        sample_trace().save(path / "part-000006.parquet")
        with pytest.raises(ek.TraceFormatError, match="duplicate seq"):
            load(path)


def _delivery(t: int, event: str, consumer: str) -> list[tuple]:
    """A publish, a receive and its handled row (``ref`` = the receive's position)."""
    block = f"NATS/1.0\r\nce-id: {event}\r\n\r\n".encode()
    return [("publish", t, "p", None, None, b"s", None, b"{}", block, None),
            ("receive", t + 10, consumer, consumer, None, b"s", None, b"{}", block, None),
            ("handled", t + 30, consumer, consumer, None, None, None, None, None,
             (1, t + 20, "ok", None))]


class TestShards:
    def test_shards_join_into_one_trace_with_their_links_intact(self, tmp_path):
        """Each shard numbers its rows from 0; loading shifts each shard's seq and the
        ``ref`` pointing at it, so every delivery keeps its own receive."""
        path = tmp_path / "fleet.parquet"
        for shard, (event, consumer) in {"a": ("e1", "c1"), "b": ("e2", "c2")}.items():
            writer = SegmentWriter(path, {"drops": 1}, shard=shard)
            writer.write(0, _delivery(1_900_000_000_000_000_000, event, consumer))
            writer.close({"drops": 1})
        names = sorted(p.name for p in path.iterdir())
        assert names == ["part-a-000000.parquet", "part-a-000001.parquet",
                         "part-b-000000.parquet", "part-b-000001.parquet"]
        trace = load(path)
        assert trace.metadata["shards"] == ["a", "b"] and trace.metadata["drops"] == 2
        assert trace.observations["seq"].is_unique
        dv = trace.deliveries.set_index("event_id")
        assert dv.loc["e1", "consumer"] == "c1" and dv.loc["e2", "consumer"] == "c2"
        assert (dv["processing_s"] == 10e-9).all() and (dv["queue_s"] == 20e-9).all()

    def test_a_shard_clears_only_its_own_earlier_parts(self, tmp_path):
        path = tmp_path / "fleet.parquet"
        SegmentWriter(path, {}, shard="a").write(0, _delivery(1, "e1", "c"))
        SegmentWriter(path, {}, shard="a-b").write(0, _delivery(1, "e2", "c"))
        SegmentWriter(path, {}, shard="a").write(0, _delivery(1, "e3", "c"))  # restarted
        assert sorted(load(path).events["event_id"]) == ["e2", "e3"]

    def test_an_unfinished_shard_leaves_the_union_incomplete(self, tmp_path):
        path = tmp_path / "fleet.parquet"
        done = SegmentWriter(path, {}, shard="a")
        done.write(0, _delivery(1, "e1", "c"))
        done.close()
        SegmentWriter(path, {}, shard="b").write(0, _delivery(1, "e2", "c"))
        assert load(path).metadata["complete"] is False


class TestBadFiles:
    def test_missing(self, tmp_path):
        with pytest.raises(ek.TraceFormatError, match="no such file") as caught:
            load(tmp_path / "nope.parquet")
        assert caught.value.path.endswith("nope.parquet")

    @pytest.mark.parametrize("name", ["e.parquet", "e.jsonl"])
    def test_empty(self, tmp_path, name):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(ek.TraceFormatError, match="empty"):
            load(tmp_path / name)

    def test_truncated_parquet(self, tmp_path):
        path = tmp_path / "t.parquet"
        sample_trace().save(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(ek.TraceFormatError, match="corrupt or truncated") as caught:
            load(path)
        assert str(path) in str(caught.value)

    def test_truncated_jsonl(self, tmp_path):
        path = tmp_path / "t.jsonl"
        sample_trace().save(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 40])
        with pytest.raises(ek.TraceFormatError, match="not valid JSON"):
            load(path)

    def test_truncated_gzip(self, tmp_path):
        path = tmp_path / "t.jsonl.gz"
        sample_trace().save(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(ek.TraceFormatError):
            load(path)

    def test_newer_schema_version(self, tmp_path):
        path = tmp_path / "t.parquet"
        sample_trace().save(path)
        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[META_KEY])
        meta["schema_version"] = 99
        pq.write_table(table.replace_schema_metadata({META_KEY: json.dumps(meta)}), path)
        with pytest.raises(ek.TraceFormatError, match="version 99.*upgrade evtkit"):
            load(path)

    @pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
    def test_version_1_files_load_with_the_newer_columns_empty(self, tmp_path, suffix):
        path = tmp_path / f"t{suffix}"
        sample_trace().save(path)
        newer = OBSERVATIONS.since(1)
        assert "stream" in newer and "ack" in newer
        if suffix == ".parquet":
            table = pq.read_table(path)
            meta = json.loads(table.schema.metadata[META_KEY])
            meta["schema_version"] = 1
            table = table.drop_columns(newer)
            pq.write_table(table.replace_schema_metadata({META_KEY: json.dumps(meta)}), path)
        else:
            lines = path.read_bytes().splitlines()
            head = orjson.loads(lines[0])
            head["evtkit_trace"]["schema_version"] = 1
            rows = [{k: v for k, v in orjson.loads(line).items() if k not in newer}
                    for line in lines[1:]]
            path.write_bytes(b"\n".join(orjson.dumps(x) for x in [head, *rows]) + b"\n")
        loaded = load(path)
        assert OBSERVATIONS.problems(loaded.observations) == []
        assert loaded.observations[newer].isna().all().all()
        assert len(loaded.events) == len(sample_trace().events)

    def test_a_file_missing_an_old_column_is_still_rejected(self, tmp_path):
        path = tmp_path / "t.parquet"
        sample_trace().save(path)
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["subject"]), path)
        with pytest.raises(ek.TraceFormatError, match="missing trace columns"):
            load(path)

    def test_wrong_version_jsonl(self, tmp_path):
        path = tmp_path / "t.jsonl"
        path.write_bytes(orjson.dumps({"evtkit_trace": {"schema_version": "zero"}}) + b"\n")
        with pytest.raises(ek.TraceFormatError, match="not supported"):
            load(path)

    def test_parquet_that_is_not_a_trace(self, tmp_path):
        path = tmp_path / "other.parquet"
        pq.write_table(pa.table({"a": [1, 2]}), path)
        with pytest.raises(ek.TraceFormatError, match="not an evtkit trace"):
            load(path)

    def test_json_that_is_not_a_trace(self, tmp_path):
        path = tmp_path / "other.jsonl"
        path.write_text('{"hello": 1}\n')
        with pytest.raises(ek.TraceFormatError, match="not an evtkit trace"):
            load(path)

    @pytest.mark.parametrize(("row", "problem"), [
        ({"seq": "not a number", "kind": "tap"}, "do not fit"),
        ({"seq": 1, "kind": "teleport"}, "unknown row kinds"),
    ])
    def test_bad_rows(self, tmp_path, row, problem):
        path = tmp_path / "t.jsonl"
        path.write_bytes(orjson.dumps({"evtkit_trace": {"schema_version": 1}}) + b"\n"
                         + orjson.dumps({**row, "ts": "2026-01-01T00:00:00Z"}))
        with pytest.raises(ek.TraceFormatError, match=problem):
            load(path)

    def test_unknown_suffix_is_sniffed(self, tmp_path):
        path = tmp_path / "trace.bin"
        sample_trace().save(tmp_path / "t.parquet")
        path.write_bytes((tmp_path / "t.parquet").read_bytes())
        assert len(load(path).events) == 3
        (tmp_path / "junk.bin").write_bytes(b"\x89PNG")
        with pytest.raises(ek.TraceFormatError, match="not a trace file"):
            load(tmp_path / "junk.bin")

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(data=st.binary(max_size=400), name=st.sampled_from(["r.parquet", "r.jsonl",
                                                                "r.jsonl.gz", "r.dat"]))
    def test_random_bytes_give_trace_format_error(self, tmp_path, data, name):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ek.TraceFormatError):
            load(path)

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(cut=st.integers(min_value=1, max_value=10_000), name=st.sampled_from(FORMATS))
    def test_any_truncation_is_an_error_or_a_shorter_valid_trace(self, tmp_path, cut, name):
        path = tmp_path / name
        sample_trace().save(path)
        data = path.read_bytes()
        path.write_bytes(data[: max(0, len(data) - cut)])
        try:
            loaded = load(path)
        except ek.TraceFormatError:
            return
        # Cutting whole trailing lines of JSON Lines can leave a valid, shorter trace.
        assert name.endswith(".jsonl") and len(loaded.observations) <= 9


def test_gzip_multi_member_appends(tmp_path):
    """Appended .jsonl.gz segments are separate gzip members; readers join them."""
    path = tmp_path / "g.jsonl.gz"
    writer = SegmentWriter(path, {})
    writer.write(0, [("tap", 1, "o", None, None, b"a", None, b"1", None, "syn-1")])
    writer.close()
    with gzip.open(path, "rb") as fh:
        assert fh.read().count(b"\n") == 3


class TestUntrustedFiles:
    def test_a_path_the_system_cannot_open_is_a_trace_format_error(self, tmp_path):
        """Any OSError (here: a name too long for the file system) names the path."""
        path = tmp_path / ("x" * 300 + ".jsonl")
        with pytest.raises(TraceFormatError, match="cannot read it") as caught:
            load(path)
        assert caught.value.path == str(path)

    def test_message_rows_without_an_event_id_are_refused_naming_the_file(self, tmp_path):
        path = tmp_path / "t.jsonl"
        sample_trace().save(path)
        lines = path.read_text().splitlines()
        row = json.loads(lines[1])
        row.pop("event_id")
        lines[1] = json.dumps(row)
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(TraceFormatError, match="message rows without event_id") as caught:
            load(path)
        assert caught.value.path == str(path)


def test_a_row_group_without_any_id_loads(tmp_path):
    """Parquet row groups whose id columns are all missing (here: the handled rows first)
    have empty dictionaries; the ids of the other row groups must still be read right."""
    from evtkit.schema import to_table

    trace = ek.testing.make_trace(300, seed=4)
    obs = trace.observations
    handled_first = pd.concat([obs[obs["kind"] == "handled"], obs[obs["kind"] != "handled"]])
    table = to_table(handled_first, OBSERVATIONS).replace_schema_metadata(
        {META_KEY: json.dumps({"schema_version": 2}).encode()})
    path = tmp_path / "grouped.parquet"
    pq.write_table(table, path, row_group_size=int((obs["kind"] == "handled").sum()))
    assert pq.ParquetFile(path).metadata.num_row_groups > 1
    loaded = ek.load(path)
    assert loaded.events["event_id"].astype(str).tolist() == \
        trace.events["event_id"].astype(str).tolist()
    assert (loaded.deliveries["outcome"] != "pending").all()
