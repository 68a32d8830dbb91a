"""Replay: exact bytes, exact counts, timing, subject remap and filter, bad input."""

from __future__ import annotations

import subprocess
import sys

import nats
import pytest

import evtkit as ek
from evtkit.observation import build_observations
from evtkit.replay import replay_block
from evtkit.subject import Remap, matches
from tests.waiting import flushed, until


class Box:
    """Messages a plain nats-py subscriber got."""

    def __init__(self) -> None:
        self.messages: list = []


async def collect(url: str, subject: str = ">"):
    nc = await nats.connect(url, name="check")
    box = Box()

    async def keep(msg) -> None:  # nats-py callbacks must be coroutine functions
        box.messages.append(msg)

    await nc.subscribe(subject, cb=keep, pending_msgs_limit=1_000_000, pending_bytes_limit=-1)
    await flushed(nc)  # the server has the subscription before anything is replayed
    return nc, box


async def drain(nc, box, expected: int) -> None:
    """Wait until ``expected`` messages arrived, then read whatever the server sent
    before now (an extra copy would show in the count)."""
    await until(lambda: len(box.messages) >= expected, what=f"{expected} replayed messages")
    await flushed(nc)


class TestReplay:
    async def test_fast_replay_sends_every_event_with_identical_bytes(self, bus):
        original = ek.datasets.load("shop-baseline")
        nc, box = await collect(bus.url)
        result = await ek.replay(original, bus, speed=0, progress=False)
        await drain(nc, box, result.sent)
        await nc.close()
        assert result.sent == len(original.events) == len(box.messages)
        best = original.observations[original.observations["kind"] == "publish"]
        by_id = best.set_index("event_id")
        for msg in box.messages:
            original_id = msg.headers["evtkit-replay-of"]
            source = by_id.loc[original_id]
            assert msg.data == source["payload"]
            assert msg.subject == source["subject"]
            sent = {k: v for k, v in msg.headers.items() if k != "evtkit-replay-of"}
            assert sent == ek.event.parse_block(source["header_block"]).headers

    async def test_capture_of_a_replay_joins_to_the_original(self, bus):
        original = ek.datasets.load("shop-incident")
        await bus.tap("orders.>")
        await ek.replay(original, bus, speed=0, subject_filter="orders.>", progress=False)
        await bus.settle()  # the tap has read every replayed event
        events = bus.trace().events
        replayed = events[events["replay_of"].notna()]
        wanted = original.events[original.events["subject"] == "orders.placed"]
        assert set(replayed["replay_of"]) == set(wanted["event_id"])

    async def test_timing_is_preserved_at_a_moderate_speed(self, bus):
        result = await ek.replay(ek.datasets.load("shop-baseline"), bus, speed=20, limit=150,
                                 progress=False)
        assert result.sent == 150
        # 150 events of a 20/s shop replayed 20x faster: gaps around 2.5 ms on average.
        assert result.gaps["original_s"].sum() > 0.1
        # The schedule is the original one, 20 times faster; how closely the sends keep
        # it depends on the machine's load, which bench/replay.py measures (not a test).
        published = ek.datasets.load("shop-baseline").events["published_at"].head(150)
        span = (published.iloc[-1] - published.iloc[0]).total_seconds()
        assert result.gaps["original_s"].sum() == pytest.approx(span / 20, rel=1e-6)

    async def test_subject_map_and_filter(self, bus):
        nc, box = await collect(bus.url, "test.>")
        result = await ek.replay(ek.datasets.load("shop-baseline"), bus, speed=0,
                                 subject_filter="payments.*",
                                 subject_map=["payments.>=test.payments.>"], progress=False)
        await drain(nc, box, result.sent)
        await nc.close()
        subjects = {m.subject for m in box.messages}
        assert subjects == {"test.payments.captured", "test.payments.failed"}
        assert len(box.messages) == result.sent and result.skipped > 0

    async def test_bad_arguments(self, bus):
        with pytest.raises(ValueError, match="speed"):
            await ek.replay(ek.datasets.load("shop-baseline"), bus, speed=-1)
        with pytest.raises(ValueError, match="OLD=NEW"):
            await ek.replay(ek.datasets.load("shop-baseline"), bus, subject_map=["nope"])
        with pytest.raises(ek.TraceFormatError):
            await ek.replay("/nonexistent.parquet", bus)


