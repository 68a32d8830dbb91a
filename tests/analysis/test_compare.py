"""Baseline vs incident: counts, timing deltas and structural differences."""

from __future__ import annotations

import pytest

import evtkit as ek

US = 1e-6


@pytest.fixture(scope="module")
def runs() -> tuple[ek.Trace, ek.Trace]:
    base = ek.testing.make_trace(1500, rate=100, seed=1)
    incident = ek.testing.make_trace(1500, rate=100, seed=2, slow="search",
                                     failing={"fraud": 0.3}, orphans=2)
    return base, incident


def test_consumers_in_both_runs_with_deltas(runs):
    base, incident = runs
    diff = ek.compare(base, incident)
    c = diff.consumers.set_index("consumer")
    tb = base.metadata["truth"]["consumers"]
    ti = incident.metadata["truth"]["consumers"]
    for name in tb:
        assert c.loc[name, "deliveries_base"] == tb[name]["deliveries"]
        expected = ti[name]["queue_p95_s"] - tb[name]["queue_p95_s"]
        assert abs(c.loc[name, "queue_p95_s_delta"] - expected) < US
    assert c.loc["search", "status_other"] == "WARN" and c.loc["search", "status_base"] == "OK"
    assert c.loc["fraud", "errors_delta"] == ti["fraud"]["errors"]


def test_edges_present_in_only_one_run(runs):
    diff = ek.compare(*runs)
    only = diff.edges[diff.edges["only_in"] != ""]
    assert set(zip(only["source"], only["target"], only["only_in"], strict=True)) == {
        ("legacy", "orphans.seen", "other")}
    both = diff.edges[diff.edges["only_in"] == ""]
    assert (both["count_base"].notna() & both["count_other"].notna()).all()


def test_changes_in_words_worst_first(runs):
    diff = ek.compare(*runs)
    changes = diff.changes()
    # The other run's findings against the base lead, then the numbers that moved.
    found = diff.findings
    first = found[found["root_cause"]].iloc[0]
    assert changes[0] == f"{first['finding_id']} {first['severity']}: {first['evidence']}"
    assert {"fraud", "search"} <= set(found.loc[found["severity"] == "critical", "consumer"])
    assert "fraud: status OK → ERR" in changes and "search: status OK → WARN" in changes
    assert any("search: p95 queue time" in c for c in changes)
    assert not any("e+0" in c for c in changes)
    assert any("only in the other run" in c for c in changes)
    assert "What changed" in diff._repr_html_()


def test_identical_runs_have_no_changes():
    base = ek.testing.make_trace(600, seed=4)
    diff = ek.compare(base, base)
    assert diff.changes() == [] and (diff.edges["only_in"] == "").all()
    assert (diff.consumers["queue_p95_s_delta"] == 0).all()
