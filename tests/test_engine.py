"""``ek.open``: the analyses as SQL on DuckDB (and Spark, in test_engine_spark.py) give the
in-memory path's answers on the same files — generated traces with known answers, sharded
directories, and the recorded shop traces in data/."""

from __future__ import annotations

import contextlib
import html

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import evtkit as ek
from evtkit.observation import Row
from evtkit.store import SegmentWriter
from tests.paths import ROOT
from tests.watching import calls_to

FREQ = "100ms"
NUMBERS = ["deliveries", "queue_p50_s", "queue_p95_s", "queue_p99_s", "queue_max_s",
           "processing_p50_s", "processing_p95_s", "errors", "dropped", "backlog_max",
           "oldest_max_s"]


def same_answers(trace: ek.Trace, ds: ek.Dataset, freq: str = FREQ) -> None:
    """Every analysis of the dataset equals the in-memory one (columns the engine computes
    differently are named in evtkit/engine/dataset.py's docstring and left out here)."""
    mine = trace.lag(freq)
    theirs = ds.lag(freq)
    assert mine["consumer"].tolist() == theirs["consumer"].tolist()
    assert mine["queue"].tolist() == theirs["queue"].tolist()
    np.testing.assert_allclose(mine[NUMBERS].to_numpy(float), theirs[NUMBERS].to_numpy(float),
                               rtol=1e-12, atol=1e-12)

    a, b = trace.backlog(freq), ds.backlog(freq)
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b, check_dtype=False)

    fan = trace.fanout().drop(columns="server_seen")
    pd.testing.assert_frame_equal(fan, ds.fanout(), check_dtype=False)

    chains = trace.chains().set_index("correlation_id").sort_index()
    flows = ds.flows().set_index("correlation_id").sort_index()
    for column in ("events", "deliveries", "consumers", "errors", "started_at", "ended_at"):
        assert (chains[column].to_numpy() == flows[column].to_numpy()).all(), column
    np.testing.assert_allclose(chains["duration_s"], flows["duration_s"], atol=1e-9)

    s = ds.summary()
    assert (s["events"], s["deliveries"], s["observations"]) == (
        len(trace.events), len(trace.deliveries), len(trace.observations))


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> tuple[ek.Trace, str]:
    trace = ek.testing.make_trace(3_000, seed=7, failing={"audit": 0.1},
                                  stall=("billing", 4.0, 2.0), stop=("email", 6.0, 1.5), orphans=5)
    path = str(tmp_path_factory.mktemp("engine") / "faulty.parquet")
    trace.save(path)
    return ek.load(path), path


def test_generated_trace_with_faults_gives_the_same_answers(faulty):
    trace, path = faulty
    with ek.open(path) as ds:
        same_answers(trace, ds)
        # The known answers, from the engine directly (not only "equal to pandas").
        truth = trace.metadata["truth"]["consumers"]
        lag = ds.lag(FREQ).set_index("consumer")
        for consumer, want in truth.items():
            assert lag.loc[consumer, "deliveries"] == want["deliveries"], consumer
            assert lag.loc[consumer, "errors"] == want["errors"], consumer
        stalled = ds.backlog(FREQ)
        stalled = stalled[stalled["consumer"] == "billing"]
        assert stalled["oldest_s"].max() >= 1.9  # two seconds without a finished call
        assert ds.backlog(FREQ).query("consumer == 'email'")["missed"].sum() > 0


@pytest.mark.parametrize("name", ["shop-incident.parquet", "shop-baseline.parquet"])
def test_recorded_shop_traces_give_the_same_answers(name):
    path = ROOT / "data" / name
    with ek.open(path) as ds:
        same_answers(ek.load(path), ds, "250ms")


def test_default_bins_match_the_in_memory_ones(faulty):
    trace, path = faulty
    with ek.open(path) as ds:
        assert trace.backlog()["time"].equals(ds.backlog()["time"])


def test_one_flow_loads_whole_and_answers_as_the_full_trace(faulty):
    trace, path = faulty
    flow = trace.chains()["correlation_id"].iloc[0]
    with ek.open(path) as ds:
        part = ds.trace(correlation_id=flow)
        assert set(part.events["correlation_id"]) == {flow}
        assert len(part.events) == (trace.events["correlation_id"] == flow).sum()
        # handled rows come along with their receives: every delivery has its outcome
        assert (part.deliveries["outcome"] != "pending").all()
        pd.testing.assert_frame_equal(ds.critical_path(flow), trace.critical_path(flow))
        assert ds.chain(flow).nodes.equals(trace.chain(flow).nodes)
        whole = ds.trace()
        pd.testing.assert_frame_equal(whole.observations, trace.observations)


