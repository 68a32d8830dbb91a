"""Hostile AsyncAPI documents and traffic: schemas that would make a check take hours,
files that never end, secrets in messages, malformed references and payloads — each
refused or reported promptly, with a clear error and nothing secret in it."""

from __future__ import annotations

import os

import pytest

import evtkit as ek
from tests.asyncapi.traffic import pub, trace

HEAD = {"asyncapi": "3.0.0", "info": {"title": "T", "version": "1"}}


def document(payload: object, address: str = "a.b") -> dict:
    """A document with one channel at ``address`` whose one message has ``payload``."""
    return {**HEAD, "channels": {"c": {"address": address,
                                       "messages": {"m": {"payload": payload}}}}}


def verdicts(spec: ek.asyncapi.Spec, *payloads: object) -> list[bool]:
    rows = [pub(i, f"e{i}", "a.b", p) for i, p in enumerate(payloads)]
    return trace(*rows).conformance(spec).events["valid"].tolist()


class TestPatterns:
    @pytest.mark.timeout(20)
    def test_schemas_with_patterns_keep_the_generated_check_with_re2_inside(self):
        """The quick check stays (patterns are common in real documents) and runs RE2:
        the backtracking payload is refused at once, and it agrees with jsonschema."""
        from evtkit.asyncapi.validator import SchemaCheck

        check = SchemaCheck({"type": "object", "properties": {
            "s": {"type": "string", "pattern": "^(a+)+$"}},
            "patternProperties": {"^x-": {"type": "string"}}, "additionalProperties": False})
        assert check.quick is not None
        for value, valid in (({"s": "a" * 40 + "!"}, False), ({"s": "aaa"}, True),
                             ({"x-1": "q"}, True), ({"y": 1}, False), ({"s": "aa\n"}, False)):
            assert check.is_valid(value) is valid
            assert (not check.violations(value)) is valid

    @pytest.mark.timeout(20)
    def test_a_backtracking_pattern_is_checked_in_linear_time(self):
        spec = ek.asyncapi.load(document({"type": "object", "properties": {
            "s": {"type": "string", "pattern": "^(a+)+$"}}}))
        assert verdicts(spec, {"s": "a" * 30 + "!"}, {"s": "aaa"}) == [False, True]

    @pytest.mark.timeout(20)
    def test_backtracking_pattern_properties_are_checked_in_linear_time(self):
        spec = ek.asyncapi.load(document({
            "type": "object", "patternProperties": {"^(a+)+$": {"type": "integer"}},
            "additionalProperties": False}))
        assert verdicts(spec, {"a" * 30 + "!": 1}, {"aaa": "x"}, {"aa": 1}) == [
            False, False, True]

    def test_a_pattern_with_a_backreference_is_refused_at_load(self):
        with pytest.raises(ek.SpecError, match=r"/payload/properties/s/pattern.*linear"):
            ek.asyncapi.load(document({"type": "object", "properties": {
                "s": {"type": "string", "pattern": r"(a)\1"}}}))

    def test_a_pattern_property_with_lookahead_is_refused_at_load(self):
        with pytest.raises(ek.SpecError, match=r"/payload/patternProperties/.*linear"):
            ek.asyncapi.load(document({"type": "object",
                                       "patternProperties": {"^(?=x)": True}}))


class TestUniqueItems:
    @pytest.mark.timeout(20)
    def test_many_distinct_objects_are_checked_in_one_pass(self):
        spec = ek.asyncapi.load(document({"type": "array", "uniqueItems": True,
                                          "items": {"type": "object"}, "maxItems": 5}))
        assert verdicts(spec, [{"i": [i]} for i in range(8000)]) == [False]

    def test_json_schema_equality_decides_what_is_a_duplicate(self):
        spec = ek.asyncapi.load(document({"type": "array", "uniqueItems": True}))
        assert verdicts(spec, [1, 1.0], [True, 1], [{"a": 1, "b": 2}, {"b": 2, "a": 1}],
                        [[1], [True]], [0, False]) == [False, True, False, True, True]


def write(folder, name: str, doc: dict) -> str:
    import yaml

    path = folder / name
    path.write_text(yaml.safe_dump(doc))
    return str(path)