class TestSubjects:
    @pytest.mark.parametrize(("pattern", "subject", "ok"), [
        ("a.b", "a.b", True), ("a.*", "a.b", True), ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True), ("a.>", "a", False), (">", "x", True), ("*.b", "a.b", True),
        ("a.b", "a.c", False), ("a.*.c", "a.x.c", True),
    ])
    def test_matches(self, pattern, subject, ok):
        assert matches(pattern, subject) is ok

    def test_remap(self):
        remap = Remap(["a.b=x.y", "orders.>=test.orders.>"])
        assert remap.apply("a.b") == "x.y" and remap.apply("orders.eu.x") == "test.orders.eu.x"
        assert remap.apply("other") == "other"
        for bad in ["a.b", "a.>=b", "a..b=c", "a.*=b.*", "=x"]:
            with pytest.raises(ValueError):
                Remap([bad])

    def test_replay_block_adds_one_header(self):
        assert replay_block(None, "syn-1") == b"NATS/1.0\r\nevtkit-replay-of: syn-1\r\n\r\n"
        block = b"NATS/1.0\r\nce-id: e\r\n\r\n"
        assert replay_block(block, "e") == b"NATS/1.0\r\nce-id: e\r\nevtkit-replay-of: e\r\n\r\n"


class TestReplayCommand:
    def test_missing_and_corrupt_files(self, tmp_path, url):
        bad = tmp_path / "bad.parquet"
        bad.write_bytes(b"PAR1 not really")
        for path in (tmp_path / "missing.parquet", bad):
            result = subprocess.run([sys.executable, "-m", "evtkit", "replay", str(path),
                                     "--server", url], capture_output=True, text=True,
                                    timeout=60)
            assert result.returncode == 1
            assert result.stderr.startswith(f"evtkit: error: {path}")
            assert "Traceback" not in result.stderr

    def test_replays_and_reports_timing(self, url):
        path = ek.datasets.path("shop-baseline")
        result = subprocess.run([sys.executable, "-m", "evtkit", "replay", str(path),
                                 "--server", url, "--speed", "50", "--limit", "100",
                                 "--quiet"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "replayed 100 events" in result.stdout and "median |replayed gap" in result.stdout

    @pytest.mark.parametrize("args", [["--speed", "-2"], ["--subject-map", "x"],
                                      ["--limit", "0"]])
    def test_bad_arguments(self, args, url):
        path = ek.datasets.path("shop-baseline")
        result = subprocess.run([sys.executable, "-m", "evtkit", "replay", str(path),
                                 "--server", url, *args], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode in (1, 2) and "Traceback" not in result.stderr
        assert "error" in result.stderr


class TestSpeedAndLimits:
    @pytest.mark.parametrize("speed", [float("nan"), float("inf"), -1.0, 1e-320, 1e-7])
    def test_unusable_speeds_are_refused(self, speed):
        from evtkit.replay import check_speed

        with pytest.raises(ValueError, match="speed must be 0"):
            check_speed(speed)

    @pytest.mark.parametrize("speed", ["nan", "1e-320", "inf"])
    def test_the_cli_refuses_them_in_one_line(self, speed, tmp_path):
        import subprocess
        import sys

        trace = ek.testing.make_trace(5, seed=1)
        path = trace.save(tmp_path / "t.parquet")
        done = subprocess.run([sys.executable, "-m", "evtkit", "replay", path, "--speed", speed,
                               "--quiet"], capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "speed must be 0" in done.stderr
        assert "Traceback" not in done.stderr

    async def test_a_too_large_event_stops_the_replay_saying_how_far_it_got(self, bus):
        big = bus.nc.max_payload
        rows = [("publish", 1_000 + i, "p", None, None, b"big.x", None,
                 b"%d" % i + b"x" * (big if i == 3 else 10), None, None) for i in range(5)]
        trace = ek.Trace(build_observations(rows), {})
        with pytest.raises(ek.PayloadTooLargeError) as caught:
            await ek.replay(trace, bus, speed=0, progress=False)
        assert caught.value.__notes__[0].startswith("replay stopped after 3 of 5 events")
