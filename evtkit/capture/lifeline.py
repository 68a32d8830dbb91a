"""The embedded server's lifeline: it dies with the process that started it, and its
directory (configuration with the system account's password, JetStream store) goes too.

Stopping the server normally removes its directory. A parent killed outright (SIGKILL,
a crashed kernel) runs no cleanup, so two more measures cover it:

* On Linux the server is started with ``PR_SET_PDEATHSIG``: the kernel sends it SIGTERM the
  moment the thread that started it ends, however that happens.
* Each directory holds an ``owner`` file (the starting process's pid and the server's). The
  next start sweeps directories whose starter is gone: a server still running from one
  (on systems without the kernel signal) is stopped once its command line proves it is
  that directory's ``nats-server``, and the directory is removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["DIR_PREFIX", "claim", "die_with_parent", "sweep"]

DIR_PREFIX = "evtkit-nats-"
"""Name prefix of the embedded servers' temporary directories."""
OWNER_FILE = "owner"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` that makes the child get SIGTERM when the
    calling thread ends (Linux); None where the kernel offers no such signal."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:  # runs in the child between fork and exec: keep it minimal
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def claim(directory: Path, server_pid: int) -> None:
    """Record in ``directory`` who started its server (this process) and the server's pid."""
    (directory / OWNER_FILE).write_text(json.dumps({"parent": os.getpid(),
                                                    "server": server_pid}))


def sweep(root: Path | None = None) -> list[Path]:
    """Remove the directories of embedded servers whose starting process is gone (stopping
    such a server first if it still runs); return the directories removed. Never raises."""
    removed = []
    base = Path(root or tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for directory in base.glob(f"{DIR_PREFIX}*"):
            try:
                owner = json.loads((directory / OWNER_FILE).read_text())
                parent, server = int(owner["parent"]), int(owner["server"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not one of ours, or still being set up
            if _alive(parent):
                continue
            if _alive(server) and _runs_from(server, directory):
                with contextlib.suppress(OSError):
                    os.kill(server, signal.SIGTERM)
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _runs_from(pid: int, directory: Path) -> bool:
    """Whether process ``pid`` is the nats-server configured from ``directory`` (its
    command line names the directory's config), so a reused pid is never signalled."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(directory / "server.conf").encode() in cmdline.split(b"\0")
