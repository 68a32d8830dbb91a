"""The ``evtkit`` command line.

::

    evtkit server                                   # embedded nats-server in the foreground
    evtkit record --subject 'orders.>' --duration 10 --out run.parquet
    evtkit info run.parquet
    evtkit demo --duration 20 --fault slow:billing:8@5+5 --out reports
    evtkit replay run.parquet --server nats://host:4222 --speed 10
    evtkit report run.parquet --out report.html
    evtkit report big.parquet --out big.html --memory-budget 4GB   # larger: DuckDB on disk
    evtkit report run.parquet --out report.html --spec api.yaml    # also: does it conform?
    evtkit export notebooks/03-consumer-latency.ipynb --out latency.html
    evtkit check run.parquet --spec api.yaml       # exit 0 conforms, 1 not, 2 cannot check
    evtkit infer run.parquet --out api.yaml        # AsyncAPI 3.0 document the traffic shows

Expected failures (bad arguments, unreachable server, unreadable file) print one line
``evtkit: error: ...`` and exit non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

from .capture.credentials import redact
from .errors import EvtkitError

if TYPE_CHECKING:
    from .engine import Dataset
    from .trace import Trace

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(prog="evtkit", description="Capture and analyse NATS event traffic.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    server = sub.add_parser("server", help="run an embedded nats-server in the foreground")
    server.add_argument("--port", type=int, default=0, help="client port (default: a free one)")
    server.add_argument("--no-jetstream", action="store_true", help="disable JetStream")

    rec = sub.add_parser("record", help="capture traffic into a trace file")
    rec.add_argument("--server", metavar="URL", help="NATS URL (default: $NATS_URL, else an "
                     "embedded server whose URL is printed)")
    rec.add_argument("--subject", action="append", metavar="S",
                     help="subject or wildcard to capture; repeatable (default: '>', or "
                     "nothing with --collect)")
    rec.add_argument("--collect", action="store_true",
                     help="also merge the rows that evtkit services send as telemetry "
                     "(EVTKIT_TELEMETRY=<seconds> or connect(telemetry=...))")
    rec.add_argument("--jetstream", type=_positive(float), metavar="SECONDS",
                     help="also sample every JetStream consumer this often and record "
                     "JetStream advisories")
    rec.add_argument("--msg-traces", action="store_true",
                     help="also record server message-trace reports (account msg_trace "
                     "destination _EVTKIT.msgtrace; nats-server 2.11+)")
    limit = rec.add_mutually_exclusive_group(required=True)
    limit.add_argument("--duration", type=_positive(float), metavar="SECONDS",
                       help="stop after this many seconds")
    limit.add_argument("--count", type=_positive(int), metavar="N",
                       help="stop after N messages")
    rec.add_argument("--out", required=True, metavar="PATH",
                     help="trace to write: .parquet (a directory of parts) or .jsonl; a "
                          ".parquet may be a URL (s3://bucket/run.parquet, gs://, file://, "
                          "anything pyarrow or fsspec opens)")
    rec.add_argument("--flush", type=_positive(float), default=0.5, metavar="SECONDS",
                     help="write to disk this often (default 0.5, at most 60); kill -9 "
                          "loses at most this plus one write")
    rec.add_argument("--name", default="evtkit-record", help="connection name")
    rec.add_argument("--shard", metavar="NAME",
                     help="share the capture with other recorders: each joins the queue "
                          "group --group, records its share of the messages and writes "
                          "part-NAME-*.parquet into the same --out directory or URL")
    rec.add_argument("--group", default="evtkit-record", metavar="NAME",
                     help="queue group of the shards (default evtkit-record)")
    rec.add_argument("--quiet", action="store_true", help="no progress bar")

    info = sub.add_parser("info", help="print a trace file's summary")
    info.add_argument("path", help="trace file (.parquet file or directory, .jsonl), or a "
                                   "Parquet trace's URL (s3://bucket/run.parquet, ...)")
    _engine_options(info)
    info.add_argument("--quiet", action="store_true", help="no progress bar")

    demo = sub.add_parser("demo", help="run the demo shop and save its trace")
    length = demo.add_mutually_exclusive_group()
    length.add_argument("--duration", type=_positive(float), metavar="S",
                        help="seconds of orders (default 10)")
    length.add_argument("--orders", type=_positive(int), metavar="N", help="number of orders")
    demo.add_argument("--rate", type=_positive(float), default=20.0, metavar="R",
                      help="orders per second (default 20)")
    demo.add_argument("--seed", type=int, default=0, metavar="N", help="random seed")
    demo.add_argument("--fault", action="append", default=[], metavar="SPEC",
                      help="KIND:SERVICE[:VALUE][@START+DURATION], e.g. slow:billing:8@5+5, "
                           "errors:billing:0.2, stall:shipping@10+3, stop:notifications@8+4, "
                           "burst:orders:200@3; repeatable")
    demo.add_argument("--server", metavar="URL", help="NATS URL (default: embedded server)")
    demo.add_argument("--out", default=".", metavar="DIR", help="directory for the trace")
    demo.add_argument("--name", help="file name (default shop-<seed>-<time>.parquet)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")

    rep = sub.add_parser("replay", help="publish a trace's events back into NATS")
    rep.add_argument("path", help="trace file")
    rep.add_argument("--server", metavar="URL", help="NATS URL (default: $NATS_URL, else an "
                     "embedded server whose URL is printed)")
    rep.add_argument("--speed", type=float, default=1.0, metavar="X",
                     help="1 = original timing, 10 = ten times faster, 0 = as fast as "
                          "possible")
    rep.add_argument("--subject-map", action="append", default=[], metavar="OLD=NEW",
                     help="rename subjects (exact, or prefixes like orders.>=test.orders.>)")
    rep.add_argument("--filter", metavar="SUBJECT", help="only subjects matching this")
    rep.add_argument("--limit", type=_positive(int), metavar="N", help="at most N events")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")

    page = sub.add_parser("report", help="write a standalone HTML report of a trace")
    page.add_argument("path", help="trace file or a Parquet trace's URL")
    page.add_argument("--out", required=True, metavar="FILE.html", help="page to write")
    page.add_argument("--title", help="page title (default: the trace file name)")
    page.add_argument("--sample", type=_positive(int), default=20_000, metavar="N",
                      help="most deliveries drawn in the latency plot (default 20000)")
    page.add_argument("--quiet", action="store_true", help="no progress bar")
    page.add_argument("--spec", metavar="FILE", help="AsyncAPI 3.0 or 2.x document to hold "
                      "the traffic against (adds a section; loads the trace in memory)")
    _engine_options(page)

    check = sub.add_parser("check", help="check a trace against an AsyncAPI document: exit "
                           "0 when it conforms, 1 when not, 2 when it cannot be checked")
    check.add_argument("path", help="trace file")
    check.add_argument("--spec", required=True, metavar="FILE",
                       help="AsyncAPI 3.0 or 2.x document (YAML or JSON)")
    check.add_argument("--examples", type=int, default=10, metavar="N",
                       help="violations to list (default 10)")
    check.add_argument("--strict", action="store_true",
                       help="also fail when a declared channel or operation was not seen")

    infer = sub.add_parser("infer", help="write the AsyncAPI 3.0 document a trace shows "
                           "(channels, message schemas, who sends and receives)")
    infer.add_argument("path", help="trace file")
    infer.add_argument("--out", required=True, metavar="FILE.yaml",
                       help="document to write ('-' for standard output)")
    infer.add_argument("--title", help="info.title (default: Observed events)")
    infer.add_argument("--examples", type=int, default=3, metavar="N",
                       help="examples per message (default 3)")

    export = sub.add_parser("export", help="run a notebook and save it as one offline HTML file")
    export.add_argument("notebook", help=".ipynb file")
    export.add_argument("--out", required=True, metavar="FILE.html", help="page to write")
    export.add_argument("--timeout", type=_positive(float), default=600, metavar="S",
                        help="seconds a cell may run (default 600)")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evtkit")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "server":
            return asyncio.run(_server(args))
        if args.command == "record":
            return asyncio.run(_record(args))
        if args.command == "info":
            return _info(args)
        if args.command == "demo":
            return asyncio.run(_demo(args))
        if args.command == "replay":
            return asyncio.run(_replay(args))
        if args.command == "report":
            from .share.report import report

            if args.spec and args.engine == "auto":
                args.engine = "memory"  # conformance reads every payload
            with _analysed(args) as trace:
                print(report(trace, args.out, title=args.title, sample=args.sample,
                             progress=not args.quiet, spec=args.spec))
            return EXIT_OK
        if args.command == "check":
            return _check(args)
        if args.command == "infer":
            return _infer(args)
        if args.command == "export":
            from .share.notebook import export

            print(export(args.notebook, args.out, timeout=args.timeout,
                         progress=not args.quiet))
            return EXIT_OK
    except (EvtkitError, OSError, ValueError, RuntimeError) as exc:
        notes = "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))
        print(f"evtkit: error: {redact(str(exc) + notes)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
    raise AssertionError(args.command)  # pragma: no cover - argparse requires a command


def _check(args: argparse.Namespace) -> int:
    """``evtkit check``: the conformance report; a spec or trace that cannot be read
    exits 2, so that 1 always means "read fine, does not conform"."""
    from .asyncapi import load as load_spec
    from .store import load

    try:
        spec = load_spec(args.spec)
        trace = load(args.path)
    except (EvtkitError, OSError, ValueError) as exc:
        print(f"evtkit: error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    result = trace.conformance(spec)
    print(result.describe(examples=args.examples))
    failing = not result.ok or (args.strict and len(result.summary()) > 0)
    return EXIT_ERROR if failing else EXIT_OK


def _infer(args: argparse.Namespace) -> int:
    """``evtkit infer``: a trace that cannot be read or a file that cannot be written
    exits 2."""
    from pathlib import Path

    from .asyncapi.infer import infer_document, to_yaml
    from .store import load

    try:
        doc = infer_document(load(args.path), title=args.title, examples=args.examples)
        text = to_yaml(doc)
        if args.out == "-":
            sys.stdout.write(text)
        else:
            Path(args.out).write_text(text, encoding="utf-8")
    except (EvtkitError, OSError, ValueError) as exc:
        print(f"evtkit: error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    if args.out != "-":
        messages = sum(len(c.get("messages", ())) for c in doc["channels"].values())
        print(f"{args.out}: {len(doc['channels']):,} channels, {messages:,} messages, "
              f"{len(doc['operations']):,} operations (AsyncAPI {doc['asyncapi']})")
    return EXIT_OK


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # HUP: its terminal closed
        loop.add_signal_handler(sig, stop.set)


async def _server(args: argparse.Namespace) -> int:
    from .capture.server import EmbeddedServer

    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with EmbeddedServer(port=args.port, jetstream=not args.no_jetstream) as server:
        print(server.url, flush=True)
        print(f"nats-server pid {server.pid}; Ctrl-C to stop", file=sys.stderr, flush=True)
        await stop.wait()
    return EXIT_OK


async def _record(args: argparse.Namespace) -> int:
    from ._location import is_url, public_url
    from .recording import record
    from .store import load, trace_format

    trace_format(args.out)  # a bad suffix fails before connecting
    out = public_url(args.out) if is_url(args.out) else args.out  # credentials not shown
    if args.flush > 60:
        raise ValueError(f"--flush must be at most 60 seconds, not {args.flush:g}")
    stop = asyncio.Event()
    _stop_on_signals(stop)

    def ready(bus: Any) -> None:
        where = "embedded server " if bus.server is not None else ""
        shard = f" as shard {args.shard}" if args.shard else ""
        print(f"evtkit: recording from {where}{bus.url} into {out}{shard}",
              file=sys.stderr, flush=True)

    totals = await record(
        args.out,
        url=args.server,
        subjects=args.subject or ([] if args.collect else [">"]),
        collect=args.collect,
        jetstream=args.jetstream,
        msg_traces=args.msg_traces,
        duration=args.duration,
        count=args.count,
        flush_interval=args.flush,
        name=args.name,
        progress=not args.quiet,
        stop=stop,
        on_ready=ready,
        shard=args.shard,
        group=args.group,
    )
    if args.shard:  # the other shards may still be writing: report this one's share
        print(f"shard {args.shard}: {totals['messages']:,} messages, {totals['drops']:,} "
              f"drops, {totals['parts']:,} parts in {out}")
    else:
        print(load(args.out).describe())
    return EXIT_OK


async def _demo(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from .demo import parse_fault, run_shop

    faults = [parse_fault(f) for f in args.fault]  # bad specs fail before anything starts
    trace = await run_shop(url=args.server, duration=args.duration, orders=args.orders,
                           rate=args.rate, seed=args.seed, faults=faults,
                           progress=not args.quiet)
    name = args.name or f"shop-{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}.parquet"
    path = trace.save(Path(args.out) / name)
    print(trace.describe())
    lag = trace.lag()
    print("\nlag status:")
    for row in lag.itertuples(index=False):
        print(f"  {row.consumer:<14} {row.status:<6} {row.reason}")
    print(f"\ntrace written to {path}")
    return EXIT_OK


async def _replay(args: argparse.Namespace) -> int:
    from .capture.bus import Bus
    from .replay import check_speed, describe, replay
    from .store import load
    from .subject import Remap

    check_speed(args.speed)
    Remap(args.subject_map)  # bad maps fail before connecting
    trace = load(args.path)
    async with Bus(args.server, name="evtkit-replay") as bus:
        if bus.server is not None:
            print(f"evtkit: replaying into embedded server {bus.url}", file=sys.stderr)
        result = await replay(trace, bus, speed=args.speed, subject_map=args.subject_map,
                              subject_filter=args.filter, limit=args.limit,
                              progress=not args.quiet)
    print(describe(result, args.speed))
    return EXIT_OK


def _engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=("auto", "memory", "duckdb", "spark"),
                        default="auto",
                        help="memory: load it (full diagnosis); duckdb: analyse it on disk; "
                             "spark: on Spark (SparkSession.builder, e.g. SPARK_REMOTE); "
                             "auto (default): memory if it fits --memory-budget, else duckdb")
    parser.add_argument("--memory-budget", type=_size, default=None, metavar="SIZE",
                        help="what the in-memory path may use, e.g. 4GB (default: half of "
                             "this machine's memory); DuckDB spills to disk past it")


def _size(text: str) -> int:
    """``4GB`` / ``512MB`` / ``1.5GiB`` → bytes."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4GB, 512MB)")
    power = "KMGT".find(match[2].upper()) + 1 if match[2] else 0
    return int(float(match[1]) * 1024**power)


