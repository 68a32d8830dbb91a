"""Traces at URLs: recorders' parts written through pyarrow / fsspec filesystems, read back
by ``ek.load`` and ``ek.open`` (fsspec's in-process ``memory://`` and ``file://`` stand in
for object stores), credentials never shown, JSON Lines kept local."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator

import fsspec
import pyarrow.fs as pafs
import pytest

import evtkit as ek
from evtkit._location import as_fsspec, public_url, resolve
from evtkit.engine.files import choose_engine, rows_on_disk
from evtkit.store import SegmentWriter, load
from tests.test_store import _delivery

T0 = 1_900_000_000_000_000_000


@pytest.fixture
def memory() -> Iterator[str]:
    """A fresh ``memory://`` directory (fsspec's memory filesystem is one per process)."""
    root = f"/evtkit-{uuid.uuid4().hex}"
    yield f"memory://{root}"
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def write_shards(url: str, shards: dict[str, tuple[str, str]]) -> None:
    """One event delivered to one consumer per shard, each shard closed (two parts)."""
    for shard, (event, consumer) in shards.items():
        writer = SegmentWriter(url, {"drops": 1}, shard=shard)
        writer.write(0, _delivery(T0, event, consumer))
        writer.close({"drops": 1})


class TestMemoryURL:
    def test_shards_written_to_a_url_load_and_open_as_one_trace(self, memory):
        url = f"{memory}/fleet.parquet"
        write_shards(url, {"a": ("e1", "c1"), "b": ("e2", "c2")})
        listed = fsspec.filesystem("memory").ls(url.removeprefix("memory://"), detail=False)
        names = sorted(p.rsplit("/", 1)[1] for p in listed)
        assert names == ["part-a-000000.parquet", "part-a-000001.parquet",
                         "part-b-000000.parquet", "part-b-000001.parquet"]  # no temporary left
        trace = load(url)
        assert trace.metadata["shards"] == ["a", "b"] and trace.metadata["drops"] == 2
        assert trace.metadata["complete"] is True and trace.metadata["source_path"] == url
        dv = trace.deliveries.set_index("event_id")
        assert dv.loc["e1", "consumer"] == "c1" and dv.loc["e2", "consumer"] == "c2"
        with ek.open(url) as ds:  # no filesystem argument: the URL names it
            assert ds.metadata == trace.metadata
            summary = ds.summary()
            assert (summary["events"], summary["deliveries"], summary["pending"]) == (2, 2, 0)
            assert ds.lag()["consumer"].tolist() == ["c1", "c2"]
        assert rows_on_disk(url) == len(trace.observations) == 6
        assert choose_engine(url, budget_bytes=1) == "duckdb"

    def test_a_shard_clears_only_its_own_earlier_parts(self, memory):
        url = f"{memory}/fleet.parquet"
        SegmentWriter(url, {}, shard="a").write(0, _delivery(T0, "e1", "c"))
        SegmentWriter(url, {}, shard="a-b").write(0, _delivery(T0, "e2", "c"))
        SegmentWriter(url, {}, shard="a").write(0, _delivery(T0, "e3", "c"))  # restarted
        assert sorted(load(url).events["event_id"]) == ["e2", "e3"]

    def test_a_single_trace_file_at_a_url(self, memory, tmp_path):
        from tests.test_store import sample_trace

        trace = sample_trace()
        trace.save(tmp_path / "t.parquet")
        fsspec.filesystem("memory").pipe(f"{memory.removeprefix('memory://')}/t.parquet",
                                         (tmp_path / "t.parquet").read_bytes())
        loaded = load(f"{memory}/t.parquet")
        assert loaded.metadata["note"] == "x" and len(loaded.events) == len(trace.events)

    def test_parts_put_under_their_final_names_are_whole(self, memory):
        """What object stores get (a PUT is atomic there): no temporary name, no move."""
        writer = SegmentWriter(f"{memory}/x.parquet", {}, shard="a")
        writer.where = dataclasses.replace(writer.where, put_direct=True)
        writer.write(0, _delivery(T0, "e1", "c1"))
        writer.close()
        assert load(f"{memory}/x.parquet").metadata["parts"] == 2
        assert resolve("s3://bucket/x.parquet?region=eu-west-1").put_direct
        assert not resolve(f"{memory}/x.parquet").put_direct

    def test_missing_and_corrupt_traces_are_named_by_url(self, memory):
        with pytest.raises(ek.TraceFormatError, match="no such file") as missing:
            load(f"{memory}/nope.parquet")
        assert missing.value.path == f"{memory}/nope.parquet"
        with pytest.raises(ek.TraceFormatError, match="no such file"):
            ek.open(f"{memory}/nope.parquet")
        fsspec.filesystem("memory").pipe(
            f"{memory.removeprefix('memory://')}/bad.parquet/part-000000.parquet", b"garbage")
        with pytest.raises(ek.TraceFormatError, match="corrupt or truncated") as corrupt:
            load(f"{memory}/bad.parquet")
        assert corrupt.value.path == f"{memory}/bad.parquet/part-000000.parquet"


