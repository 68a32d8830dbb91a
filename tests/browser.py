"""Open a page in real headless Chromium with the network blocked, and report what it did.

Chromium is the Debian package `chromium` (installed by .ci/run). Locally, tests that need it
skip with a reason when it is missing; under CI (EVTKIT_REQUIRE_CHROMIUM=1) they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=15000"]


def need_chromium() -> str:
    """The chromium binary; skip (locally) or fail (in CI) when it is not installed."""
    if CHROMIUM:
        return CHROMIUM
    message = "headless Chromium is not installed (apt-get install chromium)"
    if os.environ.get("EVTKIT_REQUIRE_CHROMIUM"):
        pytest.fail(message + "; CI must install it")
    pytest.skip(message)


@dataclass
class Visit:
    dom: str
    requests: list[str]  # URLs the page itself asked for (not file:// or data:)

    @property
    def plots_drawn(self) -> int:
        """Plotly figures that rendered to SVG (each draws one ``main-svg`` root)."""
        return self.dom.count('class="plot-container plotly"')

    @property
    def svg_roots(self) -> int:
        return self.dom.count('class="main-svg"')


def visit(path: Path) -> Visit:
    """Load ``path`` with the network blocked; the DOM after load, and the requests made."""
    binary = need_chromium()
    with tempfile.TemporaryDirectory() as profile, tempfile.TemporaryDirectory() as logs:
        netlog = Path(logs) / "net.json"
        done = subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={profile}", f"--log-net-log={netlog}",
             "--dump-dom", path.resolve().as_uri()],
            capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return Visit(done.stdout, _page_requests(netlog))


def _page_requests(netlog: Path) -> list[str]:
    """URLs requested on behalf of a file:// page (the browser's own traffic is left out)."""
    try:
        log = json.loads(netlog.read_text())
    except ValueError:  # the log is closed with a trailing comma on some versions
        log = json.loads(netlog.read_text().rstrip().rstrip(",") + "]}")
    kinds = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    urls = []
    for event in log.get("events", []):
        params = event.get("params", {})
        if kinds.get(event.get("type")) != "URL_REQUEST_START_JOB":
            continue
        if "file://" not in str(params.get("network_isolation_key", "")):
            continue
        url = params.get("url", "")
        if not url.startswith(("file:", "data:", "blob:")):
            urls.append(url)
    return urls