def test_parameters_are_bound_not_pasted(faulty):
    _, path = faulty
    with ek.open(path) as ds:
        hostile = "x' OR '1'='1"
        assert ds.trace(correlation_id=hostile).observations.empty
        got = ds.query("SELECT count(*) AS n FROM events WHERE correlation_id = :flow",
                       flow=hostile)
        assert got["n"].tolist() == [0]


def test_a_name_no_table_has_is_missing_not_a_python_variable(faulty):
    """DuckDB reads a Python variable named like a missing table (a replacement scan) from
    the code that runs the query — evtkit's own: a query sees the trace's views and
    nothing of the process, and a missing name is said to be missing."""
    _, path = faulty
    with ek.open(path) as ds:
        for name in ("views", "pd", "contextlib"):  # (names in evtkit's engine module)
            with pytest.raises(Exception, match="does not exist"):
                ds.query(f"SELECT * FROM {name}")


def _rows(n: int, consumer: str, start_ns: int, first_seq: int) -> list[tuple]:
    """Publish, receive and handled rows of ``n`` events (``Row`` layout), numbered from
    ``first_seq``."""
    rows: list[tuple] = []
    for i in range(n):
        t = start_ns + i * 1_000_000
        hdr = (f"NATS/1.0\r\nce-id: {consumer}-{i}\r\nce-type: t\r\nce-source: s\r\n"
               f"ce-specversion: 1.0\r\n\r\n").encode()
        rows.append(("publish", t, "pub", None, None, b"a.b", None, b"{}", hdr, None))
        seq = first_seq + len(rows)
        rows.append(("receive", t + 1000, consumer, consumer, None, b"a.b", None, b"{}", hdr,
                     None))
        rows.append(("handled", t + 5000, consumer, consumer, None, None, None, None, None,
                     (seq, t + 2000, "ok" if i % 5 else "error", None if i % 5 else "boom")))
    assert all(len(r) == Row.EXTRA + 1 for r in rows)
    return rows


def _write(path, rows: list[tuple], first_seq: int = 0, shard: str | None = None) -> None:
    """``rows`` as one segment of a Parquet trace at ``path`` (of ``shard``), numbered
    from ``first_seq``."""
    writer = SegmentWriter(path, {"shard": shard} if shard else {}, shard=shard)
    writer.write(first_seq, rows)
    writer.close({})


def test_shards_join_as_loading_does(tmp_path):
    path = tmp_path / "sharded.parquet"
    for shard, consumer in (("a", "alpha"), ("b", "beta")):
        writer = SegmentWriter(path, {"shard": shard}, shard=shard)
        writer.write(0, _rows(40, consumer, 1_700_000_000_000_000_000, 0))
        writer.write(120, _rows(10, consumer, 1_700_000_000_100_000_000, 120))
        writer.close({"drops": 1})
    trace = ek.load(path)
    with ek.open(path) as ds:
        assert ds.metadata["shards"] == trace.metadata["shards"] == ["a", "b"]
        assert ds.metadata["drops"] == 2 and ds.metadata["complete"]
        same_answers(trace, ds, "10ms")
        # seq was shifted per shard: handled rows still find their receives
        assert ds.summary()["pending"] == 0
        assert ds.lag("10ms")["errors"].tolist() == [10, 10]


def test_memory_budget_reaches_duckdb(faulty):
    _, path = faulty
    with ek.open(path, memory_limit="300MB") as ds:
        limit = ds.query("SELECT current_setting('memory_limit') AS m")["m"].iloc[0]
        assert limit.replace(" ", "").upper().startswith(("300MB", "286.1MIB"))
        assert ds.summary()["events"] > 0


def test_duckdb_counts_what_its_percentiles_hold_in_its_budget():
    """What ``Dataset.by_consumers`` relies on (DuckDB >= 2.0): the values a percentile
    aggregate holds are in DuckDB's budget and are not spilled, so 10 M values (80 MB)
    run a 100 MB budget out of memory and fit a 1 GB one. (DuckDB 1.x held them beside
    its budget — 1.5.6 ran this with 30 MB — and evtkit lowered the limit by them, which
    under DuckDB 2 starves the query.)"""
    import duckdb

    query = ("SELECT g, quantile_cont(x, [0.5, 0.95]) AS ps FROM (SELECT range % 2 AS g, "
             "range::DOUBLE AS x FROM range(10000000)) GROUP BY g ORDER BY g")
    with duckdb.connect(config={"memory_limit": "100MB", "threads": 2}) as con, \
            pytest.raises(duckdb.OutOfMemoryException):
        con.sql(query).fetchall()
    with duckdb.connect(config={"memory_limit": "1GB", "threads": 2}) as con:
        medians = [ps[0] for _, ps in con.sql(query).fetchall()]
    assert medians == [4999999.0, 5000000.0]