class TestFileURL:
    def test_a_file_url_is_the_local_directory(self, tmp_path):
        url = f"file://{tmp_path}/fleet.parquet"
        write_shards(url, {"a": ("e1", "c1"), "b": ("e2", "c2")})
        assert sorted(p.name for p in (tmp_path / "fleet.parquet").iterdir())[0] == \
            "part-a-000000.parquet"
        by_path, by_url = load(tmp_path / "fleet.parquet"), load(url)
        assert by_url.metadata["source_path"] == url
        assert by_url.observations.equals(by_path.observations)
        with ek.open(url) as ds:
            assert ds.summary()["events"] == 2 and ds.metadata["source_path"] == url

    def test_a_store_fsspec_sees_through_pyarrow_is_read_by_duckdb(self, tmp_path):
        """How ``ek.open("s3://...")`` reads an object store pyarrow opens: DuckDB gets the
        filesystem as fsspec sees it, under the URL's scheme (here over a local directory)."""
        write_shards(str(tmp_path / "fleet.parquet"), {"a": ("e1", "c1"), "b": ("e2", "c2")})
        store = as_fsspec(pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()), "s3")
        with ek.open("s3://fleet.parquet", filesystem=store) as ds:
            assert ds.metadata["shards"] == ["a", "b"]
            assert ds.summary()["deliveries"] == 2 and ds.summary()["pending"] == 0


class TestCredentials:
    @pytest.mark.parametrize(("url", "shown"), [
        ("s3://AKID:s3cret@bucket/run.parquet?region=eu-west-1", "s3://bucket/run.parquet"),
        ("gs://bucket/run.parquet?access_token=t0ken#frag", "gs://bucket/run.parquet"),
        ("abfs://box:s3cret@acct.dfs.core.windows.net/run.parquet",
         "abfs://box@acct.dfs.core.windows.net/run.parquet"),
        ("sftp://alice@host:22/run.parquet", "sftp://host:22/run.parquet"),
        ("memory://traces/run.parquet", "memory://traces/run.parquet"),
    ])
    def test_public_url_drops_passwords_users_and_queries(self, url, shown):
        assert public_url(url) == shown

    def test_a_token_in_a_url_is_in_no_metadata(self, tmp_path, memory):
        url = f"file://{tmp_path}/run.parquet?token=s3cret"
        write_shards(url, {"a": ("e1", "c1")})
        assert "s3cret" not in json.dumps(load(url).metadata)
        with ek.open(url) as ds:
            assert "s3cret" not in json.dumps(ds.metadata)

    def test_errors_never_show_credentials(self):
        url = "nope://alice:s3cret@host/run.parquet?sig=t0ken"
        for call in (lambda: load(url), lambda: ek.open(url),
                     lambda: SegmentWriter(url, {})):
            with pytest.raises(ValueError, match="unknown URL scheme 'nope'") as caught:
                call()
            assert caught.value.args[0].startswith("nope://host/run.parquet: ")
            assert not any(s in str(caught.value) for s in ("alice", "s3cret", "t0ken"))
        with pytest.raises(ValueError, match="s3://bucket/run.parquet: .*session_token") as bad:
            resolve("s3://AKID:s3cret@bucket/run.parquet?session_token=t0ken")
        assert "s3cret" not in str(bad.value) and "t0ken" not in str(bad.value)


class TestRefusals:
    @pytest.mark.parametrize("url", ["memory://x/run.jsonl", "file:///tmp/run.jsonl.gz"])
    def test_json_lines_are_written_to_local_files_only(self, url):
        with pytest.raises(ValueError, match="JSON Lines traces are written to local files"):
            SegmentWriter(url, {})

    def test_json_lines_are_read_from_local_files_or_file_urls(self, memory, tmp_path):
        from tests.test_store import sample_trace

        trace = sample_trace()
        trace.save(tmp_path / "t.jsonl")
        assert len(load(f"file://{tmp_path}/t.jsonl").events) == len(trace.events)
        fsspec.filesystem("memory").pipe(f"{memory.removeprefix('memory://')}/t.jsonl",
                                         (tmp_path / "t.jsonl").read_bytes())
        with pytest.raises(ek.TraceFormatError, match="read from local files only"):
            load(f"{memory}/t.jsonl")

    def test_a_file_in_the_way_is_refused(self, memory):
        fsspec.filesystem("memory").pipe(f"{memory.removeprefix('memory://')}/x.parquet", b"x")
        with pytest.raises(FileExistsError, match="exists and is a file"):
            SegmentWriter(f"{memory}/x.parquet", {})
