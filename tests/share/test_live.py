"""The live view, on a real bus: events counted once with a tap on, deliveries, pending and
handler errors per consumer, and nothing printed under the display."""

from __future__ import annotations

import asyncio
import re

import nbformat
import pytest
from IPython.core.formatters import DisplayFormatter

import evtkit as ek
from tests.waiting import until


@pytest.fixture
async def view(bus):
    """A live view of the test bus that does not tick on its own (tests call render())."""
    live = ek.live(bus, interval=3600)
    yield live
    live.stop()


def shown(view: ek.LiveView) -> str:
    """The view's HTML with tags removed and cells separated by '|', for reading numbers."""
    return re.sub(r"(\s*\|)+", "|", re.sub(r"<[^>]+>", "|", view.render()))


async def test_events_are_counted_once_with_a_tap_on(bus, view):
    await bus.tap()
    for i in range(200):
        await bus.publish("orders.placed", {"order": i}, source="shop")
    await bus.settle()
    assert bus.recorder.stats().by_subject["orders.placed"] == 400  # publish + tap rows
    subjects, _ = view.frames()
    assert subjects.loc["orders.placed", "events"] == 200
    text = shown(view)
    assert "· 200 events ·" in text and "|orders.placed|200|" in text
    assert "400" not in text


async def test_a_failing_handler_shows_its_errors(bus, view):
    async def picky(event):
        if event.data["i"] % 3 == 0:
            raise ValueError("no multiples of three")

    await bus.subscribe("jobs", picky, consumer="picky")
    await bus.subscribe("jobs", lambda event: None, consumer="easy")
    for i in range(1200):
        await bus.publish("jobs", {"i": i})
    await bus.settle()
    _, consumers = view.frames()
    assert consumers.loc["picky"].to_dict() == {"deliveries": 1200, "pending": 0, "errors": 400}
    assert consumers.loc["easy"].to_dict() == {"deliveries": 1200, "pending": 0, "errors": 0}
    text = shown(view)
    assert "|picky|1,200|0|400|" in text and "|easy|1,200|0|0|" in text  # human units
    assert "· 400 handler errors ·" in text


async def test_a_busy_handler_shows_what_it_holds(bus, view):
    release = asyncio.Event()

    async def slow(event):
        await release.wait()  # busy until the test lets it go

    await bus.subscribe("slow", slow, consumer="sloth")
    assert view.frames()[1].loc["sloth"].to_dict() == {"deliveries": 0, "pending": 0,
                                                        "errors": 0}
    for i in range(5):
        await bus.publish("slow", {"i": i})
    # All five received: one in the handler, four queued behind it.
    await until(lambda: view.frames()[1].loc["sloth", "pending"] == 5, what="5 pending")
    assert "|sloth|5|5|0|" in shown(view)
    release.set()
    await bus.settle()
    assert view.frames()[1].loc["sloth", "pending"] == 0


def test_nothing_is_printed_for_the_view_as_a_cells_last_value(view):
    # IPython shows a cell's last value through this formatter: the view's
    # _ipython_display_ takes over and adds nothing (the kernel test below shows it whole).
    assert DisplayFormatter().format(view) == ({}, {})
    assert "object at 0x" not in repr(view)


async def test_in_a_kernel_the_cell_shows_one_live_display_and_no_repr(url):
    """The real thing: ``ek.live(bus)`` as the last line of a cell in a Jupyter kernel."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(f"import evtkit as ek\nbus = await ek.connect({url!r})"),
        nbformat.v4.new_code_cell("ek.live(bus)"),
        nbformat.v4.new_code_cell("await bus.close()"),
    ])
    await NotebookClient(nb, timeout=60, kernel_name="python3").async_execute()
    outputs = nb.cells[1].outputs
    assert [o.output_type for o in outputs] == ["display_data"]
    assert "evtkit live" in outputs[0].data["text/html"]
    assert "LiveView" not in str(outputs)


async def test_one_of_a_kind_is_singular(bus, view):
    async def fails(event):
        raise RuntimeError("always")

    await bus.subscribe("once", fails, consumer="c")
    await bus.publish("once", {})
    await bus.settle()
    assert "· 1 event · " in shown(view) and "· 1 handler error · " in shown(view)
    assert "· 0 drops · " in shown(view)