def test_a_read_that_fails_part_way_leaves_the_engine_as_it_was(faulty):
    """A large result read batch by batch that fails (here: more rows than it was said to
    have; in use, DuckDB out of memory or Ctrl-C) says its own error, and the connection
    and its memory limit are as before (an open stream once refused every later query)."""
    _, path = faulty
    with ek.open(path, memory_limit="300MB") as ds:
        engine = ds._engine
        limit = "SELECT current_setting('memory_limit') AS m"
        before = ds.query(limit)["m"].iloc[0]
        with pytest.raises(ValueError, match="more than the 5 rows"), engine.lend(100 << 20):
            engine.frame("SELECT i::BIGINT AS a FROM range(10) r(i)", size=5)
        assert ds.query(limit)["m"].iloc[0] == before
        assert engine.frame("SELECT 1 AS one", size=1)["one"].tolist() == [1]
        assert ds.summary()["events"] > 0


def test_a_file_on_an_fsspec_filesystem(faulty):
    import fsspec  # a dependency of evtkit: missing, this fails rather than skips

    trace, path = faulty
    fs = fsspec.filesystem("memory")
    with open(path, "rb") as fh:
        fs.pipe("/traces/faulty.parquet", fh.read())
    with ek.open("memory://traces/faulty.parquet", filesystem=fs) as ds:
        assert ds.summary()["events"] == len(trace.events)


