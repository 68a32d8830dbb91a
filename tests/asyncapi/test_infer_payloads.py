"""Inferred schemas hold every payload they were inferred from: random JSON (hypothesis)
and hostile payloads (not JSON, huge, deeply nested, ``$ref`` keys) give a document that
load() accepts and that the same traffic conforms to — never a crash."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evtkit as ek
from evtkit.asyncapi.infer import MAX_EXAMPLE_BYTES, infer_document, to_yaml
from evtkit.asyncapi.infer_schema import MAX_DEPTH, Shape, string_format
from evtkit.asyncapi.reader import parse
from tests.asyncapi.test_infer import errors, parse_with_asyncapi_parser
from tests.asyncapi.traffic import pub, recv, trace


def conforms(traffic: ek.Trace) -> dict:
    """Infer, write as YAML, read back, check the same traffic: the document (as read)."""
    text = ek.asyncapi.infer(traffic)
    doc = parse(text.encode("utf-8"), "<inferred>")
    spec = ek.asyncapi.load(doc)
    result = traffic.conformance(spec)
    assert result.events["valid"].all(), result.violations.head(5).to_dict("records")
    assert result.ok, result.describe()
    return doc


keys = st.one_of(st.text(max_size=6), st.sampled_from([
    "$ref", "$id", "Authorization", "api_key", "", "a.b", "~/", "\ud800", "$\udfff", "\x85"]))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**64),
    st.floats(),  # NaN and infinities: JSON for Python's reader
    st.text(st.characters(codec=None), max_size=12),  # lone surrogates too
    st.sampled_from(["2030-03-17T17:46:41Z", "2030-03-17 17:46:41.5+02:00",
                     "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "a@b.example", "Bearer x"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(keys, inner, max_size=5), max_leaves=20)


class TestRandomPayloads:
    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(st.tuples(st.sampled_from(["things.1.done", "things.2.done", "logs",
                                               "odd.{x}"]), values), min_size=1, max_size=8))
    def test_the_document_loads_and_holds_every_payload(self, events):
        rows = [pub(i, f"e{i}", subject, json.dumps(value).encode())
                for i, (subject, value) in enumerate(events)]
        rows += [recv(i + 0.5, f"e{i}", subject, "reader")
                 for i, (subject, _) in enumerate(events) if i % 2]
        doc = conforms(trace(*rows))
        assert doc["asyncapi"] == "3.0.0"

    @settings(max_examples=100, deadline=None)
    @given(st.lists(values, min_size=1, max_size=6))
    def test_a_shape_accepts_what_it_was_made_from(self, items):
        import jsonschema

        shape = Shape()
        for item in items:
            shape.add(item)
        check = jsonschema.Draft7Validator(shape.schema())
        for item in items:
            assert not list(check.iter_errors(item))


class TestFormats:
    @pytest.mark.parametrize(("text", "expected"), [
        ("2030-03-17T17:46:41Z", "date-time"), ("2030-03-17T17:46:41.123+02:00", "date-time"),
        ("3F2504E0-4F89-11D3-9A0C-0305E82C3301", "uuid"), ("ops@shop.example", "email"),
        ("2030-03-17", None), ("not an email@", None), ("", None)])
    def test_string_format(self, text, expected):
        assert string_format(text) == expected

    def test_a_format_is_kept_only_when_every_value_has_it(self):
        shape = Shape()
        shape.add({"at": "2030-03-17T17:46:41Z", "id": "3f2504e0-4f89-11d3-9a0c-0305e82c3301"})
        shape.add({"at": "yesterday", "id": "3f2504e0-4f89-11d3-9a0c-0305e82c3302"})
        assert shape.schema()["properties"] == {"at": {"type": "string"},
                                                "id": {"type": "string", "format": "uuid"}}


def nested(levels: int) -> bytes:
    value: object = 1
    for level in range(levels):
        value = {"n": value} if level % 2 else [value]
    return json.dumps(value).encode()


@pytest.fixture(scope="module")
def hostile():
    wide = {f"user{n}": {"seen": n} for n in range(3000)}
    return trace(
        pub(1, "a", "bad.json", b"{not json"),
        pub(2, "b", "bad.json", b"\xff\xfe\x00binary"),
        pub(3, "c", "bad.json", b""),
        pub(4, "d", "bad.json", b'{"ok": true}'),
        pub(5, "e", "huge.string", {"blob": "x" * 3_000_000}),
        pub(6, "f", "huge.array", list(range(100_000))),
        pub(7, "g", "wide.map", wide),
        pub(8, "h", "deep.ok", nested(300)),         # JSON, deeper than schemas describe
        pub(9, "i", "deep.too", b"[" * 5000 + b"]" * 5000),  # too deep for any JSON reader
        pub(10, "j", "refs", {"$ref": "#/components/x", "nested": {"$ref": "y"}}),
        pub(11, "k", "text.bad", b"\xc3\x28", headers={"content-type": "text/plain"}),
        pub(12, "l", "nan", b'{"v": NaN, "big": 123456789012345678901234567890}'),
        pub(13, "m", "weird.{x}.*", {"a": 1}, producer="odd name/with:chars", source=None),
        pub(14, "n", "hdr", {"a": 1}, headers={"$ref": "x", "Cookie": "s=1", "X-Api-Key": "k",
                                               "x-plain": "v" * 300}),
        pub(15, "o", "odd.keys", b'{"\\ud800": 1, "$\\udfff": 2, "\\u0085\\u2028": "\\u0000"}'),
    )


class TestHostilePayloads:
    def test_give_a_document_the_same_traffic_conforms_to(self, hostile):
        doc = conforms(hostile)
        channels = {c["address"]: c for c in doc["channels"].values()}
        assert set(channels["bad.json"]["messages"]) == {"BadJson", "BadJsonRaw"}
        assert channels["wide.map"]["messages"]["WideMap"]["payload"]["additionalProperties"] \
            == {"type": "object", "properties": {"seen": {"type": "integer"}},
                "required": ["seen"]}
        assert "payload" not in channels["deep.too"]["messages"]["DeepTooRaw"]
        refs = channels["refs"]["messages"]["Refs"]
        assert refs["payload"]["patternProperties"]["^\\$ref$"] == {"type": "string"}
        assert "examples" not in refs  # $ref keys are never shown

    def test_examples_are_small_and_shallow(self, hostile):
        doc = infer_document(hostile)
        shown = [m for c in doc["channels"].values() for m in c["messages"].values()
                 if "examples" in m]
        names = {m["name"] for m in shown}
        assert {"HugeString", "HugeArray", "WideMap", "DeepOk"}.isdisjoint(names)
        for m in shown:
            for example in m["examples"]:
                assert len(json.dumps(example.get("payload"))) <= MAX_EXAMPLE_BYTES

    def test_schemas_stop_at_the_depth_bound(self, hostile):
        doc = infer_document(hostile)
        schema = doc["channels"]["deep.ok"]["messages"]["DeepOk"]["payload"]
        levels = 0
        while schema:
            schema = schema.get("items") or schema.get("properties", {}).get("n") or {}
            levels += 1
        assert levels <= MAX_DEPTH + 1

    def test_credential_headers_are_left_out(self, hostile):
        text = ek.asyncapi.infer(hostile)
        assert "Cookie" not in text and "X-Api-Key" not in text

    def test_the_official_parser_accepts_the_document(self, hostile, tmp_path):
        path = tmp_path / "hostile.yaml"
        path.write_text(ek.asyncapi.infer(hostile), encoding="utf-8")
        verdict = parse_with_asyncapi_parser(path)
        assert errors(verdict) == [] and verdict["valid"]

    def test_an_empty_trace_gives_an_empty_document(self):
        doc = conforms(trace())
        assert doc["channels"] == {} and doc["operations"] == {}


class TestYaml:
    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.text(st.characters(codec="utf-8")), st.text(
        st.characters(codec="utf-8")), max_size=4))
    def test_text_survives_the_round_trip(self, data):
        assert parse(to_yaml(data).encode("utf-8"), "<yaml>") == data

    def test_lone_surrogates_which_yaml_cannot_hold_are_replaced(self):
        assert parse(to_yaml({"k\ud800": "\udfffv"}).encode("utf-8"), "<yaml>") == {
            "k\ufffd": "\ufffdv"}