def _machine_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _info(args: argparse.Namespace) -> int:
    with _analysed(args) as trace:
        print(trace.describe())
    return EXIT_OK


@contextmanager
def _analysed(args: argparse.Namespace) -> Iterator[Trace | Dataset]:
    """The trace at ``args.path`` on the engine ``--engine`` names (``auto``: in memory if
    it fits ``--memory-budget``, else DuckDB): loaded, or opened on disk until the block
    ends."""
    from .engine import choose_engine, dataset
    from .store import load

    budget = args.memory_budget or _machine_memory() // 2
    engine = choose_engine(args.path, budget) if args.engine == "auto" else args.engine
    if engine == "memory":
        yield load(args.path)
        return
    session = None
    if engine == "spark":
        from pyspark.sql import SparkSession

        session = SparkSession.builder.appName("evtkit").getOrCreate()
    # DuckDB needs some room of its own however small the budget; it spills past it.
    limit = max(budget, 256 * 1024**2)
    with _ended_by_signals(), dataset.open(
            args.path, engine, spark=session, memory_limit=f"{limit // 1024**2}MB",
            progress=not args.quiet and sys.stderr.isatty()) as ds:
        yield ds


@contextmanager
def _ended_by_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP end the block as Ctrl-C does, through the code that cleans up
    (a dataset removes its spill directory: 17 GB were left behind by a 100 M-event
    analysis that the default action of SIGTERM ended), and the process then exits with
    128 + the signal's number. A query under way is interrupted (DuckDB then raises
    ``RuntimeError('Query interrupted')``, taken for the signal's exit)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # (handlers can be set in the main thread only)
        return
    got: list[int] = []

    def stop(signum: int, frame: Any) -> NoReturn:
        got.append(signum)
        raise SystemExit(128 + signum)

    before = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    except RuntimeError:
        if got:
            raise SystemExit(128 + got[0]) from None
        raise
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
