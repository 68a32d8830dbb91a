"""Fault injection: does ``trace.diagnose()`` name the fault that was injected?

    python bench/diagnose.py [--seeds 3] [--duration 6] [--quick]

Runs the demo shop (:mod:`evtkit.demo`, embedded nats-server) once per case and scores the
diagnosis against the injected fault (:func:`evtkit.testing.score_diagnosis`):

- every fault kind the demo supports (slow, errors, stall, stop on four services; bursts of
  three sizes from the order source) × ``--seeds`` seeds;
- propagation: an upstream stall that makes downstream lag, one of billing's two queue-group
  workers slow, a JetStream consumer whose handler fails until JetStream gives up, a slow
  consumer dropping messages through small pending limits;
- healthy runs: varied rates and seeds, bursts within capacity.

Scores: Top@1 (the first root-cause finding names the injected service and fault kind),
Top@3, the median overlap (IoU) of that finding's window with the injected window, and false
alarms (warning or critical findings) on healthy runs. Targets: Top@1 ≥ 0.95, IoU ≥ 0.7,
no false alarms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

import evtkit as ek
from evtkit.testing import score_diagnosis

SERVICES = ("inventory", "billing", "shipping", "notifications")


@dataclass(frozen=True)
class Case:
    group: str
    faults: tuple[str, ...] = ()
    seed: int = 1
    rate: float = 20.0
    options: dict[str, Any] = field(default_factory=dict)


def cases(seeds: int, start: float, length: float) -> list[Case]:
    at = f"@{start:g}+{length:g}"
    out = []
    for seed in range(1, seeds + 1):
        for service in SERVICES:
            out.append(Case("slow", (f"slow:{service}:8{at}",), seed))
            out.append(Case("errors", (f"errors:{service}:0.3{at}",), seed))
            out.append(Case("stall", (f"stall:{service}{at}",), seed))
            out.append(Case("stop", (f"stop:{service}{at}",), seed))
        for size in (150, 250, 400):
            out.append(Case("burst", (f"burst:orders:{size}@{start:g}",), seed))
        out.append(Case("upstream stall", (f"stall:inventory{at}",), seed))
        out.append(Case("one queue worker slow", (f"slow:billing-{seed % 2 + 1}:10{at}",), seed))
        out.append(Case("JetStream gives up", (f"errors:ledger:1{at}",), seed,
                        options={"jetstream": True}))
        out.append(Case("drops (pending limits)", (f"slow:notifications:30{at}",), seed,
                        options={"pending_limits": {"notifications": 10}}))
    for seed, rate in zip(range(11, 21), (10, 15, 20, 25, 30, 10, 15, 20, 25, 30), strict=True):
        extra = (f"burst:orders:{10 + seed}@{start:g}",) if seed % 2 else ()
        out.append(Case("healthy", extra, seed, rate, {"jetstream": seed % 3 == 0}))
    return out


async def run(case: Case, duration: float) -> dict[str, Any]:
    began = time.perf_counter()
    trace = await ek.demo.run_shop(duration=duration, rate=case.rate, seed=case.seed,
                                   faults=case.faults, progress=False, **case.options)
    took = time.perf_counter() - began
    began = time.perf_counter()
    findings = trace.diagnose()
    diagnosed = time.perf_counter() - began
    healthy = case.group == "healthy"
    score = score_diagnosis(trace, findings)
    return {"group": case.group, "faults": list(case.faults), "seed": case.seed,
            "rate": case.rate, "rank": 0 if healthy else score.rank, "iou": score.iou,
            "alarms": score.alarms, "top": score.top, "run_s": took,
            "diagnose_s": diagnosed, "events": len(trace.events)}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| case | runs | Top@1 | Top@3 | median IoU | false alarms |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    groups = list(dict.fromkeys(r["group"] for r in results))
    faulty = [r for r in results if r["group"] != "healthy"]

    def row(name: str, rs: list[dict[str, Any]]) -> str:
        if name == "healthy":
            return f"| healthy | {len(rs)} | | | | {sum(r['alarms'] for r in rs)} |"
        top1 = sum(r["rank"] == 1 for r in rs) / len(rs)
        top3 = sum(1 <= r["rank"] <= 3 for r in rs) / len(rs)
        ious = [r["iou"] for r in rs if r["rank"] >= 1]
        iou = f"{statistics.median(ious):.2f}" if ious else "–"
        return f"| {name} | {len(rs)} | {top1:.2f} | {top3:.2f} | {iou} | |"

    for group in groups:
        lines.append(row(group, [r for r in results if r["group"] == group]))
    if faulty:
        lines.append(row("**all faults**", faulty))
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    todo = cases(args.seeds, args.start, args.length)
    if args.only:
        todo = [c for c in todo if args.only in c.group]
    results = []
    for case in tqdm(todo, desc="fault injection", unit="run"):
        result = await run(case, args.duration)
        results.append(result)
        miss = result["group"] != "healthy" and result["rank"] != 1
        if miss or (result["group"] == "healthy" and result["alarms"]):
            tqdm.write(f"  {result['group']} {result['faults']} seed {result['seed']}: "
                       f"rank {result['rank']}, top finding {result['top']!r}")
    print(table(results))
    runs = [r["run_s"] for r in results]
    diag = [r["diagnose_s"] for r in results]
    print(f"\n{len(results)} runs, {sum(runs):.0f} s of shop; diagnose() took "
          f"{statistics.median(diag) * 1e3:.0f} ms per run (median, "
          f"{statistics.median(r['events'] for r in results):.0f} events)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of orders per run")
    parser.add_argument("--start", type=float, default=2.0, help="fault start (s)")
    parser.add_argument("--length", type=float, default=2.5, help="fault duration (s)")
    parser.add_argument("--only", help="run only the cases whose group contains this")
    parser.add_argument("--out", help="write every run's result to this JSON file")
    asyncio.run(main(parser.parse_args()))