def test_refusals_are_clear(tmp_path):
    with pytest.raises(ek.TraceFormatError, match="no such file"):
        ek.open(tmp_path / "missing.parquet")
    (tmp_path / "empty.parquet").mkdir()
    with pytest.raises(ek.TraceFormatError, match="without trace parts"):
        ek.open(tmp_path / "empty.parquet")
    pq.write_table(pd.DataFrame({"x": [1]}).pipe(lambda f: __import__("pyarrow").Table
                                                  .from_pandas(f)), tmp_path / "other.parquet")
    with pytest.raises(ek.TraceFormatError, match="not an evtkit trace"):
        ek.open(tmp_path / "other.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ek.TraceFormatError, match="not a readable Parquet"):
        ek.open(tmp_path / "junk.parquet")
    with pytest.raises(ValueError, match="engine must be one of"):
        ek.open(ROOT / "data" / "shop-incident.parquet", engine="pandas")
    with pytest.raises(ValueError, match="needs spark="):
        ek.open(ROOT / "data" / "shop-incident.parquet", engine="spark")


def test_rows_numbered_beyond_what_the_engine_ranks_are_refused(tmp_path):
    """An event's best row is found by rank × 10^18 + seq: a file whose ``seq`` is
    negative or reaches 10^18 (alone, or with the shards before it) would lose its events
    (at 2^63 - 90 the summary said 0 events of 30); it is refused, saying why, as are rows
    without a seq (parts by seq would drop them) and a seq that is not an integer."""
    start = 1_700_000_000_000_000_000

    def write(path, first, shard=None):
        _write(path, _rows(30, "alpha", start, first), first, shard)

    for first in (-5, 10**18 - 89, 2**63 - 90):
        write(tmp_path / f"at{first}.parquet", first)
        with pytest.raises(ek.TraceFormatError, match=r"numbered \(seq\) from -?\d+ to"):
            ek.open(tmp_path / f"at{first}.parquet")
    write(tmp_path / "edge.parquet", 10**18 - 90)  # the last seq 10^18 - 1: still ranked
    with ek.open(tmp_path / "edge.parquet") as ds:
        assert (ds.summary()["events"], ds.summary()["deliveries"]) == (30, 30)
        # Loading matches handler rows to receives as integers there too (as float64,
        # refs past 2^53 were rounded: most deliveries showed no handler, "pending").
        loaded = ek.load(tmp_path / "edge.parquet").deliveries
        pd.testing.assert_frame_equal(ds.deliveries(), loaded, check_categorical=False)
        assert (loaded["outcome"] != "pending").all()
    for shard in ("a", "b"):
        write(tmp_path / "shards.parquet", 6 * 10**17, shard)
    with pytest.raises(ek.TraceFormatError, match=r"shards number \d+ rows"):
        ek.open(tmp_path / "shards.parquet")
    table = pq.read_table(tmp_path / "edge.parquet")
    at = table.schema.get_field_index("seq")
    for name, seq, refusal in (
            ("unnumbered", pa.array([None, *table["seq"].to_pylist()[1:]], pa.int64()),
             "rows without seq"),
            ("text", table["seq"].cast(pa.string()), "no integer seq")):
        pq.write_table(table.set_column(at, "seq", seq), tmp_path / f"{name}.parquet")
        with pytest.raises(ek.TraceFormatError, match=refusal):
            ek.open(tmp_path / f"{name}.parquet")


def test_cli_info_on_disk_states_the_engines_numbers(capsys):
    from evtkit.cli import main
    from evtkit.overview import findings

    path = ROOT / "data" / "shop-incident.parquet"
    assert main(["info", str(path), "--engine", "duckdb"]) == 0
    out = capsys.readouterr().out
    trace = ek.load(path)
    lag = trace.lag().set_index("consumer")
    # The verdict first, as the trace loaded says it: the same findings, in the same words.
    head = out.split("\n\n")[0].splitlines()
    assert head == findings(trace) and head[0] == "verdict"
    assert any("shipping stalled" in line for line in head[1:])
    assert "duckdb (the trace stays on disk)" in out
    billing = next(line for line in out.split("consumers (by oldest wait)\n")[1].splitlines()
                   if line.strip().startswith("billing"))
    assert f"{lag.loc['billing', 'errors']} errors" in billing
    assert f"{lag.loc['billing', 'deliveries']} deliveries" in billing
    # the consumer that waited longest comes first
    first = out.split("consumers (by oldest wait)\n")[1].split()[0]
    assert first == lag["oldest_max_s"].idxmax()


def test_a_dataset_in_a_notebook_shows_its_verdict_first_escaped(tmp_path):
    path = ROOT / "data" / "shop-incident.parquet"
    table = pq.read_table(path)
    at = table.schema.get_field_index("consumer")
    hostile = pa.array([None if c is None else c.replace("billing", "<b>billing")
                        for c in table["consumer"].to_pylist()], pa.string())
    pq.write_table(table.set_column(at, "consumer", hostile), tmp_path / "t.parquet")
    with ek.open(tmp_path / "t.parquet") as ds:
        page = ds._repr_html_()
        verdict = ds.verdict()
    assert page.startswith("<div><b>evtkit Dataset</b><ul><li>")
    first = page.index("<li>") + len("<li>")
    assert page[first:page.index("</li>")] == html.escape(verdict[0])
    assert any("&lt;b&gt;billing" in line for line in map(html.escape, verdict))
    assert "<b>billing" not in page and "&lt;b&gt;billing" in page
    assert page.index("</ul>") < page.index("(the trace stays on disk)")


def test_cli_info_chooses_the_engine_by_the_memory_budget(capsys):
    from evtkit.cli import main

    path = str(ROOT / "data" / "shop-incident.parquet")
    rows = len(ek.load(path).observations)
    assert ek.engine.choose_engine(path, rows * ek.engine.BYTES_PER_ROW) == "memory"
    assert ek.engine.choose_engine(path, rows * ek.engine.BYTES_PER_ROW - 1) == "duckdb"
    assert main(["info", path, "--memory-budget", "1GB"]) == 0
    assert capsys.readouterr().out.startswith("verdict")  # loaded: the full diagnosis
    assert main(["info", path, "--memory-budget", "2MB"]) == 0
    assert "stays on disk" in capsys.readouterr().out
    with pytest.raises(ek.EngineError, match="ran out of its memory budget"), \
            ek.open(path, memory_limit="1MB") as ds:
        ds.summary()
    with pytest.raises(ek.EngineError, match="ran out of its memory budget"), \
            ek.open(path, memory_limit="1MB") as ds:
        ds.chains()  # (its tables are defined, not read into a frame: said alike)
    with pytest.raises(SystemExit):
        main(["info", path, "--memory-budget", "lots"])


@pytest.mark.parametrize("consumers", [1, 62, 63, 130, 496, 497])
def test_distinct_consumers_as_bits_count_what_count_distinct_counts(consumers):
    """Chains and flows count each flow's consumers as bits (ranks among the names, one
    BIGINT per 62 of them), or with count(DISTINCT) beyond 8 words: the same numbers."""
    import duckdb

    rng = np.random.default_rng(consumers)
    n = 20_000
    frame = pd.DataFrame({  # repeated, missing and rare consumers; every word's last bit
        "correlation_id": rng.integers(0, 400, n).astype(str),
        "consumer": np.where(rng.random(n) < 0.05, None,
                             np.char.add("c", rng.integers(0, consumers, n).astype(str))),
    })
    frame.loc[:consumers - 1, "consumer"] = [f"c{k}" for k in range(consumers)]
    con = duckdb.connect()
    con.register("deliveries", frame)
    join, count = ek.engine.sql.distinct_consumers(consumers)
    assert ("bit_or" in count) == (consumers <= 496)
    got = con.sql(f"SELECT d.correlation_id, {count} AS n FROM deliveries d {join} "
                  "GROUP BY d.correlation_id ORDER BY 1".replace("__deliveries__", "deliveries")
                  ).df()
    want = frame.groupby("correlation_id")["consumer"].nunique().sort_index()
    assert got["n"].tolist() == want.tolist()


def test_kept_tables_in_a_database_file_give_the_same_answers_and_go_on_close(faulty, tmp_path):
    """Tables kept on disk (compressed, for traces many times the budget, but not by
    DuckDB's slow string compression) answer as the in-memory ones; the database file is
    the engine's own and goes with it."""
    trace, path = faulty
    with ek.open(path, storage="disk", temp_directory=str(tmp_path)) as ds:
        assert ds._engine.on_disk
        same_answers(trace, ds)
        pd.testing.assert_frame_equal(ds.diagnose(), ek.open(path).diagnose())
        assert any(p.suffix == ".duckdb" for p in tmp_path.iterdir())
        con = ds._engine.con
        con.execute("CHECKPOINT")  # (every row group written as the file keeps it)
        methods = {str(m).upper() for table in ("events", "deliveries") for (m,) in con.execute(
            f"SELECT DISTINCT compression FROM pragma_storage_info('{table}')").fetchall()}
        assert "BITPACKING" in methods  # (compressed: the ENUM codes and times)
        assert not methods & {"FSST", "DICT_FSST"}, methods
    assert list(tmp_path.iterdir()) == []


def test_storage_is_chosen_by_size_against_the_budget(faulty):
    """``storage="auto"``: in memory while the kept tables (64 bytes per observation row)
    stay within 4 budgets — 10 M events (70 M rows) with 3 GB — in a file beyond (100 M);
    the engine reads the budget DuckDB reports; anything else is refused."""
    from evtkit.engine.backends import KEPT_BYTES_PER_ROW, keep_on_disk

    assert not keep_on_disk(70_000_000, 3 * 10**9)
    assert keep_on_disk(700_000_000, 3 * 10**9)
    budget = KEPT_BYTES_PER_ROW * 1000 // 4
    assert not keep_on_disk(1000, budget) and keep_on_disk(1001, budget)
    _, path = faulty
    engine = ek.open(path, memory_limit="3GB")._engine
    assert 0.95 * 3e9 < engine._budget() < 1.05 * 3e9  # (DuckDB says "2.7 GiB")
    assert engine._rows() == pq.ParquetFile(path).metadata.num_rows and not engine.on_disk
    with pytest.raises(ValueError, match="storage"):
        ek.open(path, storage="tape")


def test_a_receive_handled_twice_takes_its_last_handler_row(tmp_path):
    """Deliveries are built first as if each receive were handled once; a receive handled
    twice (a handler that recorded twice) must still be one delivery, with its last
    handler row's outcome, as loading gives it."""
    rows = _rows(6, "alpha", 1_700_000_000_000_000_000, 0)
    again = rows[2][:-1] + ((1, rows[2][-1][1], "error", "late"),)  # receive seq 1, again
    path = tmp_path / "twice.parquet"
    _write(path, [*rows, again])
    trace = ek.load(path)
    with ek.open(path) as ds:
        got = ds.deliveries()
        pd.testing.assert_frame_equal(got, trace.deliveries, check_categorical=False)
        assert len(got) == 6 and got.loc[got["seq"] == 1, "error"].tolist() == ["late"]
        same_answers(trace, ds, "10ms")


@pytest.mark.parametrize("twice", [False, True])
def test_tables_that_would_not_fit_are_built_in_parts(tmp_path, monkeypatch, twice):
    """Where the kept tables' joins would not fit in half DuckDB's budget, they are built
    in parts by ``seq``: the events' sightings joined to their best rows part by part; the
    receives each joined to the events first seen from the part before it on, and a
    receive of an event first seen earlier (a late redelivery) given its event after. The
    same tables as one query (and as loading), also when a receive was handled twice."""
    from evtkit.engine import parts

    start = 1_700_000_000_000_000_000
    rows = _rows(300, "alpha", start, 0)
    late = len(rows)  # event alpha-0 delivered again at the end, 900 rows after it was seen
    rows += [rows[1][:1] + (start + 10**9,) + rows[1][2:],
             ("handled", start + 10**9 + 5000, "alpha", "alpha", None, None, None, None, None,
              (late, start + 10**9 + 2000, "ok", None))]
    if twice:
        rows.append(rows[5][:-1] + ((4, rows[5][-1][1], "error", "late"),))
    path = tmp_path / "late.parquet"
    _write(path, rows)
    trace = ek.load(path)
    every = "SELECT * FROM __events__ ORDER BY first_seq"
    with ek.open(path) as ds:
        whole, events = ds.deliveries(), ds._engine.frame(every)
    with ek.open(path) as ds:
        # Each receive "takes" a fiftieth of what the engine can lend: 301 receives, 7 parts;
        # each event a fortieth: 300 events in parts of about 37 (the best rows' seq spread).
        room = ds._engine.room()
        monkeypatch.setattr(parts, "PART_BYTES_PER_RECEIVE", room // 50 + 1)
        monkeypatch.setattr(parts, "EVENT_BYTES_PER_ROW", room)
        monkeypatch.setattr(parts, "JOIN_BYTES_PER_EVENT", room // 40 + 1)
        shown = calls_to(ds._engine, "_shown")
        got = ds.deliveries()
        labels = [f"building deliveries ({i} of 7)" for i in range(1, 8)]
        assert [s for s in shown if s.startswith("building deliveries")] == labels * (1 + twice)
        built = [s for s in shown if s.startswith("building events")]
        assert built == [f"building events ({i} of 8)" for i in range(1, 9)]
        pd.testing.assert_frame_equal(ds._engine.frame(every), events)
        assert "sightings" not in ds._engine.names
        pd.testing.assert_frame_equal(got, whole)
        pd.testing.assert_frame_equal(got, trace.deliveries, check_categorical=False)
        again = got.set_index("seq").loc[late]
        assert again["event_id"] == "alpha-0" and again["published_at"] == pd.Timestamp(
            start, tz="UTC") and again["queue_s"] == pytest.approx(1.000002, abs=1e-9)
        same_answers(trace, ds, "10ms")


def test_a_drained_backlog_gets_its_events_in_parts_and_a_failure_keeps_nothing(
        tmp_path, monkeypatch):
    """A consumer that drains a backlog published before it began: each part of its
    receives finds few of its events among those first seen just before it, so most are
    given their events after, in parts of the events too. A failure there leaves the
    deliveries unbuilt (built again when next asked), never kept without their events."""
    from evtkit.engine import parts

    start, n = 1_700_000_000_000_000_000, 100
    made = _rows(n, "alpha", start, 0)
    rows = made[0::3]  # every publish first, then each receive and its handler row
    for i in range(n):
        seq = n + 2 * i
        receive, handled = made[3 * i + 1], made[3 * i + 2]
        rows += [receive, handled[:-1] + ((seq, *handled[-1][1:]),)]
    path = tmp_path / "drain.parquet"
    _write(path, rows)
    trace = ek.load(path)
    with ek.open(path) as ds:
        whole = ds.deliveries()
    with ek.open(path) as ds:
        room = ds._engine.room()
        monkeypatch.setattr(parts, "PART_BYTES_PER_RECEIVE", room // 20 + 1)
        monkeypatch.setattr(parts, "JOIN_BYTES_PER_EVENT", room // 20 + 1)
        real = parts.EVENTS_SEEN_EARLIER
        monkeypatch.setattr(parts, "EVENTS_SEEN_EARLIER",
                            "SELECT * FROM no_such_table WHERE :lo < :last")
        with pytest.raises(Exception, match="no_such_table"):
            ds.deliveries()
        assert "deliveries" not in ds._engine.names
        monkeypatch.setattr(parts, "EVENTS_SEEN_EARLIER", real)
        shown = calls_to(ds._engine, "_shown")
        got = ds.deliveries()
        given = [s for s in shown if s.startswith("giving deliveries their events")]
        k = len(given)
        assert k >= 2 and given == [f"giving deliveries their events ({i} of {k})"
                                    for i in range(1, k + 1)]
        pd.testing.assert_frame_equal(got, whole)
        pd.testing.assert_frame_equal(got, trace.deliveries, check_categorical=False)
        assert got["published_at"].notna().all()


def test_a_trace_without_events_is_built_when_parts_are_due(tmp_path, monkeypatch):
    """Parts due by size on a trace with no message rows (a disconnect only): its events
    table is there, empty, and so are the deliveries."""
    from evtkit.engine import parts

    path = tmp_path / "quiet.parquet"
    _write(path, [("disconnect", 1_700_000_000_000_000_000, "obs", None, None, None, None,
                   None, None, "gone")])
    with ek.open(path) as ds:
        monkeypatch.setattr(parts, "EVENT_BYTES_PER_ROW", ds._engine.room() + 1)
        assert (ds.summary()["events"], ds.summary()["deliveries"]) == (0, 0)
        assert "sightings" not in ds._engine.names


def test_the_engine_lends_memory_to_what_the_diagnosis_holds_and_takes_it_back(faulty):
    """While the rules hold a consumer's rows in pandas, DuckDB's limit is lowered by what
    they hold (down to half of it at most) and restored after, even on an error."""
    _, path = faulty
    with ek.open(path, memory_limit="1GB") as ds:
        engine = ds._engine
        before = engine._budget()
        with engine.lend(300 * 10**6):
            assert abs(engine._budget() - (before - 300 * 10**6)) < 0.01 * before
            with engine.lend(100 * 10**6):  # loans nest and add up
                assert abs(engine._budget() - (before - 400 * 10**6)) < 0.01 * before
            assert abs(engine._budget() - (before - 300 * 10**6)) < 0.01 * before
        assert engine._budget() == before
        with pytest.raises(RuntimeError), engine.lend(10**12):
            assert abs(engine._budget() - before // 2) < 0.01 * before
            raise RuntimeError("a rule failed")
        assert engine._budget() == before
        assert not ds.diagnose().empty and engine._budget() == before
        # lag()'s percentiles are not lent for: DuckDB counts what they hold in its budget.
        seen = calls_to(engine, "frame", lambda q, *a, **k: (q, engine._budget()))
        ds.lag()
        assert [b == before for q, b in seen if "queue_s_ps" in q] == [True]
        assert engine._budget() == before
    with ek.open(path) as ds:  # DuckDB's default budget, set again as the default
        before = ds._engine._budget()
        with ds._engine.lend(10**6):
            assert ds._engine._budget() < before
        assert ds._engine._budget() == before


def test_an_event_without_an_id_is_no_root(tmp_path):
    """A file may hold message rows without an ``event_id`` (``ek.load`` refuses it; the
    engine reads it): such an event has no place in the causal tree, so its flow's root is
    the first event with an id that roots it, never a missing one."""
    import pyarrow.compute as pc

    trace = ek.testing.make_trace(40, seed=2)
    trace.save(tmp_path / "whole.parquet")
    table = pq.read_table(tmp_path / "whole.parquet")
    ev = trace.events
    root = ev.loc[ev["causation_id"].isna(), "event_id"].iloc[0]
    ids = table["event_id"]
    table = table.set_column(table.schema.get_field_index("event_id"), "event_id", pc.if_else(
        pc.equal(ids, pa.scalar(root, ids.type)), pa.scalar(None, ids.type), ids))
    pq.write_table(table, tmp_path / "no-id.parquet")
    with ek.open(tmp_path / "no-id.parquet") as ds:
        chains = ds.chains()
    assert len(chains) == len(trace.chains()) and chains["root_event_id"].notna().all()


def test_spilling_is_bounded_and_reaching_the_bound_says_so(tmp_path):
    """DuckDB's own bound, 90 % of the free disk, let 100 M events fill the disk to its
    last 1.5 GB: evtkit's is half the free space, and reaching it is an EngineError."""
    import re
    import shutil

    path = str(ROOT / "data" / "shop-incident.parquet")
    with ek.open(path, temp_directory=str(tmp_path / "spill")) as ds:
        number, unit = re.fullmatch(r"([\d.]+)(GB|MB)", ds._engine.spill_limit).groups()
        limit = float(number) * {"GB": 1e9, "MB": 1e6}[unit]  # (said in human units)
        assert 0.4 < limit / shutil.disk_usage(tmp_path).free < 0.6
        got = ds._engine.con.execute("SELECT current_setting('max_temp_directory_size')")
        assert got.fetchall()[0][0] != "90% of available disk space"
    heavy = "SELECT s, count(*) AS n FROM (SELECT md5(range::VARCHAR) AS s FROM range(3000000))" \
        " GROUP BY s ORDER BY n DESC LIMIT 1"
    with pytest.raises(ek.EngineError, match=r"spilled as much to disk as it may \(1MB\)"), \
            ek.open(path, memory_limit="60MB", spill_limit="1MB") as ds:
        ds._engine.frame(heavy)


def test_percentiles_that_would_not_fit_are_taken_a_few_consumers_at_a_time(faulty, monkeypatch):
    """Where every delivery's values would not fit in half DuckDB's budget, lag()'s
    percentiles (and a baseline's handler medians) are taken consumer by consumer, each
    part with DuckDB's whole budget (what they hold is counted in it: lowering the limit by
    it ran DuckDB out of memory): the same numbers, in the same order, as at once."""
    from evtkit.engine import dataset

    trace, path = faulty
    with ek.open(path, memory_limit="1GB") as ds:
        whole = ds.lag(FREQ)
        medians = ek.engine.evidence.EngineEvidence(ds).handler_medians()
    counts = trace.deliveries.groupby("consumer", observed=True).size()
    # Each delivery "takes" a fifth of what the engine can lend over the largest consumer's
    # deliveries: two consumers never fit together, one always does.
    with ek.open(path, memory_limit="1GB") as ds:
        monkeypatch.setattr(dataset, "PERCENTILE_BYTES_PER_ROW",
                            ds._engine.room() // (counts.max() * 5 // 4) + 1)
        engine = ds._engine
        budget = engine._budget()
        seen = calls_to(engine, "frame", lambda q, *a, **k: (q, engine._budget()))
        parts = ds.lag(FREQ)
        pd.testing.assert_frame_equal(parts, whole)
        asked = [q for q, _ in seen if "queue_s_ps" in q]
        assert len(asked) == len(counts) and all("consumer IN (:consumer0)" in q for q in asked)
        assert all(b == budget for q, b in seen if "queue_s_ps" in q)
        seen.clear()
        assert ek.engine.evidence.EngineEvidence(ds).handler_medians() == medians
        asked = [q for q, _ in seen if "percentile_cont(0.5)" in q]
        assert len(asked) == len(counts) and all("consumer IN (:consumer0)" in q for q in asked)


def test_the_diagnosis_reads_ahead_only_where_two_consumers_rows_fit(faulty, monkeypatch):
    """The next consumer's rows are read on the other connection while the rules work,
    unless holding a consumer's rows takes more than the engine can lend: then one
    consumer's at a time, read when asked for, and the same findings."""
    from evtkit.engine import dataset

    _, path = faulty
    for held, ahead in ((dataset.HELD_BYTES_PER_ROW, True), (10**9, False)):
        monkeypatch.setattr(dataset, "HELD_BYTES_PER_ROW", held)
        with ek.open(path, memory_limit="1GB") as ds:
            asked = calls_to(ds._engine, "frame_soon")
            found = ds.diagnose()
            assert bool(asked) is ahead
            if ahead:
                first = found
            else:
                pd.testing.assert_frame_equal(found, first)


def test_progress_shows_what_is_built_and_how_far(faulty, capsys):
    """With progress on, a query that runs longer than SHOWN_AFTER shows which table is
    being built, up to 100 %, and clears its line; quicker ones and a dataset without
    progress show nothing."""
    _, path = faulty
    with ek.open(path, progress=True) as ds:
        ds._engine.SHOWN_AFTER = 60.0  # (every query here is quicker)
        ds.summary()
    assert capsys.readouterr().err == ""
    with ek.open(path, progress=True) as ds:
        ds._engine.SHOWN_AFTER = 0.0
        ds.summary()
    err = capsys.readouterr().err
    for table in ("events", "deliveries"):
        assert f"evtkit: building {table} 100%" in err
    assert err.split("\r")[-1].strip() == ""  # (nothing left on the line)
    with ek.open(path) as ds:
        ds._engine.SHOWN_AFTER = 0.0
        ds.summary()
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("fails", [False, True])
def test_a_shown_query_follows_the_engines_percentage(capsys, fails):
    """The bar shows what the engine says as it runs (read in a thread, again and again);
    it reaches 100 % when the query ends, not when it fails; either way its line is
    cleared."""
    import threading

    from evtkit.engine.progress import shown

    asked: list[int] = []
    twice = threading.Event()

    def percent() -> float:
        asked.append(1)
        if len(asked) >= 2:
            twice.set()
        return 42.0

    with contextlib.suppress(RuntimeError), shown("testing", percent, after=0.0):
        assert twice.wait(10)
        if fails:
            raise RuntimeError("the query failed")
    drawn = [part for part in capsys.readouterr().err.split("\r") if part.strip()]
    assert drawn[-1].startswith("evtkit: testing  42%" if fails else "evtkit: testing 100%")
    assert "evtkit: testing  42%" in drawn[-2 if not fails else -1]
