"""The embedded server dies with its parent, however the parent dies, and its directory
(with the system account's password) does not outlive it. Real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import evtkit as ek
from evtkit.capture import lifeline
from tests.paths import ROOT

PARENT = """
import sys, time, evtkit as ek
server = ek.EmbeddedServer().start_sync()
print(server.pid, server.dir, flush=True)
time.sleep(600)
"""


def _gone(pid: int, within: float = 20.0) -> bool:
    """Whether ``pid`` exits within ``within`` seconds (polled, bounded)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _start_parent(tmp_path: Path) -> tuple[subprocess.Popen[str], int, Path]:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    assert proc.stdout is not None
    pid, directory = proc.stdout.readline().split()
    return proc, int(pid), Path(directory)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_sigkill_of_the_parent_stops_the_server_and_the_next_start_removes_its_files(
        tmp_path, monkeypatch):
    proc, server_pid, directory = _start_parent(tmp_path)
    with proc:
        assert (directory / "server.conf").exists()
        assert json.loads((directory / "owner").read_text())["server"] == server_pid
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert _gone(server_pid), "nats-server outlived its SIGKILLed parent"
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert lifeline.sweep(tmp_path) == [directory]
    assert not directory.exists()


def test_a_live_parents_directory_is_left_alone():
    with ek.EmbeddedServer() as server:
        assert server.dir is not None
        assert server.dir not in lifeline.sweep(server.dir.parent)
        assert (server.dir / "server.conf").exists() and server.running


def test_sweep_stops_a_server_left_running_by_a_dead_parent(tmp_path):
    """Where the kernel signal is missing: the sweep stops the orphan, and only because its
    command line names that directory's configuration."""
    directory = tmp_path / f"{lifeline.DIR_PREFIX}orphan"
    directory.mkdir()
    (directory / "server.conf").write_text("port: -1\nhost: 127.0.0.1\n")
    orphan = subprocess.Popen([ek.find_nats_server(), "-c", str(directory / "server.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    try:
        (directory / "owner").write_text(json.dumps({"parent": dead.pid,
                                                     "server": orphan.pid}))
        assert lifeline.sweep(tmp_path) == [directory]
        assert orphan.wait(20) is not None and not directory.exists()
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait(10)


def test_sigterm_and_sighup_of_evtkit_server_clean_up(tmp_path):
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with subprocess.Popen([sys.executable, "-m", "evtkit", "server"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "TMPDIR": str(tmp_path)}, cwd=ROOT) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            assert proc.stdout.readline().startswith("nats://")
            server_pid = int(proc.stderr.readline().split()[2].rstrip(";"))
            proc.send_signal(sig)
            assert proc.wait(20) == 0, sig
        assert _gone(server_pid)
        assert not list(tmp_path.glob(f"{lifeline.DIR_PREFIX}*")), sig
