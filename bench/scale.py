"""Scale benchmark: the full analysis of large traces on disk, with DuckDB (ek.open), the
in-memory path where it fits, and Spark in local mode for the record.

    python bench/scale.py [--events 1000000 10000000] [--huge] [--spark] [--pandas-max 1000000]
                          [--memory-limit 3GB] [--dir /tmp/evtkit-scale]

A vectorised generator writes N events straight to Parquet parts (numpy → Arrow, no Python
object per row): flows of three events, each event delivered to three consumers, so
7 observation rows per event; one consumer fails every 50th call. Its known answers
(deliveries and errors per consumer, events per subject) are checked against what each
engine reports. The full analysis is what a report needs: building the kept events and
deliveries, ``summary, diagnose, problems, lag, backlog, fanout, chains`` (the in-memory
path: ``load, lag, backlog, fanout, chains, diagnose``). Every analysis runs in a fresh
process, so the peak memory printed is that analysis's alone (taken before the hand-written
comparison below). ``--huge`` adds 100 M events (about 6 GB of Parquet).

It also times a hand-written DuckDB query of the same lag percentiles (the floor a user
could reach by hand, with the join written for this file) against evtkit's ``lag()`` on
DuckDB: the ratio is printed (target ≤ 1.5×).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import evtkit as ek
from evtkit.schema import OBSERVATIONS, SCHEMA_VERSION
from evtkit.store import META_KEY

DEPTH, FANOUT = 3, 3
ROWS_PER_EVENT = 1 + 2 * FANOUT
RATE = 5_000  # flows per second
FAIL_EVERY = 50
FAILING = "c1-2"
PART_EVENTS = 1_500_000  # events per Parquet part (a recorder's flush, scaled up)


def consumers(level: int) -> list[str]:
    return [f"c{level}-{k}" for k in range(FANOUT)]


def truth(n_events: int) -> dict[str, Any]:
    """What the generated trace must give: deliveries and errors per consumer."""
    flows = n_events // DEPTH
    out: dict[str, Any] = {}
    for level in range(DEPTH):
        for name in consumers(level):
            out[name] = {"deliveries": flows,
                         "errors": (flows + FAIL_EVERY - 1) // FAIL_EVERY
                         if name == FAILING else 0}
    return out


def _ids(prefix: str, numbers: np.ndarray, suffix: str = "") -> pa.Array:
    text = np.char.add(np.char.add(prefix, numbers.astype("U12")), suffix)
    return pa.array(text, pa.string())


def generate_part(first_flow: int, flows: int, first_seq: int, seed: int) -> pa.Table:
    """The observation rows of ``flows`` flows (numbered from ``first_flow``)."""
    rng = np.random.default_rng(seed)
    flow = np.arange(first_flow, first_flow + flows, dtype=np.int64)
    start = 1_800_000_000_000_000_000 + flow * (1_000_000_000 // RATE)
    columns: dict[str, list[Any]] = {c: [] for c in (
        "seq", "kind", "ts", "observer", "consumer", "subject", "size", "event_id", "type",
        "source", "correlation_id", "causation_id", "ref", "started_at", "outcome", "error",
        "mode")}
    root = _ids("f", flow, "-0")
    seq = first_seq
    published = start
    parent_id: pa.Array | None = None
    parent_seq: np.ndarray | None = None
    for level in range(DEPTH):
        event = root if level == 0 else _ids("f", flow, f"-{level}")
        subject, etype = f"level{level}.happened", f"level{level}"
        publisher = "shop" if level == 0 else f"c{level - 1}-0"

        said = {"subject": subject, "type": etype, "source": publisher, "event_id": event,
                "causation_id": parent_id}

        def add(kind: str, ts: np.ndarray, observer: str, consumer: str | None,
                ref: np.ndarray | None = None, started: np.ndarray | None = None,
                outcome: pa.Array | None = None, error: pa.Array | None = None,
                message: bool = True, said: dict[str, Any] = said) -> np.ndarray:
            nonlocal seq
            n = len(ts)
            seqs = np.arange(seq, seq + n, dtype=np.int64)
            seq += n
            none = pa.nulls(n, pa.string())
            columns["seq"].append(pa.array(seqs))
            columns["kind"].append(pa.array(np.full(n, kind)))
            columns["ts"].append(pa.array(ts))
            columns["observer"].append(pa.array(np.full(n, observer)))
            columns["consumer"].append(pa.array(np.full(n, consumer)) if consumer else none)
            for name in ("subject", "type", "source"):
                columns[name].append(pa.array(np.full(n, said[name])) if message else none)
            columns["mode"].append(pa.array(np.full(n, "binary")) if message else none)
            columns["size"].append(pa.array(np.full(n, 64)) if message
                                   else pa.nulls(n, pa.int64()))
            columns["event_id"].append(said["event_id"] if message else none)
            columns["correlation_id"].append(root if message else none)
            columns["causation_id"].append(said["causation_id"] if message and said[
                "causation_id"] is not None else none)
            columns["ref"].append(pa.array(ref) if ref is not None else pa.nulls(n, pa.int64()))
            columns["started_at"].append(pa.array(started) if started is not None
                                         else pa.nulls(n, pa.int64()))
            columns["outcome"].append(outcome if outcome is not None else none)
            columns["error"].append(error if error is not None else none)
            return seqs

        add("publish", published, publisher, None if level == 0 else publisher, parent_seq)
        next_publish = None
        for k, name in enumerate(consumers(level)):
            received = published + rng.integers(200_000, 1_800_000, flows)
            recv_seq = add("receive", received, name, name)
            began = received + rng.integers(5_000, 50_000, flows)
            done = began + rng.integers(1_000_000, 3_000_000, flows)
            failed = (flow % FAIL_EVERY == 0) if name == FAILING else np.zeros(flows, bool)
            add("handled", done, name, name, recv_seq, began,
                pa.array(np.where(failed, "error", "ok")),
                pa.array(np.where(failed, "boom", None), pa.string()), message=False)
            if k == 0:
                next_publish, parent_seq = done - 100_000, recv_seq
        parent_id = event
        published = next_publish  # type: ignore[assignment]

    table = pa.table({name: pa.concat_arrays(parts) for name, parts in columns.items()})
    for name in ("ts", "started_at"):
        table = table.set_column(table.schema.get_field_index(name), name,
                                 table[name].cast(pa.timestamp("ns", tz="UTC")))
    missing = [f for f in OBSERVATIONS.arrow if f.name not in table.column_names]
    for field in missing:
        table = table.append_column(field, pa.nulls(len(table), field.type))
    return table.select(OBSERVATIONS.names).cast(OBSERVATIONS.arrow)


def write(path: Path, n_events: int) -> float:
    """Write ``n_events`` events as Parquet parts under ``path``; seconds taken."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    began = time.perf_counter()
    flows, done, part, seq = n_events // DEPTH, 0, 0, 0
    while done < flows:
        n = min(PART_EVENTS // DEPTH, flows - done)
        table = generate_part(done, n, seq, seed=part)
        seq += len(table)
        meta = {"schema_version": SCHEMA_VERSION, "generator": "bench/scale.py",
                "complete": done + n >= flows, "part": part}
        table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
        pq.write_table(table, path / f"part-{part:06d}.parquet", compression="zstd")
        done += n
        part += 1
        print(f"\r  writing {done * DEPTH:,} / {n_events:,} events", end="", flush=True)
    print()
    return time.perf_counter() - began


def _complete(path: Path) -> bool:
    """Whether ``path`` holds a trace write() finished (its last part says so; a part cut
    short by a stopped run is no trace)."""
    parts = sorted(path.glob("part-*.parquet"))
    try:
        meta = pq.read_schema(parts[-1]).metadata if parts else None
    except pa.ArrowInvalid:
        return False
    return bool(meta and json.loads(meta[META_KEY]).get("complete"))


# -- one analysis per process ------------------------------------------------------------------

def analyse(path: str, engine: str, memory_limit: str) -> dict[str, Any]:
    """Run the whole analysis; return times, peak RSS and the answers to check."""
    times: dict[str, float] = {}
    peaks: dict[str, int] = {}  # the high-water mark after each step: where it rose

    def timed(name: str, run: Any) -> Any:
        began = time.perf_counter()
        result = run()
        times[name] = time.perf_counter() - began
        peaks[name] = _peak(engine)
        # (to the parent, which shows it: at 100 M events the analysis takes 20 minutes)
        print(f"{STEP}{engine} {name}: {times[name]:.1f} s, peak so far {gb(peaks[name])}",
              file=sys.stderr, flush=True)
        return result

    if engine == "pandas":
        trace = timed("load", lambda: ek.load(path))
        lag = timed("lag", trace.lag)
        timed("backlog", trace.backlog)
        timed("fanout", trace.fanout)
        timed("chains", trace.chains)
        timed("diagnose", trace.diagnose)
    else:
        session = None
        if engine == "spark":
            from pyspark.sql import SparkSession

            session = (SparkSession.builder.master("local[2]").appName("evtkit-bench")
                       .config("spark.ui.enabled", "false")
                       # Spark local keeps everything in the driver, which also hands
                       # results to Python (a consumer's 3.3 M deliveries at 10 M events):
                       # 3 GB and the default 1 GB result limit were not enough.
                       .config("spark.driver.memory", "6g")
                       .config("spark.driver.maxResultSize", "4g")
                       # Cached tables look small to the planner: broadcasting them
                       # ran the 3 GB driver out of memory at 10 M events.
                       .config("spark.sql.autoBroadcastJoinThreshold", "-1")
                       .config("spark.ui.showConsoleProgress", "false").getOrCreate())
            session.sparkContext.setLogLevel("ERROR")
        ds = timed("open", lambda: ek.open(path, engine, spark=session,
                                           memory_limit=memory_limit))
        timed("prepare", ds._engine.prepare)
        timed("summary", ds.summary)
        timed("diagnose", ds.diagnose)
        timed("problems", ds.problems)
        lag = timed("lag", ds.lag)
        timed("backlog", ds.backlog)
        timed("fanout", ds.fanout)
        timed("chains", ds.chains)
        peak = _peak(engine)
        if engine == "duckdb":
            storage = "on disk" if getattr(ds._engine, "on_disk", False) else "in memory"
            ds.close()
            try:
                timed("hand-written lag percentiles", lambda: hand_written(path, memory_limit))
            except duckdb.OutOfMemoryException as exc:  # (its percentiles hold every value)
                return {"times": times, "peak": peak, "peaks": peaks, "answers": answers(lag),
                        "storage": storage, "hand_written": str(exc).splitlines()[0]}
            # On a fresh dataset: building its events and deliveries counts too; in parts
            # of a few consumers where all would not fit, as lag() takes them.
            with ek.open(path, memory_limit=memory_limit) as fresh:
                timed("evtkit lag percentiles", lambda: fresh.by_consumers(
                    lambda where: ek.engine.sql.delivery_stats(fresh._engine.percentiles,
                                                               where)))
    if engine == "pandas":
        peak = _peak(engine)
    return {"times": times, "peak": peak, "peaks": peaks, "answers": answers(lag),
            **({"storage": storage} if engine == "duckdb" else {})}


def answers(lag: Any) -> dict[str, Any]:
    """Deliveries and errors per consumer, from a lag frame, to check against truth()."""
    return {c: {"deliveries": int(r["deliveries"]), "errors": int(r["errors"])}
            for c, r in lag.set_index("consumer").iterrows()}


def _peak(engine: str) -> int:
    """Peak RSS of this process so far (for Spark, plus the JVM's).

    The kernel's ``VmHWM`` of this process image: ``ru_maxrss`` survives ``exec`` and so
    starts at what the parent held when it forked this child (the generator's gigabytes)."""
    try:
        with open("/proc/self/status") as fh:
            peak = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration):  # not Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if engine == "spark":
        peak += resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # the JVM
    return peak


