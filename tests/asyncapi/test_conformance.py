"""Traffic checked against AsyncAPI documents: one row per event with the exact violations
(JSON pointer paths) of payloads and headers, and the summary's findings — undeclared
subjects, producers and consumers, unused channels and operations, violations per message."""

from __future__ import annotations

import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evtkit as ek
from evtkit.analysis.conformance import COLUMNS, VIOLATION_COLUMNS
from evtkit.analysis.conformance_findings import SUMMARY
from evtkit.asyncapi.validator import SchemaCheck
from tests.asyncapi.traffic import (
    BILLING,
    GOOD,
    SHOP,
    conforming,
    pub,
    recv,
    tap,
    trace,
)


@pytest.fixture(scope="module")
def shop() -> ek.asyncapi.Spec:
    return ek.asyncapi.load(SHOP)


def check(spec: ek.asyncapi.Spec, *rows: tuple) -> pd.DataFrame:
    return trace(*rows).conformance(spec).events


def one(spec: ek.asyncapi.Spec, row: tuple) -> dict:
    """The conformance row of a single event."""
    return check(spec, row).iloc[0].to_dict()


def violations(spec: ek.asyncapi.Spec, data: object, subject: str = "orders.7.placed",
               **options: object) -> list[dict[str, str]]:
    return one(spec, pub(0, "e", subject, data, **options))["violations"]  # type: ignore[arg-type]


class TestPayload:
    def test_a_conforming_event(self, shop):
        row = one(shop, pub(0, "e", "orders.7.placed", GOOD))
        assert (row["channel"], row["message"], row["valid"]) == ("orderPlaced", "OrderPlaced",
                                                                  True)
        assert row["violations"] == []

    def test_a_wrong_type(self, shop):
        assert violations(shop, {**GOOD, "amount": "12.50"}) == [
            {"path": "/amount", "message": "'12.50' is not of type 'number'", "part": "payload"}]

    def test_a_missing_required_field(self, shop):
        assert violations(shop, {"order": 1, "amount": 3}) == [
            {"path": "", "message": "'currency' is a required property", "part": "payload"}]

    def test_every_violation_with_its_path_nested_ones_too(self, shop):
        data = {"order": "7", "amount": -1, "currency": "GBP",
                "items": [{"sku": "a", "qty": 1}, {"qty": 0}]}
        assert [(v["path"], v["message"]) for v in violations(shop, data)] == [
            ("/amount", "-1 is less than the minimum of 0"),
            ("/currency", "'GBP' is not one of ['EUR', 'USD']"),
            ("/items/1", "'sku' is a required property"),
            ("/items/1/qty", "0 is less than the minimum of 1"),
            ("/order", "'7' is not of type 'integer'"),
        ]

    def test_a_payload_that_is_not_json(self, shop):
        (found,) = violations(shop, b"order=7&amount=3")
        assert found["path"] == "" and found["part"] == "payload"
        assert found["message"].startswith("payload is not JSON (")

    def test_an_empty_payload(self, shop):
        assert violations(shop, b"") == [
            {"path": "", "message": "payload is empty, not JSON", "part": "payload"}]

    def test_a_content_type_of_another_kind_than_declared(self, shop):
        found = violations(shop, b"plain words", headers={"x-tenant": "acme",
                                                          "content-type": "text/plain"})
        assert found == [{"path": "", "part": "payload", "message":
                          "content type 'text/plain' where 'application/json' is declared"}]

    def test_a_structured_cloudevent_is_checked_by_its_data(self, shop):
        envelope = {"specversion": "1.0", "id": "s1", "source": "shop", "type": "placed",
                    "datacontenttype": "application/json"}
        headers = {"x-tenant": "acme", "content-type": "application/cloudevents+json"}
        good = pub(0, "s1", "orders.1.placed", {**envelope, "data": GOOD}, headers=headers)
        bad = pub(1, "s2", "orders.2.placed", {**envelope, "id": "s2",
                                                "data": {**GOOD, "amount": "x"}},
                  headers=headers)
        frame = check(shop, good, bad)
        assert frame["valid"].tolist() == [True, False]
        assert frame["violations"].iloc[1] == [
            {"path": "/amount", "message": "'x' is not of type 'number'", "part": "payload"}]

    def test_text_payloads_are_checked_as_strings_binary_ones_not_at_all(self):
        spec = ek.asyncapi.load(_doc({
            "t": {"address": "text", "messages": {"m": {
                "contentType": "text/plain", "payload": {"type": "string", "maxLength": 5}}}},
            "b": {"address": "bytes", "messages": {"m": {
                "contentType": "application/octet-stream", "payload": {"type": "object"}}}},
            "avro": {"address": "avro", "messages": {"m": {"payload": {
                "schemaFormat": "application/vnd.apache.avro;version=1.9.0",
                "schema": {"type": "record", "name": "X", "fields": []}}}}}}))
        assert spec.channels["avro"].messages["m"].payload is None
        assert spec.channels["avro"].messages["m"].schema_format.startswith(
            "application/vnd.apache.avro")
        frame = check(spec, pub(0, "a", "text", b"hello"), pub(1, "b", "text", b"hello world"),
                      pub(2, "c", "bytes", b"\x00\x01"), pub(3, "d", "avro", b"\x02\x03"))
        assert frame["valid"].tolist() == [True, False, True, True]
        assert frame["violations"].iloc[1] == [
            {"path": "", "message": "'hello world' is too long", "part": "payload"}]