class TestFiles:
    @pytest.mark.timeout(20)
    def test_a_fifo_is_refused_not_read(self, tmp_path):
        os.mkfifo(tmp_path / "api.yaml")
        with pytest.raises(ek.SpecError, match="not a regular file"):
            ek.asyncapi.load(tmp_path / "api.yaml")

    @pytest.mark.timeout(20)
    def test_a_reference_to_a_fifo_is_refused_not_read(self, tmp_path):
        os.mkfifo(tmp_path / "schema.yaml")
        main = write(tmp_path, "api.yaml", document({"$ref": "schema.yaml"}))
        with pytest.raises(ek.SpecError, match=r"schema\.yaml.*not a regular file"):
            ek.asyncapi.load(main)

    def test_a_file_name_with_a_nul_is_a_spec_error(self):
        with pytest.raises(ek.SpecError, match="no such file"):
            ek.asyncapi.load("/tmp/a\x00b")

    def test_a_reference_with_a_nul_is_a_spec_error_naming_where(self, tmp_path):
        main = write(tmp_path, "api.yaml", document({"$ref": "a%00b.yaml"}))
        with pytest.raises(ek.SpecError, match=r"api\.yaml.*/channels/c/messages/m/payload"):
            ek.asyncapi.load(main)


class TestPointers:
    def test_a_superscript_digit_is_not_a_list_index(self):
        doc = {**document({"$ref": "#/x/²"}), "x": [{"type": "object"}]}
        with pytest.raises(ek.SpecError, match=r"/channels/c/messages/m/payload.*does not "
                                               r"resolve"):
            ek.asyncapi.load(doc)


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
SECRETS = ("hunter2", "dXNlcjpodW50ZXIy", "pa55", JWT)
GUARDED = {**HEAD, "channels": {"c": {"address": "a.b", "messages": {"m": {
    "payload": {"type": "object", "properties": {
        "password": {"type": "string", "minLength": 20},
        "note": {"type": "integer"}, "url": {"type": "integer"}}},
    "headers": {"type": "object", "properties": {
        "authorization": {"type": "string", "pattern": "^Bearer "}}}}}}}}
LEAKY = pub(1, "e1", "a.b", {"password": "hunter2", "note": JWT,
                             "url": "https://user:pa55@example.com/"},
            headers={"authorization": "Basic dXNlcjpodW50ZXIy"})


class TestSecretsInViolations:
    def test_conformance_violations_mask_credentials(self):
        report = trace(LEAKY).conformance(ek.asyncapi.load(GUARDED))
        found = report.events["violations"].iloc[0]
        assert {v["path"] for v in found} == {"/authorization", "/password", "/note", "/url"}
        text = repr(found) + report.describe()
        assert "'***'" in text
        assert not [s for s in SECRETS if s in text]

    def test_check_cli_output_masks_credentials(self, tmp_path, capsys):
        import json

        from evtkit.cli import main

        spec = tmp_path / "api.json"
        spec.write_text(json.dumps(GUARDED))
        path = trace(LEAKY).save(tmp_path / "t.parquet")
        assert main(["check", str(path), "--spec", str(spec)]) == 1
        out = capsys.readouterr()
        assert not [s for s in SECRETS if s in out.out + out.err]

    def test_contract_errors_mask_credentials(self):
        from evtkit.capture.guard import Guard

        guard = Guard(ek.asyncapi.load(GUARDED))
        payload = b'{"password": "hunter2", "note": "' + JWT.encode() + b'"}'
        block = b"NATS/1.0\r\nauthorization: Basic dXNlcjpodW50ZXIy\r\n\r\n"
        with pytest.raises(ek.ContractError) as caught:
            guard.check("a.b", payload, "application/json", block,
                        {"authorization": "Basic dXNlcjpodW50ZXIy"})
        assert "'***'" in str(caught.value)
        assert not [s for s in SECRETS if s in str(caught.value)]

    def test_ordinary_values_are_still_quoted(self):
        spec = ek.asyncapi.load(document({"type": "object", "properties": {
            "name": {"type": "string", "minLength": 9}}}))
        report = trace(pub(1, "e1", "a.b", {"name": "bob"})).conformance(spec)
        assert report.events["violations"].iloc[0][0]["message"] == "'bob' is too short"


