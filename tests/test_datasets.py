"""The sample traces in data/: loadable by name, and as data/README.md describes them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import evtkit as ek

README = Path(__file__).resolve().parent.parent / "data" / "README.md"


def documented() -> dict[str, dict[str, str]]:
    """The headline table of data/README.md, by trace name."""
    lines = [line for line in README.read_text().splitlines() if line.startswith("| shop-")]
    header = next(line for line in README.read_text().splitlines()
                  if line.startswith("| trace |"))
    names = [c.strip() for c in header.strip("|").split("|")]
    rows = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(names, cells, strict=True))
    return rows


@pytest.mark.parametrize("name", ["shop-baseline", "shop-incident"])
def test_headline_numbers_match_the_files(name):
    expected = documented()[name]
    trace = ek.datasets.load(name)
    assert ek.datasets.path(name).stat().st_size < 5 * 1024 * 1024
    assert len(trace.events) == int(expected["events"])
    assert (trace.events["subject"] == "orders.placed").sum() == int(expected["orders.placed"])
    assert len(trace.deliveries) == int(expected["deliveries"])
    assert trace.deliveries["consumer"].nunique() == int(expected["consumers"])
    assert trace.errors == int(expected["handler errors"])
    billing = trace.deliveries[trace.deliveries["consumer"] == "billing"]
    assert ", ".join(sorted(billing["observer"].unique())) == expected["billing workers"]
    assert (billing["queue"] == "billing").all()
    lag = trace.lag()
    lagging = lag[lag["status"] != "OK"].sort_values("consumer")
    found = ", ".join(f"{r.consumer} {r.status}" for r in lagging.itertuples()) or "none"
    assert found == expected["lagging consumers"]
    # Every service of the shop is in the trace, on its own connection.
    observers = set(trace.observations["observer"].dropna())
    assert {"orders", "inventory", "billing-1", "billing-2", "shipping", "notifications",
            "analytics"} <= observers


def test_incident_numbers_in_the_prose():
    text = README.read_text()
    incident, baseline = ek.datasets.load("shop-incident"), ek.datasets.load("shop-baseline")
    for consumer in ("billing", "shipping"):
        before = baseline.lag().set_index("consumer").loc[consumer, "queue_p95_s"]
        after = incident.lag().set_index("consumer").loc[consumer, "queue_p95_s"]
        assert f"{before * 1e3:.2g} ms to {after:.3g} s" in text.replace("\n", " ") or \
            f"{before * 1e3:.1f} ms to {after:.3g} s" in text.replace("\n", " ")
    backlog = incident.lag().set_index("consumer")["backlog_max"]
    assert f"up to {backlog['billing']}" in text
    assert re.search(rf"\b{backlog['shipping']} messages waiting", text)


def test_unknown_and_missing(monkeypatch, tmp_path):
    with pytest.raises(KeyError, match="shop-baseline"):
        ek.datasets.load("nope")
    monkeypatch.setenv("EVTKIT_DATA", str(tmp_path))
    (tmp_path / "shop-baseline.parquet").write_bytes(b"garbage")
    with pytest.raises(ek.TraceFormatError, match="shop-baseline.parquet"):
        ek.datasets.load("shop-baseline")
    assert ek.datasets.names() == ["shop-baseline", "shop-incident"]
