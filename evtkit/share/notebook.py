"""Jupyter support: a live capture view, offline plots, and exporting a notebook to one HTML file.

::

    view = ek.live(bus)          # a table that updates in place while capturing
    ...
    view.stop()

    ek.export("notebooks/03-consumer-latency.ipynb", "reports/latency.html")

An exported page is self-contained and opens offline: plotly.js is inlined once (by
:class:`OfflineRenderer`, which the export switches on for the run), and the page template
loads nothing from a CDN — no require.js, MathJax, mermaid or widget manager. Tables come
from pandas' ``to_html``, which escapes cell text.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer
from plotly.offline import get_plotlyjs

if TYPE_CHECKING:
    from ..capture.bus import Bus

__all__ = ["LiveView", "OfflineRenderer", "export", "live", "use_offline_plots"]

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "evtkit_offline"
RENDERER = "evtkit_offline"


class OfflineRenderer(MimetypeRenderer):
    """A plotly renderer for pages that must work offline.

    Each figure's bundle has the plotly mimetype (JupyterLab draws that) and an HTML
    version (exported pages use that): the first figure's HTML carries plotly.js inline,
    later ones only their ``<div>`` — so a page holds the library once.
    """

    # plotly copies renderer objects before use, so the "already sent" flag lives on the
    # class: one kernel, one page, one copy of the library.
    sent_library = False

    def to_mimebundle(self, fig_dict: dict[str, Any]) -> dict[str, Any]:
        """The output bundle for one figure (called by plotly's renderer machinery)."""
        plain = json.loads(pio.to_json(fig_dict, validate=False, remove_uids=False))
        body = pio.to_html(plain, include_plotlyjs=False, include_mathjax=False,
                           full_html=False, validate=False)
        if not OfflineRenderer.sent_library:
            body = f'<script type="text/javascript">{get_plotlyjs()}</script>\n' + body
            OfflineRenderer.sent_library = True
        return {"application/vnd.plotly.v1+json": plain, "text/html": body}



def use_offline_plots() -> None:
    """Make :class:`OfflineRenderer` plotly's default renderer in this kernel."""
    OfflineRenderer.sent_library = False
    pio.renderers[RENDERER] = OfflineRenderer()
    pio.renderers.default = RENDERER


class LiveView:
    """A capture summary displayed once and updated in place: messages and rates per
    subject, deliveries, pending and errors per consumer, and drops. See :func:`live`."""

    def __init__(self, bus: Bus, interval: float = 0.5, top: int = 12) -> None:
        from IPython.display import HTML, display

        self.bus = bus
        self.interval = interval
        self.top = top
        self._html = HTML
        self._started = time.monotonic()
        self._last = (self._started, 0)
        self.handle = display(HTML(self.render()), display_id=True)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def render(self) -> str:
        """The current summary as an HTML table (all text escaped)."""
        stats = self.bus.recorder.stats()
        now = time.monotonic()
        then, count = self._last
        rate = (stats.messages - count) / max(now - then, 1e-9)
        self._last = (now, stats.messages)
        subjects = "".join(
            f"<tr><td>{html.escape(s)}</td><td style='text-align:right'>{n:,}</td></tr>"
            for s, n in stats.by_subject.most_common(self.top))
        consumers = "".join(
            f"<tr><td>{html.escape(str(c))}</td><td style='text-align:right'>{n:,}</td></tr>"
            for c, n in stats.by_consumer.most_common(self.top))
        return (
            f"<div class='evtkit-live'><b>evtkit live</b> · {stats.messages:,} messages · "
            f"{rate:,.0f} msg/s · {stats.drops:,} drops · {stats.errors:,} handler errors · "
            f"{now - self._started:.1f} s"
            "<table style='display:inline-table;margin-right:2em;vertical-align:top'>"
            f"<tr><th>subject</th><th>messages</th></tr>{subjects}</table>"
            "<table style='display:inline-table;vertical-align:top'>"
            f"<tr><th>consumer</th><th>deliveries</th></tr>{consumers}</table></div>")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.refresh()

    def refresh(self) -> None:
        """Update the display now."""
        self.handle.update(self._html(self.render()))

    def stop(self) -> None:
        """Stop updating; the display keeps its last state (refreshed once more)."""
        self._task.cancel()
        self.refresh()

    async def __aenter__(self) -> LiveView:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()


def live(bus: Bus, interval: float = 0.5) -> LiveView:
    """Show a capture summary for ``bus`` that updates in place every ``interval`` seconds
    (one display, not a flood of output). Call ``.stop()``, or use ``async with``."""
    return LiveView(bus, interval)


_SETUP = "import evtkit.share.notebook as _evtkit_notebook\n_evtkit_notebook.use_offline_plots()"


def export(notebook: str | os.PathLike[str], out: str | os.PathLike[str], *,
           timeout: float = 600, progress: bool = True) -> Path:
    """Execute ``notebook`` and write it as one self-contained HTML file at ``out``.

    The notebook runs in its own directory with a fresh kernel; a hidden first cell turns
    on :class:`OfflineRenderer` and is removed again before the page is written.

    Raises:
        FileNotFoundError: no such notebook.
        RuntimeError: a cell failed (the message names the cell and the error).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter
    from tqdm import tqdm

    source = Path(notebook)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such notebook")
    nb = nbformat.read(source, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(_SETUP))
    bar = tqdm(total=len(nb.cells), unit="cell", desc=f"running {source.name}",
               disable=not progress, mininterval=0.5)

    class Client(NotebookClient):  # counts cells for the progress bar
        async def async_execute_cell(self, cell: Any, cell_index: int, *args: Any,
                                     **kwargs: Any) -> Any:
            result = await super().async_execute_cell(cell, cell_index, *args, **kwargs)
            bar.update(1)
            return result

    client = Client(nb, timeout=timeout, kernel_name="python3",
                    resources={"metadata": {"path": str(source.parent.resolve())}})
    try:
        client.execute()
    except CellExecutionError as exc:
        raise RuntimeError(f"{source}: a cell failed:\n{exc}") from None
    finally:
        bar.close()
    nb.cells.pop(0)
    exporter = HTMLExporter(template_name=TEMPLATE, extra_template_basedirs=[str(TEMPLATES)])
    body, _ = exporter.from_notebook_node(nb)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(body, encoding="utf-8")
    return target
