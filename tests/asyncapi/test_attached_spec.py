"""Event definitions attached to a trace (``ek.load(path, spec=)``, ``trace.with_spec``):
``problems()`` and ``diagnose()`` include what the traffic does against them."""

from __future__ import annotations

import pandas as pd
import pytest

import evtkit as ek
from evtkit.analysis.problems import CONFORMANCE
from tests.asyncapi.traffic import GOOD, SHOP, conforming, pub, recv, trace


@pytest.fixture(scope="module")
def shop() -> ek.asyncapi.Spec:
    return ek.asyncapi.load(SHOP)


def drifting() -> ek.Trace:
    """Traffic with each kind of finding a spec brings: two OrderPlaced events that break
    their schema, two on an undeclared subject, one from an undeclared producer, one
    received by an undeclared consumer."""
    return trace(
        pub(1, "ok", "orders.1.placed"),
        recv(1.5, "ok", "orders.1.placed", "billing"),
        recv(1.6, "ok", "orders.1.placed", "audit"),
        pub(2, "bad-1", "orders.2.placed", {**GOOD, "amount": "x"}),
        pub(3, "bad-2", "orders.3.placed", {**GOOD, "currency": "JPY"}),
        pub(4, "stray-1", "orders.4.shipped"),
        pub(5, "stray-2", "orders.5.shipped"),
        pub(6, "legacy", "orders.6.placed", producer="legacy", source="legacy"),
    )


def conformance_rows(found: pd.DataFrame) -> pd.DataFrame:
    return found[found["problem"].isin(list(CONFORMANCE))].reset_index(drop=True)


class TestAttaching:
    def test_a_trace_has_no_spec_until_one_is_attached(self, shop):
        plain = drifting()
        assert plain.spec is None
        attached = plain.with_spec(shop)
        assert attached is not plain and attached.spec is shop and plain.spec is None
        assert attached.with_spec(None).spec is None

    def test_with_spec_reads_a_document_and_shares_the_frames(self):
        plain = drifting()
        events = plain.events
        attached = plain.with_spec(SHOP)
        assert isinstance(attached.spec, ek.asyncapi.Spec) and attached.spec.title == "Shop"
        assert attached.events is events and attached.observations is plain.observations
        assert attached.metadata == plain.metadata and attached.metadata is not plain.metadata

    def test_a_document_that_cannot_be_read_is_a_spec_error(self):
        with pytest.raises(ek.SpecError):
            drifting().with_spec("no-such-api.yaml")

    def test_load_attaches_the_spec(self, tmp_path):
        path = drifting().save(tmp_path / "run.parquet")
        loaded = ek.load(path, spec=SHOP)
        assert loaded.spec is not None and loaded.spec.title == "Shop"
        assert ek.load(path).spec is None
        assert "contract_violation" in set(loaded.problems()["problem"])

    def test_load_checks_the_spec_before_the_trace(self, tmp_path):
        with pytest.raises(ek.SpecError):
            ek.load(tmp_path / "missing.parquet", spec=tmp_path / "missing.yaml")


class TestProblems:
    def test_each_kind_with_its_count_example_and_words(self, shop):
        found = conformance_rows(drifting().with_spec(shop).problems())
        assert found[["problem", "count", "subject", "consumer", "observer",
                      "event_id"]].fillna("-").values.tolist() == [
            ["contract_violation", 2, "orders.*.placed", "-", "-", "bad-1"],
            ["undeclared_subject", 2, "orders.*.shipped", "-", "-", "stray-1"],
            ["undeclared_producer", 1, "orders.*.placed", "-", "legacy", "legacy"],
            ["undeclared_consumer", 1, "orders.*.placed", "audit", "-", "ok"],
        ]
        assert found["detail"].tolist() == [
            "2 of 4 OrderPlaced events on channel 'orderPlaced' (50%) break the schema "
            "'Shop' 1.2.0 declares for it, from 17:46:42.000 to 17:46:43.000 (1 s); the "
            "first, bad-1, at payload /amount: 'x' is not of type 'number'",
            "2 events on 'orders.*.shipped' (e.g. orders.4.shipped), from 17:46:44.000 to "
            "17:46:45.000 (1 s), match no channel that 'Shop' 1.2.0 declares",
            "'legacy' published 1 event on channel 'orderPlaced' (orders.*.placed), at "
            "17:46:46.000, where 'Shop' 1.2.0 declares only 'shop' to send",
            "'audit' received 1 event on channel 'orderPlaced' (orders.*.placed), at "
            "17:46:41.600, where 'Shop' 1.2.0 declares only 'billing' to receive",
        ]

    def test_one_row_per_message_type(self, shop):
        found = conformance_rows(trace(
            pub(1, "a", "orders.1.placed", {"order": 1}),
            pub(2, "b", "payments.done", {"order": 1, "paid": "yes"}, producer="billing",
                source="billing"),
            pub(3, "c", "payments.done", {"order": 2, "paid": "no"}, producer="billing",
                source="billing"),
        ).with_spec(shop).problems())
        assert found[["problem", "count", "event_id"]].values.tolist() == [
            ["contract_violation", 2, "b"], ["contract_violation", 1, "a"]]
        assert found["detail"].iloc[0].startswith(
            "2 of 2 PaymentDone events on channel 'paymentDone' (100%) break the schema")
        assert found["detail"].iloc[1].endswith(
            "the first, a, at payload (as a whole): 'amount' is a required property")
        assert "1 of 1 OrderPlaced events on channel 'orderPlaced' (100%) breaks" in \
            found["detail"].iloc[1]

    def test_without_a_spec_there_are_none(self, shop):
        assert conformance_rows(drifting().problems()).empty
        assert conformance_rows(drifting().with_spec(shop).with_spec(None).problems()).empty

    def test_conforming_traffic_adds_none(self, shop):
        assert conformance_rows(conforming().with_spec(shop).problems()).empty

    def test_the_other_problems_stay(self, shop):
        plain = drifting().problems()
        attached = drifting().with_spec(shop).problems()
        pd.testing.assert_frame_equal(
            attached[~attached["problem"].isin(list(CONFORMANCE))].reset_index(drop=True),
            plain)


class TestDiagnose:
    def test_the_findings_name_the_violation(self, shop):
        found = drifting().with_spec(shop).diagnose()
        broken = found[found["kind"] == "contract_violation"]
        assert len(broken) == 1
        row = broken.iloc[0]
        assert row["severity"] == CONFORMANCE["contract_violation"]
        assert int(row["affected"]) == 2
        assert "OrderPlaced" in row["evidence"] and "bad-1" in row["evidence"]
        assert "/amount: 'x' is not of type 'number'" in row["evidence"]
        kinds = set(found["kind"])
        assert {"undeclared_subject", "undeclared_producer", "undeclared_consumer"} <= kinds
        producer = found[found["kind"] == "undeclared_producer"].iloc[0]
        assert producer["service"] == "legacy"

    def test_without_a_spec_no_such_finding(self):
        assert not set(drifting().diagnose()["kind"]) & set(CONFORMANCE)
