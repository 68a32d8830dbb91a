"""The evtkit command line: record, info, and one-line errors for bad input."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

import evtkit as ek
from tests.waiting import until

EVTKIT = [sys.executable, "-m", "evtkit"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EVTKIT, *args], capture_output=True, text=True, timeout=timeout)


async def start_recorder(*args: str) -> asyncio.subprocess.Process:
    """Start `evtkit record` and wait until its tap is subscribed."""
    proc = await asyncio.create_subprocess_exec(
        *EVTKIT, "record", "--quiet", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), 30)
    assert b"recording from" in line, line
    return proc


async def record_while_publishing(bus, out, subject: str, n: int, *limit: str):
    """Start `evtkit record` on ``subject.>`` and publish ``n`` events to ``subject.x``."""
    proc = await start_recorder("--server", bus.url, "--subject", f"{subject}.>", *limit,
                                "--out", str(out))
    for i in range(n):
        await bus.publish(f"{subject}.x", {"i": i})
    await bus.flush()
    return proc


def recorded_everything(out) -> bool:
    """Whether the parts written so far hold 5 events, their hops, and a last consumer
    sample with the backlog of 5 (parts appear whole: written aside, then renamed)."""
    try:
        trace = ek.load(out)
    except ek.TraceFormatError:  # no part written yet
        return False
    info = trace.consumer_info
    return (len(trace.events) == 5 and len(info) > 0 and info["backlog"].iloc[-1] == 5
            and set(trace.hops["event_id"]) == set(trace.events["event_id"]))


class TestRecord:
    async def test_sigint_flushes_everything_and_exits_zero(self, bus, tmp_path):
        out = tmp_path / "run.parquet"
        proc = await record_while_publishing(bus, out, "rec", 300, "--duration", "60")
        await bus.publish("other", {})  # not recorded
        # Nothing to wait for: after this flush the server has routed all 300 events to
        # the recorder, and on SIGINT the recorder reads everything routed to it before it
        # writes its last part (its own flush); an event missing would be a real loss.
        await bus.flush()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, stderr
        assert b"events       300" in stdout  # the one-screen summary
        trace = ek.load(out)
        assert len(trace.events) == 300 and set(trace.events["subject"]) == {"rec.x"}
        assert trace.metadata["complete"] is True

    async def test_count_limit_stops_by_itself(self, bus, tmp_path):
        out = tmp_path / "run.jsonl"
        proc = await record_while_publishing(bus, out, "cnt", 100, "--count", "40")
        await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
        assert len(ek.load(out).events) >= 40

    async def test_jetstream_and_message_traces_are_recorded_too(self, tmp_path):
        """`--jetstream` samples consumers and records advisories, `--msg-traces` the
        server's trace reports: the server-side view from the command line."""
        out = tmp_path / "server.parquet"
        async with ek.EmbeddedServer(trace_sampling=100) as server, \
                ek.connect(server.url, name="app") as bus:
            await bus.add_stream("CLI", ["cli.>"])
            await bus.nc.jetstream().add_consumer("CLI", durable_name="later",
                                                  ack_policy="explicit")
            proc = await start_recorder("--server", server.url, "--subject", "cli.>",
                                        "--jetstream", "0.1", "--msg-traces",
                                        "--duration", "60", "--out", str(out))
            reports = await bus.record_message_traces()  # the recorder gets the same ones
            for i in range(5):
                await bus.publish("cli.x", {"i": i}, jetstream=True)
            await until(lambda: reports.reports == 5, what="the five trace reports")
            # The recorder is another process: its periodic writes (--flush, 1 s) show
            # what it holds. Wait until they have the five events, their hops and a
            # consumer sample taken after the five were stored.
            await until(lambda: recorded_everything(out), what="the recorder's samples")
            proc.send_signal(signal.SIGINT)
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, stderr
        trace = ek.load(out)
        info = trace.consumer_info
        assert info["consumer"].eq("later").all() and info["backlog"].iloc[-1] == 5
        assert set(trace.hops["event_id"]) == set(trace.events["event_id"])
        assert len(trace.events) == 5
        assert b"jetstream    CLI/later (backlog 5)" in stdout

    @pytest.mark.parametrize("name", ["killed.parquet", "killed.jsonl"])
    async def test_sigkill_mid_run_keeps_every_write_and_leaves_no_hole(
        self, bus, tmp_path, name
    ):
        """What a write put on disk survives kill -9, the file loads, and what is there is
        the first part of what was published (no hole). How much time the last, unwritten
        interval covers depends on the machine's load: asserted here is what holds on any
        machine; the interval is documented with --flush."""
        out = tmp_path / name
        proc = await start_recorder("--server", bus.url, "--subject", "kill.>",
                                    "--duration", "60", "--flush", "0.5", "--out", str(out))
        sent: list[str] = []

        async def publish(n: int) -> None:
            for _ in range(n):
                sent.append((await bus.publish("kill.x", {"n": len(sent)})).id)
            await bus.flush()

        def written() -> set[str]:
            try:
                return set(ek.load(out).events["event_id"])
            except ek.TraceFormatError:  # no write yet
                return set()

        await publish(300)
        await until(lambda: len(written()) >= 300, timeout=30, what="a write of 300 events")
        on_disk = written()
        await publish(300)  # more, some of which the kill will catch unwritten
        proc.kill()
        await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        trace = ek.load(out)
        captured = trace.events.sort_values("published_at")["event_id"].tolist()
        assert on_disk <= set(captured), "a write that was on disk is gone"
        assert captured == sent[:len(captured)], "what was written has a hole"
        assert trace.metadata["complete"] is False

    def test_unreachable_server_is_one_line(self, tmp_path):
        result = run("record", "--server", "nats://127.0.0.1:1", "--duration", "1",
                     "--out", str(tmp_path / "x.parquet"), "--quiet")
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1].startswith("evtkit: error: could not")
        assert "Traceback" not in result.stderr

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--out", "x.parquet"], "one of the arguments --duration --count is required"),
            (["--duration", "1", "--count", "2", "--out", "x.parquet"], "not allowed with"),
            (["--duration", "-1", "--out", "x.parquet"], "must be greater than 0"),
            (["--count", "abc", "--out", "x.parquet"], "is not a number"),
            (["--duration", "1"], "--out"),
            (["--duration", "1", "--jetstream", "0", "--out", "x.parquet"],
             "must be greater than 0"),
        ],
    )
    def test_bad_arguments(self, args, message):
        result = run("record", *args)
        assert result.returncode == 2
        assert message in result.stderr and "Traceback" not in result.stderr

    def test_bad_output_suffix_fails_before_connecting(self, tmp_path):
        result = run("record", "--server", "nats://127.0.0.1:1", "--duration", "1",
                     "--out", str(tmp_path / "x.txt"))
        assert result.returncode == 1 and "unknown trace format" in result.stderr

    @pytest.mark.parametrize(("out", "message"), [
        ("nope://alice:s3cret@b/run.parquet", "nope://b/run.parquet: unknown URL scheme 'nope'"),
        ("memory://b/run.jsonl?sig=s3cret", "JSON Lines traces are written to local files only"),
    ])
    def test_bad_urls_fail_before_connecting(self, out, message):
        result = run("record", "--server", "nats://127.0.0.1:1", "--duration", "1",
                     "--out", out)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and message in lines[0]
        assert "s3cret" not in result.stderr


