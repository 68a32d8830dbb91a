"""Sharing: `make demo` (shop trace, report, every notebook exported), offline HTML checked
in real headless Chromium, escaped payload text, and clear failures."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

import evtkit as ek
from evtkit.observation import build_observations
from tests.browser import need_chromium, visit
from tests.paths import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXTERNAL = re.compile(r"<(script|link|img|iframe)[^>]+(src|href)\s*=\s*[\"']?(https?:)?//",
                      re.IGNORECASE)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """`make demo` into a temporary reports directory (a short run)."""
    reports = tmp_path_factory.mktemp("reports")
    env = {**os.environ, "REPORTS": str(reports), "DEMO_SECONDS": "5"}
    env.pop("NATS_URL", None)
    done = subprocess.run(["make", "--no-print-directory", "demo"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (reports / "stdout.txt").write_text(done.stdout)
    return reports


def figures_in(page: str) -> int:
    return page.count('class="plotly-graph-div"')


class TestMakeDemo:
    def test_prints_paths_that_exist(self, demo):
        out = (demo / "stdout.txt").read_text()
        paths = re.findall(r"^(?:trace|report|notebook):\s+(\S+)$", out, re.MULTILINE)
        assert len(paths) == 2 + len(NOTEBOOKS) == 10
        for path in paths:
            assert Path(path).exists() and Path(path).stat().st_size > 0, path
        trace = ek.load(demo / "shop-demo.parquet")
        assert {"inventory", "billing", "shipping", "notifications"} <= set(
            trace.deliveries["consumer"])

    def test_every_notebook_ran_cleanly(self, demo):
        # A failing cell fails the export (and make demo); warnings would show as stderr.
        for notebook in NOTEBOOKS:
            page = (demo / f"{notebook.stem}.html").read_text()
            assert 'data-mime-type="application/vnd.jupyter.stderr"' not in page, notebook.name
            assert figures_in(page) >= 1 or notebook.stem.startswith("01"), notebook.name
            # plotly.js is inlined exactly once per page.
            assert page.count("plotly.js v") == 1, notebook.name


    def test_live_view_is_one_display_updated_in_place(self, demo):
        page = (demo / "01-quickstart.html").read_text()
        assert page.count("evtkit live</b>") == 1  # one display, not one per update
        shown = re.search(r"evtkit live</b> · ([\d,]+) events", page)
        # Its last update: 40 sign-ups and their 40 welcome emails, each counted once.
        assert shown and int(shown.group(1).replace(",", "")) == 80


class TestOffline:
    def test_no_script_src_and_no_cdn_loader(self, demo):
        pages = list(demo.glob("*.html"))
        assert len(pages) == 1 + len(NOTEBOOKS)
        for page in pages:
            text = page.read_text()
            assert not EXTERNAL.search(text), (page.name, EXTERNAL.search(text))
            assert not re.search(r"<script[^>]*\ssrc\s*=", text, re.IGNORECASE), page.name
            # The loaders nbconvert's lab template adds (plotly.js itself mentions CDNs for
            # features we do not use, so only these tags are looked for here; the browser
            # check below proves no request leaves the page).
            for loader in ("require.min.js", "import mermaid", "mathjax/2.7.7/latest.js"):
                assert loader not in text, (page.name, loader)

    def test_report_renders_every_plot_in_chromium_with_no_requests(self, demo):
        page = demo / "shop-demo.html"
        result = visit(page)
        # Lag over time, latency, fan-out, dependencies, a waterfall per distinct
        # bottleneck among the slowest flows (at most three), and the contract graph and
        # conformance over time (`make demo` reports with the shop's AsyncAPI document).
        trace = ek.load(demo / "shop-demo.parquet")
        figures = 4 + min(3, int(trace.slowest_flows()["representative"].sum())) + 2
        assert "Does the traffic match its definitions?" in page.read_text()
        assert figures_in(page.read_text()) == figures
        assert result.plots_drawn == figures and result.svg_roots >= figures
        assert result.requests == []

    @pytest.mark.parametrize("stem", [n.stem for n in NOTEBOOKS])
    def test_exported_notebook_renders_in_chromium(self, demo, stem):
        page = demo / f"{stem}.html"
        result = visit(page)
        assert result.plots_drawn == figures_in(page.read_text())
        assert result.requests == []

    def test_the_browser_check_sees_external_requests(self, tmp_path):
        """The check itself works: a page with CDN links is caught."""
        page = tmp_path / "bad.html"
        page.write_text('<script src="https://cdn.example.com/x.js"></script><p>x</p>')
        assert visit(page).requests == ["https://cdn.example.com/x.js"]


EVIL = "<img src=x onerror=\"document.body.setAttribute('data-pwned','yes')\">"
SCRIPT = "<script>document.body.setAttribute('data-pwned','yes')</script>"


def evil_trace() -> ek.Trace:
    t = time.time_ns()
    block = f"NATS/1.0\r\nce-id: e1\r\nce-source: {SCRIPT}\r\n\r\n".encode()
    rows = [
        ("publish", t, "shop", None, None, EVIL.encode(), None, SCRIPT.encode(), block, None),
        ("receive", t + 1000, "w", EVIL, None, EVIL.encode(), None, SCRIPT.encode(), block,
         None),
        ("handled", t + 9000, "w", EVIL, None, None, None, None, None,
         (1, t + 2000, "error", f"ValueError: {EVIL}")),
    ]
    return ek.Trace(build_observations(rows))


class TestEscaping:
    def test_the_check_would_see_live_markup(self, tmp_path):
        """Unescaped, the payload does run: so its absence below means escaping worked."""
        page = tmp_path / "live.html"
        page.write_text(f"<html><body><p>{EVIL}</p></body></html>")
        assert 'data-pwned="yes"' in visit(page).dom

    def test_report_shows_markup_as_text(self, tmp_path):
        page = ek.report(evil_trace(), tmp_path / "evil.html", progress=False)
        text = page.read_text()
        assert EVIL not in text and SCRIPT not in text
        assert "&lt;img src=x onerror=" in text
        need_chromium()
        result = visit(page)
        assert 'data-pwned="yes"' not in result.dom  # the markup never ran
        assert "&lt;img src=x onerror=" in result.dom  # it is there, as text

    def test_exported_notebook_shows_payload_as_text(self, tmp_path):
        path = tmp_path / "evil.parquet"
        evil_trace().save(path)
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
            f"import evtkit as ek\ntrace = ek.load({str(path)!r})\n"
            "display(trace.events[['event_id', 'subject', 'source', 'payload']])\n"
            "display(trace.deliveries[['consumer', 'error']])\ntrace")],
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}})
        source = tmp_path / "evil.ipynb"
        nbformat.write(nb, source)
        page = ek.export(source, tmp_path / "evil.html", progress=False)
        text = page.read_text()
        assert SCRIPT not in text and EVIL not in text
        assert "onerror=" in text  # present, but only as escaped text
        need_chromium()
        assert 'data-pwned="yes"' not in visit(page).dom


class TestFailures:
    @pytest.mark.parametrize("content", [b"", b"not parquet", b"PAR1\x00\x01"])
    def test_report_on_a_corrupt_file(self, tmp_path, content):
        bad = tmp_path / "bad.parquet"
        bad.write_bytes(content)
        done = subprocess.run([sys.executable, "-m", "evtkit", "report", str(bad), "--out",
                               str(tmp_path / "r.html")], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 1
        assert done.stderr.startswith(f"evtkit: error: {bad}")
        assert "Traceback" not in done.stderr and not (tmp_path / "r.html").exists()

    def test_export_of_a_failing_notebook(self, tmp_path):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1/0")],
                                      metadata={"kernelspec": {"name": "python3",
                                                               "display_name": "Python 3",
                                                               "language": "python"}})
        source = tmp_path / "fails.ipynb"
        nbformat.write(nb, source)
        done = subprocess.run([sys.executable, "-m", "evtkit", "export", str(source), "--out",
                               str(tmp_path / "f.html"), "--quiet"], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 1 and "a cell failed" in done.stderr
        assert "ZeroDivisionError" in done.stderr


def test_notebooks_are_stored_without_outputs():
    for notebook in NOTEBOOKS:
        cells = json.loads(notebook.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)


def test_large_report_is_downsampled_and_small(tmp_path):
    trace = ek.testing.make_trace(300_000, payloads=False, seed=9)
    page = ek.report(trace, tmp_path / "big.html", sample=5_000, progress=False)
    text = page.read_text()
    assert "draws a random sample of 5,000 of the 900,000 deliveries" in text
    assert page.stat().st_size < 10 * 1024 * 1024