class TestHeaders:
    @pytest.mark.parametrize(("headers", "expected"), [
        ({"x-tenant": "acme", "x-attempt": "2"}, []),
        ({"X-Tenant": "acme"}, []),  # header names match without regard to case
        ({"x-tenant": "ACME"}, [("/x-tenant", "'ACME' does not match '^[a-z]+$'")]),
        ({}, [("", "'x-tenant' is a required property")]),
        ({"x-tenant": "acme", "x-attempt": "0"}, [("/x-attempt",
                                                  "0 is less than the minimum of 1")]),
        ({"x-tenant": "acme", "x-attempt": "two"}, [("/x-attempt",
                                                    "'two' is not of type 'integer'")]),
    ])
    def test_headers_are_checked_against_the_headers_schema(self, shop, headers, expected):
        found = violations(shop, GOOD, headers=headers)
        assert [(v["path"], v["message"]) for v in found] == expected
        assert {v["part"] for v in found} <= {"headers"}

    def test_payload_and_header_violations_together(self, shop):
        found = violations(shop, {**GOOD, "amount": None}, headers={"x-tenant": "A"})
        assert [(v["part"], v["path"]) for v in found] == [("payload", "/amount"),
                                                           ("headers", "/x-tenant")]


class TestChannelsAndMessages:
    def test_an_undeclared_subject_has_no_channel_and_no_verdict(self, shop):
        row = one(shop, pub(0, "e", "orders.7.shipped", GOOD))
        assert pd.isna(row["channel"]) and pd.isna(row["message"]) and pd.isna(row["valid"])
        assert row["violations"] == []

    def test_the_first_message_that_accepts_the_event(self, shop):
        done = {"order": 1, "paid": True}
        failed = {"order": 1, "paid": False, "reason": "card declined"}
        frame = check(shop, pub(0, "a", "payments.done", done),
                      pub(1, "b", "payments.done", failed))
        assert frame["message"].tolist() == ["PaymentDone", "PaymentFailed"]
        assert frame["valid"].tolist() == [True, True]

    def test_else_the_closest_message_the_first_on_a_tie(self, shop):
        closer_to_failed = {"paid": False, "reason": "card declined"}  # 2 vs 1 violations
        tie = {"order": 1, "paid": False}  # 1 vs 1
        frame = check(shop, pub(0, "a", "payments.done", closer_to_failed),
                      pub(1, "b", "payments.done", tie))
        assert frame["message"].tolist() == ["PaymentFailed", "PaymentDone"]
        assert frame["violations"].iloc[0] == [
            {"path": "", "message": "'order' is a required property", "part": "payload"}]
        assert frame["violations"].iloc[1] == [
            {"path": "/paid", "message": "True was expected", "part": "payload"}]

    def test_the_most_specific_channel_checks_the_event(self, shop):
        frame = check(shop, pub(0, "a", "orders.express.placed"), pub(1, "b", "audit.x.y"))
        assert frame["channel"].tolist() == ["expressPlaced", "audit"]

    def test_frame_columns_and_types(self, shop):
        frame = conforming().conformance(shop).events
        assert list(frame.columns) == COLUMNS
        assert str(frame["valid"].dtype) == "boolean"
        assert str(frame["published_at"].dtype) == "datetime64[ns, UTC]"
        assert frame["event_id"].tolist() == ["placed-1", "express-1", "cancel-1", "audit-1",
                                              "paid-1"]

    def test_the_26_document_checks_the_same_traffic_its_own_way(self):
        billing = ek.asyncapi.load(BILLING)
        frame = check(billing, pub(0, "a", "orders.1.placed", {**GOOD, "amount": "x"}),
                      pub(1, "b", "payments.done", {"order": 1, "paid": True}))
        assert frame["channel"].tolist() == ["orders.{orderId}.placed", "payments.done"]
        assert frame["message"].tolist() == ["OrderPlaced", "PaymentDone"]
        assert frame["violations"].iloc[0] == [
            {"path": "/amount", "message": "'x' is not of type 'number'", "part": "payload"}]


