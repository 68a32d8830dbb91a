"""The README's code runs as printed: its python blocks are taken from README.md verbatim
and executed the way a notebook runs a cell (top-level ``await`` allowed)."""

from __future__ import annotations

import ast
import re
from typing import Any

import evtkit as ek
from tests.paths import ROOT

README = ROOT / "README.md"


def block(section: str) -> str:
    """The first python code block under the README heading ``## <section>``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start:] if end < 0 else text[start:end]
    found = re.search(r"^```python\n(.*?)^```$", body, re.MULTILINE | re.DOTALL)
    assert found, f"no python block under '## {section}'"
    return found.group(1)


async def run_cell(source: str, namespace: dict[str, Any], name: str) -> None:
    """Run ``source`` as one notebook cell would: in ``namespace``, top-level await allowed."""
    code = compile(source, f"README.md ({name})", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)  # a coroutine when the code awaits at top level
    if result is not None:
        await result


async def test_the_tour_runs_verbatim(url, tmp_path, monkeypatch):
    monkeypatch.setenv("NATS_URL", url)  # the tour's `ek.connect()` reads it
    monkeypatch.chdir(tmp_path)  # where it saves run.parquet
    namespace: dict[str, Any] = {}
    try:
        await run_cell(block("A tour, in notebook cells"), namespace, "tour")
    finally:
        if isinstance(namespace.get("bus"), ek.Bus):
            await namespace["bus"].close()
    trace = namespace["trace"]
    events = trace.events.set_index("event_id")
    placed = events[events["subject"] == "orders.placed"]
    assert len(placed) == 3 and set(placed["source"]) == {"shop"}
    dv = trace.deliveries
    inventory = dv[dv["consumer"] == "inventory"]
    assert len(inventory) == 3 and (inventory["outcome"] == "ok").all()
    assert set(inventory["event_id"]) == set(placed.index)
    reserved = events[events["subject"] == "inventory.reserved"]
    assert len(reserved) == 3
    assert set(reserved["causation_id"]) == set(placed.index)
    assert (reserved["emitted_by"] == "inventory").all()
    assert len(events) == 6  # the tap saw the same six events, not new ones
    again = ek.load(tmp_path / "run.parquet")
    assert len(again.events) == len(trace.events)
    assert len(again.deliveries) == len(trace.deliveries)


async def test_answering_the_questions_runs_verbatim_on_the_sample_traces():
    """The block names `trace`, `baseline` and `incident` from earlier cells: here the two
    sample traces, so it needs no server."""
    baseline = ek.datasets.load("shop-baseline")
    incident = ek.datasets.load("shop-incident")
    namespace: dict[str, Any] = {"ek": ek, "trace": incident, "baseline": baseline,
                                 "incident": incident}
    await run_cell(block("Answering the questions"), namespace, "answering the questions")
    assert namespace["flow"] in set(incident.events["correlation_id"])
    assert isinstance(namespace["diff"], ek.Comparison)



async def test_the_engine_block_runs_verbatim_and_agrees_with_loading():
    namespace: dict[str, Any] = {"ek": ek}
    await run_cell(block("Traces larger than memory: `ek.open`"), namespace, "ek.open")
    incident = ek.datasets.load("shop-incident")
    assert namespace["findings"].equals(incident.diagnose())
    assert namespace["flow"] == incident.chains()["correlation_id"].iloc[0]
    counts = namespace["per_consumer"].set_index("consumer")["n"]
    assert counts.to_dict() == incident.deliveries["consumer"].value_counts().to_dict()


def test_the_quoted_lag_reason_is_what_the_sample_trace_says():
    """The README quotes a reason from shop-incident; it must be the one lag() gives."""
    text = " ".join(README.read_text(encoding="utf-8").split())
    quoted = re.search(r'e\.g\. on `shop-incident` \*"(.*?)"\*', text)
    assert quoted, "the README no longer quotes a lag reason"
    reasons = ek.datasets.load("shop-incident").lag()["reason"]
    assert quoted.group(1) in set(reasons)


async def test_the_event_definitions_block_runs_verbatim(url, monkeypatch, capsys):
    """The shop's recorded incident conforms to the shop's document, the guard refuses the
    README's order (and says why), and the inferred document reads back."""
    monkeypatch.setenv("NATS_URL", url)  # the block's `ek.connect()` reads it
    namespace: dict[str, Any] = {"ek": ek}
    try:
        await run_cell(block("Event definitions: declared vs observed"), namespace, "spec")
    finally:
        if isinstance(namespace.get("bus"), ek.Bus):
            await namespace["bus"].close()
    result = namespace["result"]
    assert result.ok and len(result.events) == len(namespace["trace"].events)
    assert result.events["valid"].fillna(True).all()
    said = capsys.readouterr().out
    assert "'orders.placed' breaks message 'OrderPlaced'" in said
    assert "'customer' is a required property" in said and "nothing was sent" in said
    assert ek.asyncapi.load(__import__("yaml").safe_load(namespace["text"])).channels
