"""The demo shop's own AsyncAPI document: a healthy run conforms to it, and the ``drift``
fault makes orders break it in exactly the three ways it declares (a renamed field, a
wrong type, an undeclared subject)."""

from __future__ import annotations

import asyncio

import pytest

import evtkit as ek
from evtkit.demo import DRIFT, parse_fault


def run(url: str, faults: list[str]) -> ek.Trace:
    return asyncio.run(ek.demo.run_shop(url=url, duration=2.5, rate=30, seed=4,
                                        progress=False, faults=faults))


@pytest.fixture(scope="module")
def spec() -> ek.asyncapi.Spec:
    return ek.asyncapi.load(ek.demo.SPEC)


def test_healthy_shop_conforms(nats_server, spec):
    result = run(nats_server.url, []).conformance(spec)
    assert result.ok
    assert result.violations.empty and result.events["valid"].notna().all()
    # Only what a short run without JetStream does not cover: ledger, maybe rare outcomes.
    assert set(result.summary()["kind"]) <= {"unused_operation", "unused_channel"}


def test_drift_breaks_exactly_the_three_ways(nats_server, spec):
    trace = run(nats_server.url, ["drift:orders@0.5+1"])
    result = trace.conformance(spec)
    assert not result.ok
    found = result.summary()
    failing = found[found["kind"].isin(["violations", "undeclared_subject",
                                        "undeclared_producer", "undeclared_consumer"])]
    assert sorted(failing["kind"]) == ["undeclared_subject", "violations"]
    assert failing.set_index("kind").loc["undeclared_subject", "subject"] == DRIFT["undeclared"]
    assert failing.set_index("kind").loc["violations", "channel"] == "orderPlaced"
    bad = result.violations
    subject, old, new = DRIFT["renamed"]
    assert set(bad["subject"]) == {subject}
    details = set(bad["detail"])
    assert f"'{old}' is a required property" in details                      # renamed
    assert any(f"'{new}' was unexpected" in d for d in details)
    typed = bad[bad["path"] == f"/{DRIFT['retyped'][1]}"]                     # wrong type
    assert len(typed) and typed["detail"].str.endswith("is not of type 'number'").all()
    assert set(bad["path"]) == {"", "/total"}  # nothing else broke
    # Every drifted order: one invalid orders.placed and one on the undeclared subject,
    # all inside the fault's window as the metadata records it.
    invalid = result.events[result.events["valid"].eq(False).fillna(False)]
    created = trace.events[trace.events["subject"] == DRIFT["undeclared"]]
    assert len(invalid) == len(created) > 0
    window = trace.metadata["drift"]
    ns = created["published_at"].astype("int64")
    assert ns.min() >= window["first"] - 10**9 and ns.max() <= window["last"] + 10**9


def test_drift_applies_to_orders_only():
    assert parse_fault("drift:orders@1+2").kind == "drift"
    with pytest.raises(ValueError, match="drift applies to orders"):
        parse_fault("drift:billing@1+2")
