"""Analysis benchmark: load a large trace file, then chains(), lag(), fanout(), backlog()
and diagnose() on it, against a naive per-event Python reference computed on a sample of
the same kind of data.

    python bench/analysis.py [--events 1000000] [--sample 6000] [--no-payloads]

The user's path: ``ek.testing.make_trace`` generates the trace and ``trace.save`` writes it
to a Parquet file (in a child process); another fresh process ``ek.load``s it and runs the
analyses, so its peak resident memory (``ru_maxrss``) is the analysis alone. Prints the time
of each step at full size, the peak memory against its target, and how many times faster
than the naive reference each function is (per event, measured on the sample, where the two
are also checked to give the same answers).
"""

from __future__ import annotations

import argparse
import bisect
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

import evtkit as ek

FUNCTIONS = ("chains", "lag", "fanout", "backlog")


# -- the naive reference: the same answers, one Python loop per event / delivery ---------------

NEVER = 2**63 - 1


def naive_chains(events: list[dict[str, Any]], deliveries: list[dict[str, Any]]
                 ) -> dict[str, dict[str, Any]]:
    by_id = {e["event_id"]: e for e in events}
    per_event: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in deliveries:
        per_event[d["event_id"]].append(d)
    flows: dict[str, dict[str, Any]] = {}
    for e in events:
        depth, node, seen = 1, e, {e["event_id"]}
        while node["causation_id"] in by_id and node["causation_id"] not in seen:
            node = by_id[node["causation_id"]]
            seen.add(node["event_id"])
            depth += 1
        root = node if node["causation_id"] not in by_id else None
        f = flows.setdefault(e["correlation_id"], {
            "events": 0, "deliveries": 0, "consumers": set(), "depth": 0, "errors": 0,
            "start": NEVER, "end": -NEVER, "last_root": None, "roots": []})
        f["events"] += 1
        f["depth"] = max(f["depth"], depth if root is not None else 0)
        f["start"] = min(f["start"], e["published_at"])
        if root is e:
            f["roots"].append((e["published_at"], e["event_id"]))
        candidates = [(e["published_at"], 0)] + [
            (d["done_at"] if d["done_at"] is not None else d["received_at"], 1)
            for d in per_event[e["event_id"]]]
        for d in per_event[e["event_id"]]:
            f["deliveries"] += 1
            f["consumers"].add(d["consumer"])
            f["errors"] += d["outcome"] == "error"
        for end, is_delivery in candidates:
            if end > f["end"] or (end == f["end"] and is_delivery):
                f["end"] = end
                f["last_root"] = root
    out = {}
    for flow, f in flows.items():
        root = f["last_root"]
        out[flow] = {
            "events": f["events"], "deliveries": f["deliveries"],
            "consumers": len(f["consumers"]), "depth": f["depth"], "errors": f["errors"],
            "start": f["start"], "end": f["end"],
            "root": min(f["roots"])[1] if f["roots"] else None,
            "critical_path_s": (f["end"] - root["published_at"]) / 1e9 if root else None,
        }
    return out


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's and pandas' default)."""
    ordered = sorted(values)
    at = (len(ordered) - 1) * q
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def naive_bins(events: list[dict[str, Any]], deliveries: list[dict[str, Any]],
               ends: list[int], step: int) -> dict[str, dict[str, list[Any]]]:
    """Per consumer and bin: what lag.backlog computes, by looping over every delivery."""
    per: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in deliveries:
        per[d["consumer"]].append(d)
    out = {}
    for consumer, ds in per.items():
        n = len(ends)
        bins = {k: [0] * n for k in ("backlog", "arrivals", "received", "handled", "errors",
                                      "missed")}
        oldest = [NEVER] * n
        subjects = {d["subject"] for d in ds}
        first = min(d["published_at"] for d in ds)
        got = {d["event_id"] for d in ds}

        def slot(t: int) -> int:
            return bisect.bisect_left(ends, t)

        for d in ds:
            finish = d["received_at"] if d["outcome"] == "dropped" else (
                d["done_at"] if d["done_at"] is not None else NEVER)
            for k in range(bisect.bisect_left(ends, d["published_at"]), n):
                if ends[k] >= finish:
                    break
                bins["backlog"][k] += 1
                oldest[k] = min(oldest[k], d["published_at"])
            bins["received"][slot(d["received_at"])] += 1
            if d["outcome"] != "dropped" and d["done_at"] is not None:
                bins["handled"][slot(d["done_at"])] += 1
            if d["outcome"] == "error":
                bins["errors"][slot(d["done_at"])] += 1
        for e in events:
            if e["subject"] in subjects and e["published_at"] >= first:
                bins["arrivals"][slot(e["published_at"])] += 1
                if e["event_id"] not in got:
                    bins["missed"][slot(e["published_at"])] += 1
        bins["oldest_s"] = [(ends[k] - o) / 1e9 if o != NEVER else 0.0
                            for k, o in enumerate(oldest)]
        out[consumer] = bins
    return out


def naive_lag(events: list[dict[str, Any]], deliveries: list[dict[str, Any]],
              ends: list[int], step: int) -> dict[str, dict[str, Any]]:
    """Per consumer: latency percentiles and errors, and the worst Burrow window status,
    with the windows' counts made by naive loops and judged by evtkit's rule itself (the
    rule is compared with ``trace.lag_status()``, which is what it is fed to)."""
    from evtkit.analysis.lag import STATUSES, _judge

    per: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in deliveries:
        per[d["consumer"]].append(d)
    bins = naive_bins(events, deliveries, ends, step)
    out = {}
    for consumer, ds in per.items():
        queue = [(d["started_at"] - d["published_at"]) / 1e9 for d in ds]
        work = [(d["done_at"] - d["started_at"]) / 1e9 for d in ds]
        b = {k: np.array(v) for k, v in bins[consumer].items()}
        w = min(5, len(ends))
        statuses = [_judge({k: v[i - w + 1:i + 1] for k, v in b.items()}, step / 1e9, 0.1, 3)[0]
                    for i in range(w - 1, len(ends))]
        out[consumer] = {
            **{f"queue_p{int(q * 100)}_s": _percentile(queue, q) for q in (0.5, 0.95, 0.99)},
            **{f"processing_p{int(q * 100)}_s": _percentile(work, q) for q in (0.5, 0.95)},
            "errors": sum(d["outcome"] == "error" for d in ds),
            "worst_window": max(statuses, key=STATUSES.index),
        }
    return out


def naive_fanout(events: list[dict[str, Any]], deliveries: list[dict[str, Any]]
                 ) -> dict[str, dict[str, Any]]:
    by_id = {e["event_id"]: e for e in events}
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        row = out.setdefault(e["subject"], {"events": 0, "deliveries": 0, "consumers": set(),
                                            "emitted": set()})
        row["events"] += 1
        parent = by_id.get(e["causation_id"])
        if parent is not None:
            out.setdefault(parent["subject"], {"events": 0, "deliveries": 0,
                                               "consumers": set(), "emitted": set()})
            out[parent["subject"]]["emitted"].add(e["type"])
    for d in deliveries:
        row = out[by_id[d["event_id"]]["subject"]]
        row["deliveries"] += 1
        row["consumers"].add(d["consumer"])
    return {s: {"events": r["events"], "deliveries": r["deliveries"],
                "consumer_names": ", ".join(sorted(r["consumers"])),
                "emitted_types": ", ".join(sorted(r["emitted"]))} for s, r in out.items()}


def naive_backlog(events: list[dict[str, Any]], deliveries: list[dict[str, Any]],
                  ends: list[int], step: int) -> dict[str, dict[str, list[Any]]]:
    return naive_bins(events, deliveries, ends, step)


def rows_of(trace: ek.Trace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def ns(series: pd.Series) -> list[int | None]:
        values = series.array.asi8
        return [None if v == np.iinfo(np.int64).min else int(v) for v in values]

    ev = trace.events
    keys = ("event_id", "causation_id", "correlation_id", "subject", "type")
    events = [dict(zip(keys, row, strict=True)) | {"published_at": pub}
              for row, pub in zip(ev[list(keys)].itertuples(index=False, name=None),
                                  ns(ev["published_at"]), strict=True)]
    dv = trace.deliveries
    times = {c: ns(dv[c]) for c in ("published_at", "received_at", "started_at", "done_at")}
    deliveries = [{"event_id": e, "consumer": c, "outcome": o, "subject": s,
                   **{k: v[i] for k, v in times.items()}}
                  for i, (e, c, o, s) in enumerate(zip(dv["event_id"], dv["consumer"],
                                                       dv["outcome"], dv["subject"],
                                                       strict=True))]
    return events, deliveries


def check(trace: ek.Trace, naive: dict[str, Any]) -> None:
    """The fast answers equal the naive ones on the sample, column by column."""
    chains = trace.chains().set_index("correlation_id")
    for flow, want in naive["chains"].items():
        row = chains.loc[flow]
        for column in ("events", "deliveries", "consumers", "errors"):
            assert row[column] == want[column], (flow, column)
        assert (row["depth"] if pd.notna(row["depth"]) else 0) == want["depth"]
        assert (row["started_at"].value, row["ended_at"].value) == (want["start"], want["end"])
        assert (row["root_event_id"] if pd.notna(row["root_event_id"]) else None) == want["root"]
        if want["critical_path_s"] is not None:
            assert abs(row["critical_path_s"] - want["critical_path_s"]) < 1e-9, flow
    lag = trace.lag(FREQ).set_index("consumer")
    from evtkit.analysis.lag import STATUSES

    windows = trace.lag_status(FREQ)
    worst = windows.groupby("consumer")["status"].agg(lambda s: max(s, key=STATUSES.index))
    for consumer, want in naive["lag"].items():
        for column, value in want.items():
            got = worst[consumer] if column == "worst_window" else lag.loc[consumer, column]
            assert got == value if isinstance(value, str | int) else abs(got - value) < 1e-9, \
                (consumer, column, got, value)
    fan = trace.fanout().set_index("subject")
    for subject, want in naive["fanout"].items():
        for column, value in want.items():
            assert fan.loc[subject, column] == value, (subject, column)
    backlog = trace.backlog(FREQ)
    for consumer, want in naive["backlog"].items():
        mine = backlog[backlog["consumer"] == consumer]
        for column in ("backlog", "arrivals", "received", "handled", "errors", "missed"):
            assert mine[column].tolist() == want[column], (consumer, column)
        assert np.allclose(mine["oldest_s"], want["oldest_s"], atol=1e-9)


FREQ = "50ms"


def naive_run(trace: ek.Trace) -> tuple[dict[str, float], dict[str, Any]]:
    events, deliveries = rows_of(trace)
    ts = trace.observations["ts"].array.asi8
    step = pd.Timedelta(FREQ).value
    first = int(ts.min()) - int(ts.min()) % step
    ends = list(range(first + step, int(ts.max()) + 2 * step, step))
    times, answers = {}, {}
    for name, run in (("chains", lambda: naive_chains(events, deliveries)),
                      ("lag", lambda: naive_lag(events, deliveries, ends, step)),
                      ("fanout", lambda: naive_fanout(events, deliveries)),
                      ("backlog", lambda: naive_backlog(events, deliveries, ends, step))):
        start = time.perf_counter()
        answers[name] = run()
        times[name] = time.perf_counter() - start
    return times, answers


STEPS = ("load", *FUNCTIONS, "diagnose")
TARGET_GB = 1.5


def peak_gb() -> float:
    """This process's peak resident memory in decimal GB, as the target is written
    (``ru_maxrss`` is in KiB on Linux; this printed GiB labelled GB before)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def generate(path: str, n_events: int, options: dict[str, Any]) -> dict[str, Any]:
    """Child process: generate a trace and save it, as a recording would leave it."""
    start = time.perf_counter()
    trace = ek.testing.make_trace(n_events, seed=2, **options)
    made = time.perf_counter() - start
    start = time.perf_counter()
    trace.save(path)
    return {"generated_s": made, "saved_s": time.perf_counter() - start,
            "observations": len(trace.observations)}