class TestSummary:
    def test_conforming_traffic_has_no_findings(self, shop):
        result = conforming().conformance(shop)
        assert result.ok
        assert result.summary().empty and list(result.summary().columns) == SUMMARY
        assert result.events["valid"].all()

    def test_every_kind_of_finding(self, shop):
        result = trace(
            pub(1, "ok", "orders.1.placed"),
            recv(1.5, "ok", "orders.1.placed", "billing"),
            recv(1.6, "ok", "orders.1.placed", "audit"),              # undeclared consumer
            pub(2, "bad-1", "orders.2.placed", {**GOOD, "amount": "x"}),
            pub(3, "bad-2", "orders.3.placed", {**GOOD, "amount": "y"}),
            pub(4, "stray-1", "orders.4.shipped"),                   # undeclared subject
            pub(5, "stray-2", "orders.5.shipped"),
            pub(6, "legacy", "orders.6.placed", producer="legacy", source="legacy"),
            pub(7, "cancel", "orders.7.cancelled", {"order": 7, "reason": "r"},
                producer="legacy", source="legacy"),                # shop never cancels
            pub(8, "paid", "payments.done", {"order": 1, "paid": True}, producer="billing",
                source="billing"),
            recv(8.5, "paid", "payments.done", "ledger"),           # shop never receives
        ).conformance(shop)
        found = result.summary()
        assert not result.ok
        assert found[["kind", "channel", "subject", "message", "application", "count",
                      "event_id"]].fillna("-").values.tolist() == [
            ["violations", "orderPlaced", "orders.*.placed", "OrderPlaced", "-", 2, "bad-1"],
            ["undeclared_subject", "-", "orders.*.shipped", "-", "-", 2, "stray-1"],
            ["undeclared_producer", "orderCancelled", "orders.*.cancelled", "-", "legacy", 1,
             "cancel"],
            ["undeclared_producer", "orderPlaced", "orders.*.placed", "-", "legacy", 1,
             "legacy"],
            ["undeclared_consumer", "orderPlaced", "orders.*.placed", "-", "audit", 1, "ok"],
            ["undeclared_consumer", "paymentDone", "payments.done", "-", "ledger", 1, "paid"],
            ["unused_channel", "expressPlaced", "orders.express.placed", "-", "-", 0, "-"],
            ["unused_channel", "audit", "audit.>", "-", "-", 0, "-"],
            ["unused_operation", "orderCancelled", "-", "-", "shop", 0, "-"],
            ["unused_operation", "paymentDone", "-", "-", "shop", 0, "-"],
        ]
        evidence = dict(zip(found["kind"] + ":" + found["channel"].fillna(found["subject"]),
                            found["evidence"], strict=True))
        assert evidence["violations:orderPlaced"] == (
            "2 of 4 OrderPlaced events on 'orderPlaced' (50%) break its schema, from "
            "17:46:42.000 to 17:46:43.000 (1 s); most often at payload /amount (2 events), "
            "e.g. 'x' is not of type 'number'")
        assert evidence["undeclared_subject:orders.*.shipped"] == (
            "2 events on 'orders.*.shipped' (e.g. orders.4.shipped) from 17:46:44.000 to "
            "17:46:45.000 (1 s) matched no channel of 'Shop' (published by 'shop')")
        assert evidence["undeclared_producer:orderPlaced"] == (
            "'legacy' published 1 event on 'orderPlaced' at 17:46:46.000, which the document "
            "declares only 'shop' to send")
        assert evidence["unused_operation:paymentDone"] == (
            "operation 'receivePayment' (shop receives on 'paymentDone') is declared but was "
            "not seen: 'shop' received none of the events on 'paymentDone'")
        first = found.set_index("event_id").loc["bad-1", "first_seen"]
        assert first == pd.Timestamp("2030-03-17 17:46:42", tz="UTC")

    def test_receives_are_judged_only_when_consumers_were_recorded(self, shop):
        result = trace(tap(1, "a", "orders.1.placed", source="shop"),
                       tap(2, "b", "payments.done", {"order": 1, "paid": True})).conformance(shop)
        kinds = set(result.summary()["kind"])
        assert "undeclared_consumer" not in kinds
        assert "unused_operation" not in kinds  # the send is seen by ce-source alone
        assert result.ok

    def test_producers_known_by_ce_source_only(self, shop):
        result = trace(tap(1, "a", "orders.1.placed", source="intruder")).conformance(shop)
        producers = result.summary().query("kind == 'undeclared_producer'")
        assert producers["application"].tolist() == ["intruder"]

    def test_an_empty_trace(self, shop):
        result = trace().conformance(shop)
        assert result.events.empty and list(result.events.columns) == COLUMNS
        assert set(result.summary()["kind"]) == {"unused_channel"}
        assert result.ok

    def test_the_violations_frame(self, shop):
        result = trace(pub(0, "e", "orders.1.placed", {**GOOD, "amount": "x"},
                           headers={"x-tenant": "B"})).conformance(shop)
        frame = result.violations
        assert list(frame.columns) == VIOLATION_COLUMNS
        assert frame[["event_id", "part", "path", "detail"]].values.tolist() == [
            ["e", "payload", "/amount", "'x' is not of type 'number'"],
            ["e", "headers", "/x-tenant", "'B' does not match '^[a-z]+$'"]]

    def test_describe_leads_with_the_verdict(self, shop):
        bad = trace(pub(0, "e", "orders.1.placed", {**GOOD, "amount": "x"})).conformance(shop)
        lines = bad.describe().splitlines()
        assert lines[0].startswith("Shop 1.2.0 (AsyncAPI 3.0.0, ")
        assert lines[0].endswith(f"{SHOP}): 1 event, 0 conform, 1 break their schema, "
                                 "0 on undeclared subjects")
        assert lines[1] == "does not conform: 1 finding"
        assert "  e  orders.1.placed  payload /amount: 'x' is not of type 'number'" in lines
        assert conforming().conformance(shop).describe().splitlines()[1] == (
            "conforms: nothing undeclared or invalid")