def hand_written(path: str, memory_limit: str) -> Any:
    """The lag percentiles per consumer, written by hand for this file: the floor."""
    con = duckdb.connect(config={"memory_limit": memory_limit})
    files = f"'{path}/part-*.parquet'"
    return con.sql(f"""
        WITH o AS (SELECT kind, seq, ref, event_id, consumer, epoch_ns(ts) AS ts,
                          epoch_ns(started_at) AS started_at, outcome
                   FROM read_parquet({files})),
             p AS (SELECT event_id, min(ts) AS published FROM o WHERE kind = 'publish'
                   GROUP BY event_id),
             d AS (SELECT r.consumer, (h.started_at - p.published) / 1e9 AS queue_s,
                          (h.ts - h.started_at) / 1e9 AS processing_s, h.outcome
                   FROM o r JOIN o h ON h.kind = 'handled' AND h.ref = r.seq
                   JOIN p ON p.event_id = r.event_id WHERE r.kind = 'receive')
        SELECT consumer, count(*) AS deliveries,
               quantile_cont(queue_s, [0.5, 0.95, 0.99]) AS queue,
               quantile_cont(processing_s, [0.5, 0.95]) AS processing,
               count(*) FILTER (WHERE outcome = 'error') AS errors
        FROM d GROUP BY consumer ORDER BY consumer""").df()