class TestInfo:
    def test_prints_the_summary(self, tmp_path):
        from tests.test_store import sample_trace

        path = tmp_path / "t.parquet"
        sample_trace().save(path)
        result = run("info", str(path))
        assert result.returncode == 0
        assert "events       3 on 3 subjects" in result.stdout
        assert "drops        2" in result.stdout

    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
    def test_a_signal_ends_it_without_leaving_the_spill_behind(self, tmp_path, sig):
        """SIGTERM or SIGHUP while a trace is open on disk (as `info` and `report` open
        it): the process exits with 128 + the signal's number, and DuckDB's spill
        directory is gone (the default action left 17 GB behind at 100 M events)."""
        from tests.test_store import sample_trace

        path, spill = tmp_path / "t.parquet", tmp_path / "spill"
        sample_trace().save(path)
        spill.mkdir()
        script = ("import sys\nfrom evtkit import cli\n"
                  "args = cli.build_parser().parse_args(['info', sys.argv[1], '--engine', "
                  "'duckdb', '--quiet'])\n"
                  "with cli._analysed(args):\n"
                  "    print('open', flush=True)\n    sys.stdin.readline()\n")
        with subprocess.Popen([sys.executable, "-c", script, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "TMPDIR": str(spill)}) as proc:
            try:
                assert proc.stdout is not None and proc.stdout.readline() == "open\n"
                assert len(list(spill.glob("evtkit-duckdb-*"))) == 1
                proc.send_signal(sig)
                assert proc.wait(timeout=30) == 128 + sig
            finally:
                proc.kill()
        assert not list(spill.glob("evtkit-duckdb-*"))

    @pytest.mark.parametrize("content", [b"", b"garbage", b"PAR1 truncated"])
    def test_bad_file_is_one_line(self, tmp_path, content):
        path = tmp_path / "bad.parquet"
        path.write_bytes(content)
        result = run("info", str(path))
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"evtkit: error: {path}")

    def test_an_unreachable_store_is_one_line_without_credentials(self):
        """Reading (info) and writing (record, before it connects) alike; the store here
        refuses connections, as one whose network is down does."""
        url = ("s3://AKID:s3cret@bucket/run.parquet?region=us-east-1&scheme=http"
               "&endpoint_override=127.0.0.1:1")
        for args in (["info", url],
                     ["record", "--server", "nats://127.0.0.1:1", "--duration", "1", "--out",
                      url]):
            result = run(*args, timeout=120)
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 1 and len(lines) == 1, result.stderr
            assert lines[0].startswith("evtkit: error: s3://bucket/run.parquet: cannot")
            assert "s3cret" not in result.stderr + result.stdout
            assert "AKID" not in result.stderr + result.stdout

    def test_no_command(self):
        result = run()
        assert result.returncode == 2 and "required" in result.stderr