def analyse(path: str) -> dict[str, Any]:
    """Child process: what a notebook does with the file — load it, then run the analyses
    one after the other on the same trace (so chains()' lineage is reused by fanout(), and
    lag() computes the diagnosis that diagnose() then returns)."""
    times: dict[str, float] = {}
    start = time.perf_counter()
    trace = ek.load(path)
    times["load"] = time.perf_counter() - start
    for name in (*FUNCTIONS, "diagnose"):
        gc.collect()
        start = time.perf_counter()
        getattr(trace, name)()
        times[name] = time.perf_counter() - start
    with open("/proc/self/status") as fh:  # the same peak, as the kernel counts this image
        hwm = next((int(line.split()[1]) for line in fh if line.startswith("VmHWM:")), 0)
    return {"times": times, "peak_gb": peak_gb(), "vm_hwm_gb": hwm * 1024 / 1e9,
            "events": len(trace.events), "deliveries": len(trace.deliveries),
            "observations": len(trace.observations)}


def child(*args: str) -> dict[str, Any]:
    """Run this script in a fresh process (its peak memory is its own) and read its answer."""
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=6_000)
    parser.add_argument("--no-payloads", action="store_true",
                        help="events without payload bytes (lighter, less like a capture)")
    parser.add_argument("--generate", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--analyse", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    options = {"depth": 3, "fanout": 3, "rate": 100.0, "failing": {"audit": 0.05},
               "payloads": not args.no_payloads}
    if args.generate:
        print(json.dumps(generate(args.generate, args.events, options)))
        return
    if args.analyse:
        print(json.dumps(analyse(args.analyse)))
        return

    sample = ek.testing.make_trace(args.sample, seed=1, **options)
    naive_times, answers = naive_run(sample)
    check(sample, answers)
    n_sample = len(sample.events)
    del sample, answers
    with tempfile.TemporaryDirectory(prefix="evtkit-bench-") as tmp:
        path = os.path.join(tmp, "trace.parquet")
        made = child("--generate", path, "--events", str(args.events),
                     *(["--no-payloads"] if args.no_payloads else []))
        size_mb = os.path.getsize(path) / 1024**2
        got = child("--analyse", path)
    times = got["times"]
    n_events = got["events"]

    print(f"evtkit {ek.__version__}: generated {n_events:,} events, {got['deliveries']:,} "
          f"deliveries ({got['observations']:,} observation rows, payloads "
          f"{'off' if args.no_payloads else 'on'}) in {made['generated_s']:.1f} s; saved "
          f"in {made['saved_s']:.1f} s ({size_mb:.0f} MB)")
    print(f"\nin a fresh process, one step after the other; per event: evtkit at full size, "
          f"naive on the {n_sample:,}-event sample")
    print(f"{'step':<10} {'time':>8} {'evtkit/event':>13} {'naive/event':>12} {'speed-up':>9}")
    for name in STEPS:
        line = f"{name:<10} {times[name]:>6.2f} s {times[name] / n_events * 1e6:>10.2f} µs"
        if name in naive_times:
            per_ours = times[name] / n_events
            per_naive = naive_times[name] / n_sample
            line += f" {per_naive * 1e6:>9.1f} µs {per_naive / per_ours:>8.0f}×"
        elif name == "diagnose":
            line += "   (computed by lag() before: cached)"
        print(line)
    print(f"{'analyses':<10} {sum(times[n] for n in FUNCTIONS):>6.2f} s   (target ≤ 10 s)")
    print(f"{'total':<10} {sum(times.values()):>6.2f} s   (load and every analysis)")
    met = "met" if got["peak_gb"] <= TARGET_GB else "not met"
    print(f"\npeak RSS of the analysing process {got['peak_gb']:.2f} GB "
          f"(target ≤ {TARGET_GB} GB: {met}; VmHWM {got['vm_hwm_gb']:.2f} GB)")
    print(f"sample of {n_sample:,} events: naive and evtkit answers checked equal "
          "(chains, lag percentiles and errors, worst lag_status window, fanout, backlog)")


if __name__ == "__main__":
    main()