class TestSecretsInExamples:
    @pytest.mark.parametrize(("headers", "payload"), [
        ({"X-Access-Key": "AKIA0000"}, {"a": 1}),
        ({"X-Session": JWT}, {"a": 1}),
        ({"X-DB": "postgres://admin:hunter2@db/x"}, {"a": 1}),
        ({}, {"passphrase": "correct horse"}),
        ({}, {"access_key": "AKIA0000"}),
        ({}, {"key": "sk_live_abc"}),
        ({}, {"session": JWT}),
        ({}, {"url": "https://user:pa55@example.com/"}),
        ({}, {"data": '{"password": "hunter2"}'}),
        ({}, b"password=hunter2&user=bob"),
    ])
    def test_credentials_are_not_shown_as_examples(self, headers, payload):
        text = ek.asyncapi.infer(trace(pub(1, "e1", "a.b", payload, headers=headers)))
        assert not [s for s in ("AKIA0000", JWT, "hunter2", "correct horse", "sk_live",
                                "pa55") if s in text]

    def test_ordinary_examples_are_still_shown(self):
        text = ek.asyncapi.infer(trace(pub(1, "e1", "a.b", {"user": "bob", "keyboard": 1},
                                           headers={"X-Tenant": "acme"})))
        assert "bob" in text
        assert "acme" in text


class TestAddresses:
    @pytest.mark.parametrize("address", ["a.>.b", "orders.{id.x}.placed",
                                         "orders.{a+}.placed", "orders.{(a)}.x"])
    def test_an_address_no_subject_can_match_is_refused_naming_the_channel(self, address):
        with pytest.raises(ek.SpecError, match=r"/channels/c/address.*channel 'c'"):
            ek.asyncapi.load(document({"type": "object"}, address))

    def test_a_parameter_declared_with_regex_syntax_is_refused(self):
        doc = document({"type": "object"}, "orders.{id}")
        doc["channels"]["c"]["parameters"] = {"id": {}, "a.*": {}}
        with pytest.raises(ek.SpecError, match=r"/channels/c/parameters.*'a\.\*'"):
            ek.asyncapi.load(doc)

    def test_a_trailing_wildcard_and_ordinary_parameters_load(self):
        spec = ek.asyncapi.load(document({"type": "object"}, "orders.{order-id_2}.>"))
        assert spec.channels["c"].parameters == ()


class TestNumbers:
    @pytest.mark.parametrize("raw", [b'{"n": NaN}', b'{"n": Infinity}', b'{"n": -Infinity}'])
    def test_nan_and_infinity_are_not_json(self, raw):
        spec = ek.asyncapi.load(document({"type": "object"}))
        found = trace(pub(1, "e1", "a.b", raw)).conformance(spec).events["violations"]
        assert found.iloc[0][0]["message"].startswith("payload is not JSON")

    def test_an_integer_of_5000_digits_is_read(self):
        spec = ek.asyncapi.load(document({"type": "object", "properties": {
            "n": {"type": "integer"}, "m": {"maximum": 10}}}))
        big = b"1" + b"0" * 5000
        assert verdicts(spec, b'{"n": ' + big + b"}") == [True]
        found = trace(pub(1, "e1", "a.b", b'{"m": ' + big + b"}")).conformance(
            spec).events["violations"].iloc[0]
        assert [v["message"] for v in found] == [
            "a number of more than 4300 digits breaks the schema (too long to quote)"]


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"a": {}}, "additionalProperties": False},
    {"type": "object", "patternProperties": {"^x-": {}}, "additionalProperties": False},
])
@pytest.mark.parametrize("extra", [{"b": 1}, {"b": 1, "c": 2}])
def test_additional_properties_are_worded_as_jsonschema_words_them(schema, extra):
    """evtkit checks additionalProperties itself (names matched by RE2): its messages are
    jsonschema's, word for word, which users and tests match on."""
    import jsonschema

    from evtkit.asyncapi.validator import SchemaCheck

    instance = {"a": 0, **extra} if "properties" in schema else extra
    expected = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(instance)]
    assert [v["message"] for v in SchemaCheck(schema).violations(instance)] == expected