async def _stop_shards(procs: list[asyncio.subprocess.Process]
                       ) -> tuple[list[tuple[bytes, bytes]], list[int]]:
    """Stop recorder shards as Ctrl-C does; their outputs and how many messages each
    recorded (each must exit cleanly)."""
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    outputs = [await asyncio.wait_for(proc.communicate(), 120) for proc in procs]
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
    shares = [int(stdout.split(b":")[1].split(b" messages")[0].replace(b",", b""))
              for stdout, _ in outputs]
    return outputs, shares


class TestShards:
    """`evtkit record --shard`: recorders sharing one capture through a queue group."""

    async def test_three_shards_record_every_message_exactly_once(self, bus, tmp_path):
        out = tmp_path / "fleet.parquet"
        shards = ["s1", "s2", "s3"]
        procs = [await start_recorder("--server", bus.url, "--subject", "fleet.>",
                                      "--duration", "300", "--shard", name, "--out", str(out))
                 for name in shards]
        n = 300_000
        for i in range(n):  # raw nats-py: no evtkit headers, ids are synthesised
            await bus.nc.publish("fleet.orders", b"%d" % i)
        # After this round trip the server has routed every message to one of the shards;
        # each reads all that was routed to it before writing its last part (see SIGINT).
        await bus.flush()
        outputs, shares = await _stop_shards(procs)
        assert sum(shares) == n and all(share > 0 for share in shares)
        trace = ek.load(out)
        assert trace.metadata["shards"] == shards and trace.metadata["complete"] is True
        payloads = trace.observations.loc[trace.observations["kind"] == "tap", "payload"]
        assert len(payloads) == n and payloads.nunique() == n  # every message, once
        assert len(trace.events) == n
        info = run("info", str(out), timeout=120)
        assert info.returncode == 0 and "300,000 on 1 subjects" in info.stdout

    async def test_three_shards_write_one_trace_to_a_url(self, bus, tmp_path):
        """The same through a URL (pyarrow's filesystem for it: parts written aside, then
        moved); a token in the URL is shown nowhere."""
        url = f"file://{tmp_path}/fleet.parquet?token=s3cret"
        shards = ["s1", "s2", "s3"]
        procs = []
        for name in shards:
            proc = await asyncio.create_subprocess_exec(
                *EVTKIT, "record", "--quiet", "--server", bus.url, "--subject", "url.>",
                "--duration", "300", "--shard", name, "--out", url,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            assert proc.stderr is not None
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert f"into file://{tmp_path}/fleet.parquet as shard {name}".encode() in line
            procs.append(proc)
        n = 30_000
        for i in range(n):
            await bus.nc.publish("url.orders", b"%d" % i)
        await bus.flush()
        outputs, shares = await _stop_shards(procs)
        assert all(b"s3cret" not in stdout + stderr for stdout, stderr in outputs)
        assert sum(shares) == n and all(share > 0 for share in shares)
        trace = ek.load(url)
        assert trace.metadata["shards"] == shards and trace.metadata["complete"] is True
        assert trace.metadata["source_path"] == f"file://{tmp_path}/fleet.parquet"
        payloads = trace.observations.loc[trace.observations["kind"] == "tap", "payload"]
        assert len(payloads) == n and payloads.nunique() == n  # every message, once
        info = run("info", url, timeout=120)
        assert info.returncode == 0 and "30,000 on 1 subjects" in info.stdout
        assert "s3cret" not in info.stdout + info.stderr

    @pytest.mark.parametrize(("shard", "out", "message"), [
        ("../up", "x.parquet", "shard name '../up' must be"),
        ("a b", "x.parquet", "must be 1-64 letters"),
        ("ok", "x.jsonl", "shards write a Parquet directory"),
    ])
    def test_bad_shards_are_one_line(self, tmp_path, shard, out, message):
        result = run("record", "--duration", "1", "--shard", shard, "--out",
                     str(tmp_path / out), "--server", "nats://127.0.0.1:1")
        assert result.returncode == 1 and message in result.stderr
        assert "Traceback" not in result.stderr
