"""The connection: how it opens (one clear error), what its callbacks record, how it closes,
and the telemetry setting read from the environment."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.errors import SlowConsumerError

from evtkit import ConnectError, env
from evtkit.capture.connection import (
    ConnectionEvents,
    close_client,
    open_client,
    telemetry_interval,
)
from evtkit.capture.recorder import Recorder
from evtkit.capture.server import free_port


class Owner:
    consumer = "billing"


def _events(owner=None) -> ConnectionEvents:
    return ConnectionEvents(Recorder(), "svc", lambda sid: owner if sid == 7 else None)


class TestTelemetryInterval:
    def test_an_explicit_setting_wins_and_zero_is_off(self, monkeypatch):
        monkeypatch.setenv(env.EVTKIT_TELEMETRY, "0.5")
        assert telemetry_interval(2.0) == 2.0
        assert telemetry_interval(0) is None
        assert telemetry_interval(None) == 0.5

    def test_unset_means_off(self, monkeypatch):
        monkeypatch.delenv(env.EVTKIT_TELEMETRY, raising=False)
        assert telemetry_interval(None) is None

    @pytest.mark.parametrize("text", ["abc", "-1", "0", "nan"])
    def test_a_bad_environment_value_is_refused(self, monkeypatch, text):
        monkeypatch.setenv(env.EVTKIT_TELEMETRY, text)
        with pytest.raises(ValueError, match=env.EVTKIT_TELEMETRY):
            telemetry_interval(None)

    def test_a_negative_setting_is_refused(self):
        with pytest.raises(ValueError, match="seconds > 0"):
            telemetry_interval(-1)


class TestConnectionEvents:
    async def test_slow_consumer_becomes_a_drop_of_the_owning_consumer(self):
        events = _events(Owner())
        await events.error(SlowConsumerError(subject="orders.x", reply="", sid=7, sub=None))
        await events.error(SlowConsumerError(subject="taps.x", reply="", sid=8, sub=None))
        obs = events.recorder.trace().observations
        drops = obs[obs["kind"] == "drop"]
        assert [c if isinstance(c, str) else "-" for c in drops["consumer"]] == ["billing", "-"]
        assert list(drops["subject"]) == ["orders.x", "taps.x"]
        assert events.recorder.drops == 2

    async def test_other_errors_are_rows_without_credentials(self):
        events = _events()
        await events.error(OSError("refused by nats://bob:hunter2@host:4222"))
        assert events.last_error() == "OSError: refused by nats://host:4222"

    async def test_disconnect_and_reconnect_rows_make_a_gap(self):
        events = _events()
        await events.disconnected()
        await events.reconnected()
        gaps = events.recorder.trace().gaps
        assert len(gaps) == 1 and gaps["observer"].iloc[0] == "svc"
        assert gaps["gap_s"].iloc[0] >= 0

    async def test_callers_callbacks_still_run_after_ours(self):
        events = _events()
        seen = []

        async def theirs(exc):
            seen.append(str(exc))

        options = {"error_cb": theirs, "user": "u"}
        callbacks = events.callbacks(options)
        assert options == {"user": "u"}  # theirs was taken out, to run inside ours
        await callbacks["error_cb"](ValueError("boom"))
        assert seen == ["boom"] and events.last_error() == "ValueError: boom"


class TestOpenAndClose:
    async def test_nobody_listening_is_one_connect_error_without_credentials(self):
        port = free_port()
        with pytest.raises(ConnectError) as caught:
            await open_client([f"nats://bob:hunter2@127.0.0.1:{port}"], name="x", timeout=2,
                              events=_events(),
                              options={"allow_reconnect": False, "max_reconnect_attempts": 0})
        assert "hunter2" not in str(caught.value) and caught.value.__cause__ is None
        assert caught.value.url == f"nats://127.0.0.1:{port}"

    async def test_open_then_close_twice(self, url):
        nc = await open_client([url], name="conn-test", timeout=5, events=_events(), options={})
        assert nc.is_connected
        await close_client(nc, timeout=5)
        assert nc.is_closed
        await close_client(nc, timeout=5)  # closing a closed client is fine
        assert isinstance(nc, nats.aio.client.Client)


async def test_a_reset_during_the_handshake_hints_at_credentials():
    """A peer that resets the connection at once (as a server refusing a login sometimes
    looks): the error says what that may mean."""
    import socket
    import struct

    async def reset(reader, writer):
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ConnectError) as caught:
            await open_client([f"nats://127.0.0.1:{port}"], name="x", timeout=2,
                              events=_events(),
                              options={"allow_reconnect": False, "max_reconnect_attempts": 0})
    finally:
        server.close()
        await server.wait_closed()
    text = str(caught.value)
    assert "reset" in text.lower() and "check the credentials" in text