STEP = "step: "
"""How the child's line for each finished step begins (the rest of its stderr is the
engine's progress, kept only to show when the child fails)."""


def run_child(path: Path, engine: str, memory_limit: str) -> dict[str, Any]:
    """One analysis in a child process (see :func:`analyse`), each step shown as it ends."""
    tail: collections.deque[str] = collections.deque(maxlen=60)
    # (its result to a file: a pipe nobody reads while stderr is read could fill and stall it)
    with tempfile.TemporaryFile("w+") as result, subprocess.Popen(
            [sys.executable, __file__, "--child", str(path), engine, memory_limit],
            stdout=result, stderr=subprocess.PIPE, text=True) as child:
        assert child.stderr is not None
        for line in child.stderr:
            if line.startswith(STEP):
                print("    " + line.removeprefix(STEP), end="", flush=True)
            tail.append(line)
        child.wait()
        result.seek(0)
        out = result.read()
    if child.returncode != 0:
        raise RuntimeError(f"{engine} on {path} failed:\n{''.join(tail)[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"  # (decimal, as the targets are written)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(analyse(sys.argv[2], sys.argv[3], sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--huge", action="store_true", help="also 100 M events")
    parser.add_argument("--spark", action="store_true", help="also Spark local[2] at 10 M")
    parser.add_argument("--no-duckdb", action="store_true",
                        help="skip DuckDB (e.g. to time Spark alone)")
    parser.add_argument("--pandas-max", type=int, default=1_000_000,
                        help="largest trace also analysed in memory")
    parser.add_argument("--memory-limit", default="3GB", help="DuckDB's memory budget")
    parser.add_argument("--huge-memory-limit", default="5GB",
                        help="DuckDB's budget at 100 M events (its target is 8 GB, not 4: "
                             "building its tables ran out of 3 GB)")
    parser.add_argument("--dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                      "evtkit-scale"))
    parser.add_argument("--keep", action="store_true",
                        help="keep the traces written, and analyse those already there")
    args = parser.parse_args()
    sizes = [*args.events, *([100_000_000] if args.huge else [])]
    print(f"evtkit {ek.__version__}: {os.cpu_count()} cores; DuckDB budget "
          f"{args.memory_limit}; {ROWS_PER_EVENT} observation rows per event")
    rows = []
    for n in sizes:
        path = Path(args.dir) / f"scale-{n}.parquet"
        kept = args.keep and _complete(path)
        took = write(path, n) if not kept else 0.0
        size = sum(p.stat().st_size for p in path.glob("*.parquet"))
        print(f"{n:,} events: " + ("kept from an earlier run" if kept else
                                   f"written in {took:.1f} s") + f" ({gb(size)} of Parquet)")
        engines = [*(["duckdb"] if not args.no_duckdb else []),
                   *(["pandas"] if n <= args.pandas_max else []),
                   *(["spark"] if args.spark and n == 10_000_000 else [])]
        for engine in engines:
            budget = args.huge_memory_limit if n >= 100_000_000 else args.memory_limit
            result = run_child(path, engine, budget)
            assert result["answers"] == truth(n), f"{engine} at {n:,}: wrong answers"
            total = sum(v for k, v in result["times"].items() if "percentiles" not in k)
            rows.append((n, engine, total, result["peak"], result["times"]))
            steps = ", ".join(f"{k} {v:.1f} s" for k, v in result["times"].items())
            kept = f", tables kept {result['storage']}" if "storage" in result else ""
            if "hand_written" in result:
                kept += f"; the hand-written query failed: {result['hand_written']}"
            print(f"  {engine:<7} total {total:7.1f} s  peak {gb(result['peak'])}  ({steps}"
                  f"{kept}); answers checked")
        if not args.keep:
            shutil.rmtree(path)
    print("\n| events | engine | full analysis | peak memory | lag percentiles: evtkit / by hand |")
    print("|---:|---|---:|---:|---:|")
    for n, engine, total, peak, times in rows:
        ratio = ("" if engine != "duckdb" else "by hand: out of memory"
                 if "hand-written lag percentiles" not in times else
                 f"{times['evtkit lag percentiles'] / times['hand-written lag percentiles']:.2f}×")
        print(f"| {n:,} | {engine} | {total:.1f} s | {gb(peak)} | {ratio} |")
    print("\ntargets: 10 M events ≤ 60 s and ≤ 4 GB; 100 M ≤ 15 min and ≤ 8 GB; "
          "evtkit within 1.5× of the hand-written query")


if __name__ == "__main__":
    main()