class TestEntryPoints:
    def test_the_trace_method_reads_a_path_and_keeps_the_result_per_spec(self, shop):
        t = conforming()
        assert t.conformance(shop) is t.conformance(shop)
        pd.testing.assert_frame_equal(t.conformance(SHOP).events, t.conformance(shop).events)

    def test_the_function_in_the_asyncapi_package(self, shop):
        t = trace(pub(0, "e", "orders.1.placed", {"order": 1}))
        pd.testing.assert_frame_equal(ek.asyncapi.conformance(t, SHOP).events,
                                      t.conformance(shop).events)

    def test_a_bad_spec_path_is_a_spec_error(self):
        with pytest.raises(ek.SpecError):
            conforming().conformance("no-such-api.yaml")

    def test_repr(self, shop):
        result = trace(pub(0, "a", "orders.1.placed"), pub(1, "b", "x.y")).conformance(shop)
        assert repr(result) == ("<Conformance of 2 events to 'Shop': 1 valid, 0 invalid, "
                                "1 undeclared>")


class TestOverTheWire:
    async def test_events_published_on_a_real_server(self, bus, shop):
        got: list[str] = []

        async def handler(event: ek.Event) -> None:
            got.append(event.id)

        await bus.subscribe("orders.*.placed", handler, consumer="billing")
        await bus.publish("orders.1.placed", GOOD, source="shop", headers={"x-tenant": "acme"})
        await bus.publish("orders.2.placed", {**GOOD, "currency": "JPY"}, source="shop",
                          headers={"x-tenant": "acme"})
        await bus.publish("orders.3.placed", GOOD, source="shop")  # no tenant header
        await bus.settle()
        result = bus.trace().conformance(shop)
        assert result.events["valid"].tolist() == [True, False, False]
        assert result.violations[["part", "path"]].values.tolist() == [
            ["payload", "/currency"], ["headers", ""]]
        assert len(got) == 3


# -- the fast path never accepts what jsonschema refuses ---------------------------------------

_SCHEMAS = [
    {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"},
                                                         "b": {"enum": [1, "x", None]}}},
    {"type": "array", "items": {"type": "number", "minimum": 0}, "maxItems": 3},
    {"oneOf": [{"type": "string"}, {"type": "integer"}], "not": {"const": 0}},
    {"type": "object", "additionalProperties": False, "properties": {"x": {"default": 1}},
     "required": ["x"]},
    {"type": ["boolean", "null"]},
    {"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer", "minimum": 1,
     "exclusiveMinimum": True},
    {"type": "string", "format": "email", "pattern": "^[a-z]"},
]
_JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 3),
                               st.floats(-3, 3), st.sampled_from(["a", "x", "", "é"])),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.sampled_from(["a", "b", "x"]), inner, max_size=3),
                     max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(range(len(_SCHEMAS))), _JSON)
def test_the_fast_check_agrees_with_jsonschema(which, instance):
    schema = _SCHEMAS[which]
    import jsonschema

    reference = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    expected = reference(schema).is_valid(instance)
    copy = orjson.loads(orjson.dumps(instance))
    assert (SchemaCheck(schema).violations(copy) == []) == expected
    assert copy == instance  # checking fills in no defaults


def _doc(channels: dict) -> dict:
    return {"asyncapi": "3.0.0", "info": {"title": "T", "version": "1"}, "channels": channels}
