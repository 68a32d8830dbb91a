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

import pandas as pd
import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer
from plotly.offline import get_plotlyjs

from .._units import duration

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
    """A capture summary displayed once and updated in place: events per subject;
    deliveries, pending messages and handler errors per consumer; the rate and drops.
    See :func:`live`.

    Events are counted once however many observations they have (a message this bus
    publishes while a tap is on is a ``publish`` and a ``tap`` row). A consumer's *pending*
    messages are those it has received and not finished: queued for its handler or in it.
    """

    def __init__(self, bus: Bus, interval: float = 0.5, top: int = 12) -> None:
        from IPython.core.interactiveshell import InteractiveShell
        from IPython.display import HTML, display

        self.bus = bus
        self.interval = interval
        self.top = top
        self._html = HTML
        bus.recorder.count_events()
        self._started = time.monotonic()
        self._last = (self._started, bus.recorder.stats().events)
        self._rate = 0.0
        # Outside IPython there is nothing to draw on: render() and frames() still work.
        self.handle = (display(HTML(self.render()), display_id=True)
                       if InteractiveShell.initialized() else None)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """What the view shows, as frames: ``(subjects, consumers)``.

        ``subjects``: ``events`` per subject, most first. ``consumers``: ``deliveries``,
        ``pending`` and ``errors`` per consumer, busiest first — every consumer with a
        delivery so far and every consumer subscribed on this bus.
        """
        stats = self.bus.recorder.stats()
        subjects = pd.DataFrame(stats.events_by_subject.most_common(),
                                columns=["subject", "events"]).set_index("subject")
        names = list(dict.fromkeys([*stats.by_consumer, *(
            name for feature in self.bus.features
            if isinstance(name := getattr(feature, "consumer", None), str))]))
        consumers = pd.DataFrame({
            "deliveries": [stats.by_consumer[c] for c in names],
            "pending": [stats.pending(c) for c in names],
            "errors": [stats.errors_by_consumer[c] for c in names],
        }, index=pd.Index(names, name="consumer"), dtype="int64")
        consumers = consumers.sort_values(["deliveries", "pending"], ascending=False,
                                          kind="stable")
        return subjects, consumers

    def render(self) -> str:
        """The current summary as HTML (all text escaped)."""
        subjects, consumers = self.frames()
        stats = self.bus.recorder.stats()  # the totals frames() just brought up to date
        now = time.monotonic()
        then, count = self._last
        if now - then >= 0.1:  # a rate over a shorter span is noise: keep the last one
            self._rate = (stats.events - count) / (now - then)
            self._last = (now, stats.events)
        cell = "<td style='text-align:right'>{}</td>".format
        subject_rows = "".join(
            f"<tr><td>{html.escape(str(s))}</td>{cell(_count(n))}</tr>"
            for s, n in subjects["events"].head(self.top).items())
        consumer_rows = "".join(
            f"<tr><td>{html.escape(str(c))}</td>{cell(_count(row.deliveries))}"
            f"{cell(_count(row.pending))}{cell(_count(row.errors))}</tr>"
            for c, row in consumers.head(self.top).iterrows())
        more = [f"{_count(len(frame) - self.top)} more {what} not shown"
                for frame, what in ((subjects, "subjects"), (consumers, "consumers"))
                if len(frame) > self.top]
        return (
            f"<div class='evtkit-live'><b>evtkit live</b> · {_count(stats.events, 'event')} · "
            f"{_rate(self._rate)} · {_count(stats.drops, 'drop')} · "
            f"{_count(stats.errors, 'handler error')} · {duration(now - self._started)}"
            "<br><table style='display:inline-table;margin-right:2em;vertical-align:top'>"
            f"<tr><th>subject</th><th>events</th></tr>{subject_rows}</table>"
            "<table style='display:inline-table;vertical-align:top'>"
            "<tr><th>consumer</th><th>deliveries</th><th>pending</th><th>errors</th></tr>"
            f"{consumer_rows}</table>"
            + "".join(f"<br><small>{m}</small>" for m in more) + "</div>")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.refresh()

    def refresh(self) -> None:
        """Update the display now."""
        if self.handle is not None:
            self.handle.update(self._html(self.render()))

    def stop(self) -> None:
        """Stop updating; the display keeps its last state (refreshed once more)."""
        self._task.cancel()
        self.refresh()

    def _ipython_display_(self) -> None:
        """Nothing: the view is on screen already, so ``ek.live(bus)`` as a cell's last
        line adds no second copy and no ``<LiveView object at …>`` line."""

    def __repr__(self) -> str:
        state = "stopped" if self._task.done() else f"updating every {self.interval:g} s"
        return f"<LiveView of {self.bus.name!r}, {state}>"

    async def __aenter__(self) -> LiveView:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()


def _count(n: int, noun: str = "") -> str:
    """``1,234``; with a noun, ``1 event`` and ``1,234 events``."""
    return f"{n:,} {noun}{'s' if n != 1 else ''}" if noun else f"{n:,}"


def _rate(per_s: float) -> str:
    """Events per second as people read them: ``0/s``, ``4.5/s``, ``1,234/s``."""
    return f"{per_s:,.1f}/s" if 0 < per_s < 10 else f"{per_s:,.0f}/s"


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
