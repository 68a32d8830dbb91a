"""The conformance check works per distinct value — each distinct subject matched to a channel
once, each distinct payload and set of headers checked once per message — and must give every
event exactly what checking it alone gives."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evtkit as ek
from evtkit.asyncapi.spec import Channel, Spec
from evtkit.asyncapi.validator import relevant_names
from tests.asyncapi.traffic import pub, trace

# -- subjects → channels -----------------------------------------------------------------------

_ADDRESS_TOKENS = ["orders", "a", "b", "{id}", "v{n}", "{x}-{y}", "*", ">", "", "é", "a+b"]
_SUBJECT_TOKENS = ["orders", "a", "b", "7", "v2", "v", "x-y", "-", "", "é", "a+b", "\n", "v\n",
                   "*", ">", "{id}"]


def _spec(addresses: list[str | None]) -> Spec:
    channels = {f"c{k}": Channel.of(f"c{k}", address, {}) for k, address in
                enumerate(addresses)}
    return Spec("T", "1", "3.0.0", "t", channels, {}, {})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.lists(st.sampled_from(_ADDRESS_TOKENS), min_size=1,
                                               max_size=4).map(".".join)), max_size=6),
       st.lists(st.lists(st.sampled_from(_SUBJECT_TOKENS), min_size=1, max_size=5)
                .map(".".join), max_size=12))
def test_match_all_agrees_with_match(addresses, subjects):
    spec = _spec(addresses)
    ids = list(spec.channels)
    expected = [-1 if (c := spec.match(s)) is None else ids.index(c.id) for s in subjects]
    assert spec.match_all(subjects).tolist() == expected


@pytest.mark.parametrize(("address", "subjects"), [
    ("orders.{id}.placed", ["orders.7.placed", "orders..placed", "orders.7.8.placed",
                            "orders.\n.placed", "orders.7.placedx"]),
    ("a.>", ["a", "a.", "a.b", "a.b.c", "a\n.b", "b.a"]),
    (">", ["", "a", "a.b"]),
    ("v{n}.x", ["v2.x", "v.x", "v\n.x", "w2.x", "v2v.x"]),
    ("{x}-{y}", ["x-y", "-", "x-", "a-b-c", "é-é"]),
    ("é.a+b", ["é.a+b", "e.a+b", "é.aab"]),
    ("a.*", ["a.", "a.b", "a.b.c"]),
])
def test_match_all_on_the_edges(address, subjects):
    spec = _spec([address])
    assert spec.match_all(subjects).tolist() == [
        -1 if spec.match(s) is None else 0 for s in subjects]


def test_match_all_of_nothing_and_of_missing_subjects():
    spec = _spec(["orders.{id}", "orders.x"])
    assert spec.match_all([]).tolist() == []
    assert spec.match_all([None, "orders.x", "orders.y", "x"]).tolist() == [-1, 1, 0, -1]
    assert _spec([]).match_all(["a"]).tolist() == [-1]


def test_the_regex_is_none_when_nothing_can_match():
    assert Channel.of("c", "a.>.b", {}).regex is None
    assert Channel.of("c", None, {}).regex is None
    assert Channel.of("c", "a.{id}.>", {}).regex == "^a\\.[^.]*\\.(?s:.*)$"


# -- headers a schema can see --------------------------------------------------------------------

@pytest.mark.parametrize(("schema", "names"), [
    ({"type": "object", "required": ["x-a"], "properties": {"x-b": {"type": "string"}}},
     {"x-a", "x-b"}),
    ({"properties": {"x-b": {}}, "additionalProperties": True, "description": "d"}, {"x-b"}),
    (True, set()),
    ({}, set()),
    ({"properties": {"x-b": {}}, "additionalProperties": False}, None),
    ({"patternProperties": {"^x-": {}}}, None),
    ({"properties": {"x-b": {}}, "maxProperties": 3}, None),
    ({"allOf": [{"required": ["x-a"]}]}, None),
    ({"type": "string"}, None),
    (False, None),
])
def test_relevant_names(schema, names):
    found = relevant_names(schema)
    assert (None if found is None else set(found)) == names


# -- every event as if checked alone ---------------------------------------------------------------

_PAYLOADS = [{"order": 1}, {"order": "1"}, {"sku": "a"}, {"order": 2, "sku": "b"}, {},
             b"not json", b"", {"order": 1, "note": "x" * 3}]
_HEADERS = [{}, {"x-tenant": "acme"}, {"x-tenant": "ACME"}, {"X-Tenant": "acme"},
            {"x-tenant": "acme", "x-attempt": "0"}, {"x-tenant": "acme", "x-attempt": "2"},
            {"x-tenant": "acme", "x-other": "1"}, {"x-attempt": "3"}]
_SOURCES = ["shop", "Shop", "billing"]
_HEADERS_BY_NAME = {"type": "object", "required": ["x-tenant"], "properties": {
    "x-tenant": {"type": "string", "pattern": "^[a-z]+$"},
    "x-attempt": {"type": "integer", "minimum": 1}}}
_DOC = {
    "asyncapi": "3.0.0",
    "info": {"title": "Distinct", "version": "1"},
    "channels": {
        # Headers schemas that see only the headers they name: a code per distinct set.
        "byName": {"address": "orders.{id}.placed", "messages": {
            "order": {"name": "Order", "headers": _HEADERS_BY_NAME, "payload": {
                "type": "object", "required": ["order"],
                "properties": {"order": {"type": "integer"}}}},
            "item": {"name": "Item", "headers": {"properties": {"x-attempt": {
                "type": "integer", "maximum": 2}}}, "payload": {
                "type": "object", "required": ["sku"]}}}},
        # Schemas that see every header: a code per distinct header block.
        "closed": {"address": "orders.{id}.closed", "messages": {
            "closed": {"name": "Closed", "payload": {"type": "object"}, "headers": {
                "type": "object", "additionalProperties": False, "properties": {
                    "x-tenant": {"type": "string"}, "ce-id": {}, "ce-source": {}}}}}},
        "sourced": {"address": "orders.{id}.sourced", "messages": {
            "sourced": {"name": "Sourced", "payload": {"type": "object"}, "headers": {
                "type": "object", "properties": {"ce-source": {"const": "shop"}}}}}},
        "text": {"address": "notes.{id}", "messages": {"note": {
            "name": "Note", "contentType": "text/plain", "payload": {
                "type": "string", "maxLength": 5}}}},
    },
}
_SUBJECTS = ["orders.1.placed", "orders.2.placed", "orders.1.closed", "orders.3.sourced",
             "notes.1", "other.1"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(range(len(_SUBJECTS))),
                          st.sampled_from(range(len(_PAYLOADS))),
                          st.sampled_from(range(len(_HEADERS))),
                          st.sampled_from(range(len(_SOURCES)))), min_size=1, max_size=25))
def test_each_event_gets_what_it_gets_alone(events):
    spec = ek.asyncapi.load(_DOC)
    rows = [pub(i, f"e{i}", _SUBJECTS[s], _PAYLOADS[p], headers=_HEADERS[h],
                source=_SOURCES[c]) for i, (s, p, h, c) in enumerate(events)]
    together = trace(*rows).conformance(spec).events
    alone = pd.concat([trace(row).conformance(spec).events for row in rows],
                      ignore_index=True)
    for column in ("event_id", "channel", "message", "valid"):
        assert together[column].astype(object).tolist() == alone[column].astype(object).tolist()
    assert together["violations"].tolist() == alone["violations"].tolist()


def test_equal_payloads_with_other_headers_get_their_own_verdicts():
    spec = ek.asyncapi.load(_DOC)
    frame = trace(pub(0, "a", "orders.1.placed", {"order": 1}, headers={"x-tenant": "acme"}),
                  pub(1, "b", "orders.2.placed", {"order": 1}, headers={"x-tenant": "ACME"}),
                  pub(2, "c", "orders.3.placed", {"order": 1}, headers={"x-tenant": "acme"}),
                  ).conformance(spec).events
    assert frame["valid"].tolist() == [True, False, True]
    assert frame["violations"].iloc[1] == [{"path": "/x-tenant", "part": "headers",
                                            "message": "'ACME' does not match '^[a-z]+$'"}]


def test_each_invalid_event_holds_its_own_violations():
    spec = ek.asyncapi.load(_DOC)
    frame = trace(*[pub(i, f"e{i}", "orders.1.placed", {"order": "x"},
                        headers={"x-tenant": "acme"}) for i in range(3)]).conformance(spec)
    found = frame.events["violations"]
    assert found.iloc[0] == found.iloc[1] and found.iloc[0] is not found.iloc[1]
    assert found.iloc[0][0] is not found.iloc[1][0]


def test_match_remembers_a_bounded_number_of_subjects(monkeypatch):
    """Subjects with ids in them are endless: what match() remembers stays bounded, and
    its answers stay right after it forgets."""
    from evtkit.asyncapi import spec as spec_module

    monkeypatch.setattr(spec_module, "MAX_MATCHED", 10)
    spec = ek.asyncapi.load({
        "asyncapi": "3.0.0", "info": {"title": "t", "version": "1"},
        "channels": {"placed": {"address": "orders.{id}.placed", "parameters": {"id": {}}}}})
    for k in range(100):
        assert spec.match(f"orders.{k}.placed").id == "placed"
        assert spec.match(f"orders.{k}.other") is None
    assert len(spec._matched) <= 10
