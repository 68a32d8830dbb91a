"""Documents evtkit cannot use give a SpecError naming the file and the JSON pointer of the
place — malformed YAML, not AsyncAPI, an unsupported version, missing fields, $refs that do
not resolve, leave the directory, name a URL or make a cycle, invalid JSON Schema — and
hostile ones (alias bombs, recursion, deep nesting, huge files) are refused quickly; random
documents give a Spec or a SpecError, never another exception."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evtkit as ek
from evtkit.asyncapi import reader
from evtkit.observation import build_observations

HEAD = "asyncapi: 3.0.0\ninfo: {title: T, version: '1'}\n"
HEAD_2 = "asyncapi: '2.6.0'\ninfo: {title: T, version: '1'}\n"

# name: (document text, pointer the error names, words the problem contains)
BROKEN = {
    "yaml": (HEAD + "channels: [\n", "", "not valid YAML: did not find expected node "
             "content (line 4, column 1)"),
    "tabs": ("asyncapi: 3.0.0\ninfo:\n\ttitle: T\n", "", "not valid YAML"),
    "two documents": (HEAD + "---\n" + HEAD, "", "but found another document"),
    "not a mapping": ("- asyncapi\n- 3.0.0\n", "", "the top level is list, not a mapping"),
    "empty": ("", "", "empty: no document in it"),
    "openapi": ("openapi: 3.1.0\ninfo: {title: T, version: '1'}\n", "",
                "no 'asyncapi' field (it has 'openapi'"),
    "version 1": ("asyncapi: 1.2.0\ninfo: {title: T, version: '1'}\n", "/asyncapi",
                  "AsyncAPI 1.2.0 is not supported"),
    "version 3.1": ("asyncapi: 3.1.0\ninfo: {title: T, version: '1'}\n", "/asyncapi",
                    "AsyncAPI 3.1.0 is not supported"),
    "version garbage": ("asyncapi: latest\ninfo: {title: T, version: '1'}\n", "/asyncapi",
                        "'latest' is not an AsyncAPI version"),
    "no info": ("asyncapi: 3.0.0\n", "", "missing required field 'info'"),
    "no title": ("asyncapi: 3.0.0\ninfo: {version: '1'}\n", "/info",
                 "missing required field 'title'"),
    "title a list": ("asyncapi: 3.0.0\ninfo: {title: [a], version: '1'}\n", "/info/title",
                     "must be text, not a list"),
    "2.6 without channels": (HEAD_2, "", "missing required field 'channels'"),
    "unresolved ref": (HEAD + "channels:\n  orders/placed:\n    address: orders.placed\n"
                       "    messages:\n      placed: {$ref: '#/components/messages/Nope'}\n"
                       "components: {messages: {}}\n",
                       "/channels/orders~1placed/messages/placed",
                       "$ref '#/components/messages/Nope' does not resolve"),
    "cycle": (HEAD + "components:\n  schemas:\n    Tree:\n      type: object\n"
              "      properties:\n        child: {$ref: '#/components/schemas/Tree'}\n",
              "/components/schemas/Tree/properties/child", "a cycle"),
    "ref to itself": (HEAD + "components:\n  schemas:\n    A: {$ref: '#/components/schemas/A'}\n",
                      "/components/schemas/A", "a cycle"),
    "url ref": (HEAD + "components:\n  schemas:\n    A: {$ref: 'https://example.com/a.yaml'}\n",
                "/components/schemas/A", "names a URL"),
    "ref leaves the directory": (
        HEAD + "components:\n  schemas:\n    A: {$ref: '../outside.yaml'}\n",
        "/components/schemas/A", "leaves the document's directory"),
    "ref to a missing file": (HEAD + "components:\n  schemas:\n    A: {$ref: 'missing.yaml#/X'}\n",
                              "/components/schemas/A", "missing.yaml: no such file"),
    "ref into a broken file": (HEAD + "components:\n  schemas:\n    A: {$ref: 'broken.yaml#/X'}\n",
                               "", "not valid YAML"),
    "anchor fragment": (HEAD + "components:\n  schemas:\n    A: {$ref: '#anchor'}\n",
                        "/components/schemas/A", "only JSON pointer fragments"),
    "invalid payload schema": (HEAD + "channels:\n  a:\n    address: a\n    messages:\n"
                               "      m:\n        payload: {type: objekt}\n",
                               "/channels/a/messages/m/payload/type", "not valid JSON Schema"),
    "payload a list": (HEAD + "channels:\n  a:\n    address: a\n    messages:\n"
                       "      m:\n        payload: [1, 2]\n",
                       "/channels/a/messages/m/payload", "must be a mapping or true/false"),
    "bad header regex": (HEAD + "channels:\n  a:\n    address: a\n    messages:\n      m:\n"
                         "        headers: {properties: {x: {pattern: '(unclosed'}}}\n",
                         "/channels/a/messages/m/headers/properties/x/pattern",
                         "not valid JSON Schema"),
    "traits not a list": (HEAD + "channels:\n  a:\n    address: a\n    messages:\n"
                          "      m: {traits: {a: 1}}\n", "/channels/a/messages/m/traits",
                          "must be a list"),
    "correlation id without location": (
        HEAD + "channels:\n  a:\n    address: a\n    messages:\n"
        "      m: {correlationId: {description: x}}\n",
        "/channels/a/messages/m/correlationId", "missing required field 'location'"),
    "operation action": (HEAD + "channels: {a: {address: a}}\noperations:\n"
                         "  o: {action: publish, channel: {$ref: '#/channels/a'}}\n",
                         "/operations/o/action", "must be 'send' or 'receive', not 'publish'"),
    "operation channel inline": (HEAD + "channels: {a: {address: a}}\noperations:\n"
                                 "  o: {action: send, channel: {address: b}}\n",
                                 "/operations/o/channel", "must be a $ref to a channel"),
    "operation message of another channel": (
        HEAD + "channels:\n  a: {address: a, messages: {m: {payload: {}}}}\n  b: {address: b}\n"
        "operations:\n  o:\n    action: send\n    channel: {$ref: '#/channels/b'}\n"
        "    messages: [{$ref: '#/channels/a/messages/m'}]\n",
        "/operations/o/messages/0", "must be a $ref to a message of its channel"),
    "server without host": (HEAD + "servers: {prod: {protocol: nats}}\n", "/servers/prod",
                            "missing required field 'host'"),
    "2.6 server without url": (HEAD_2 + "channels: {}\nservers: {prod: {protocol: nats}}\n",
                               "/servers/prod", "missing required field 'url'"),
    "2.6 oneOf not a list": (HEAD_2 + "channels:\n  a:\n    publish:\n"
                             "      message: {oneOf: {a: 1}}\n",
                             "/channels/a/publish/message/oneOf", "must be a list"),
    "not utf-8": (b"asyncapi: \xff\xfe", "", "not UTF-8 text"),
    "impossible date": ("asyncapi: 3.0.0\ninfo: {title: T, version: 2024-13-45}\n", "",
                        "a value YAML cannot build"),
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A document folder inside another folder (so '../' leaves it), with a broken
    neighbour."""
    inner = tmp_path / "docs"
    inner.mkdir()
    (inner / "broken.yaml").write_text("X: [\n")
    (tmp_path / "outside.yaml").write_text("type: object\n")
    return inner


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_document_names_file_and_place(folder, case):
    text, pointer, words = BROKEN[case]
    path = folder / "api.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ek.SpecError) as caught:
        ek.asyncapi.load(path)
    error = caught.value
    assert isinstance(error, ValueError)
    assert words in error.problem, str(error)
    if case == "ref into a broken file":
        assert error.source == str(folder / "broken.yaml")
        assert error.__notes__ == [f"referenced from {path}: /components/schemas/A"]
    else:
        assert error.source == str(path)
        assert error.pointer == pointer
        assert str(error) == (f"{path}: {pointer}: {error.problem}" if pointer
                              else f"{path}: {error.problem}")


def test_the_example_message_from_the_issue(folder):
    path = folder / "api.yaml"
    path.write_text(BROKEN["unresolved ref"][0])
    with pytest.raises(ek.SpecError, match=r"api\.yaml: /channels/orders~1placed/messages/"
                                           r"placed: \$ref '#/components/messages/Nope' "
                                           "does not resolve"):
        ek.asyncapi.load(path)


def test_a_missing_file_and_a_directory(tmp_path):
    with pytest.raises(ek.SpecError, match="no such file"):
        ek.asyncapi.load(tmp_path / "nope.yaml")
    with pytest.raises(ek.SpecError, match="is a directory"):
        ek.asyncapi.load(tmp_path)


class TestHostile:
    def test_a_yaml_alias_bomb_is_refused_before_it_is_built(self, tmp_path):
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
        path = tmp_path / "bomb.yaml"
        path.write_text("\n".join(lines))  # 10**9 values once expanded
        with pytest.raises(ek.SpecError, match="expands to more than 1,000,000 values"):
            ek.asyncapi.load(path)

    def test_a_merge_key_bomb_is_refused(self):
        text = "a: &a {k0: 1, k1: 1, k2: 1, k3: 1, k4: 1, k5: 1, k6: 1, k7: 1, k8: 1, k9: 1}\n"
        for i in range(8):
            text += f"m{i}: &m{i}\n  <<: [" + ", ".join([f"*{'a' if i == 0 else f'm{i - 1}'}"]
                                                       * 10) + "]\n"
        with pytest.raises(ek.SpecError, match="expands to more than"):
            reader.parse(text, "merge.yaml")

    def test_a_ref_bomb_is_refused(self):
        schemas = {"L0": {"type": "string"}}
        for i in range(1, 10):
            schemas[f"L{i}"] = {"properties": {f"p{j}": {"$ref": f"#/components/schemas/L{i - 1}"}
                                               for j in range(10)}}
        doc = {"asyncapi": "3.0.0", "info": {"title": "T", "version": "1"},
               "components": {"schemas": schemas}}
        with pytest.raises(ek.SpecError, match=r"\$refs repeated many times"):
            ek.asyncapi.load(doc)

    def test_a_recursive_alias_is_refused(self):
        with pytest.raises(ek.SpecError, match="recursive structure"):
            reader.parse("asyncapi: 3.0.0\ninfo: &i {title: T, me: *i}\n", "r.yaml")

    @pytest.mark.parametrize("depth", [150, 900, 5000])
    def test_deep_nesting_is_refused_without_a_recursion_error(self, depth):
        for text in ("x: " + "[" * depth + "]" * depth,
                     '{"asyncapi": "3.0.0", "x": ' + "[" * depth + "]" * depth + "}"):
            with pytest.raises(ek.SpecError, match="nest|depth"):
                ek.asyncapi.load(_write_tmp(text))

    def test_a_deep_dict_is_refused(self):
        doc: dict = {"asyncapi": "3.0.0", "info": {"title": "T", "version": "1"}}
        node = doc
        for _ in range(5000):
            node["x"] = {}
            node = node["x"]
        with pytest.raises(ek.SpecError, match="nested more than 100 levels deep"):
            ek.asyncapi.load(doc)

    def test_a_self_containing_dict_is_refused(self):
        doc: dict = {"asyncapi": "3.0.0", "info": {"title": "T", "version": "1"}}
        doc["components"] = {"loop": doc}
        with pytest.raises(ek.SpecError, match="nested more than"):
            ek.asyncapi.load(doc)

    def test_a_huge_file_is_not_read(self, tmp_path):
        path = tmp_path / "huge.yaml"
        with path.open("wb") as file:
            file.truncate(reader.MAX_BYTES + 1)
        with pytest.raises(ek.SpecError, match="larger than 16 MiB"):
            ek.asyncapi.load(path)


def _write_tmp(text: str) -> Path:
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="evtkit-spec-"))
    path = folder / "doc.yaml"
    path.write_text(text)
    return path


# -- fuzz ------------------------------------------------------------------------------------

_REFS = ["#/components/schemas/A", "#/components/messages/M", "#/channels/a",
         "#/channels/a/messages/m", "#", "#/", "#/nope", "other.yaml#/x", "../x.yaml",
         "https://example.com/x", "#/components/schemas/A/properties/x"]
_KEYS = ["asyncapi", "info", "channels", "operations", "components", "servers", "messages",
         "payload", "headers", "traits", "address", "action", "channel", "title", "version",
         "type", "properties", "required", "items", "oneOf", "publish", "subscribe",
         "message", "schemaFormat", "schema", "contentType", "correlationId", "location",
         "host", "url", "protocol", "x-application", "a", "m", "A", "M", "schemas", "$ref",
         "$schema", "pattern", "enum", "const"]
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**20),
                     st.floats(allow_nan=True), st.text(max_size=8),
                     st.sampled_from(["3.0.0", "2.6.0", "2.0.0", "1.2.0", "send", "receive",
                                      "object", "string", "a.{x}.b", "orders.>", "(", *_REFS]))
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=4)), inner,
                        max_size=5),
        st.builds(lambda ref: {"$ref": ref}, st.sampled_from(_REFS))),
    max_leaves=30)
_SCHEMAS = st.recursive(
    st.one_of(st.booleans(), st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(["object", "string", "integer", "number", "array", "boolean",
                                 "null", "objekt", ["string", "null"]]),
        "required": st.lists(st.sampled_from(["x", "y", "x-h"]), max_size=2),
        "minimum": _SCALARS, "pattern": st.sampled_from(["^a", "(", "[0-9]+", "x{2,}"]),
        "enum": st.lists(_SCALARS, max_size=3), "const": _SCALARS,
        "$schema": st.sampled_from(["http://json-schema.org/draft-04/schema#",
                                    "https://json-schema.org/draft/2020-12/schema", "x"]),
        "format": st.sampled_from(["date-time", "email", "nope"]), "default": _SCALARS})),
    lambda inner: st.fixed_dictionaries({}, optional={
        "properties": st.dictionaries(st.sampled_from(["x", "y", "x-h"]), inner, max_size=2),
        "items": inner, "oneOf": st.lists(inner, max_size=2), "not": inner,
        "additionalProperties": inner}),
    max_leaves=8)
_MESSAGES = st.fixed_dictionaries({}, optional={
    "payload": _SCHEMAS, "headers": _SCHEMAS,
    "contentType": st.sampled_from(["application/json", "text/plain", "application/x+json",
                                    "application/octet-stream"]),
    "traits": st.lists(st.fixed_dictionaries({}, optional={"headers": _SCHEMAS,
                                                           "contentType": _SCALARS}),
                       max_size=2)})
_ADDRESSES = st.sampled_from(["a", "a.{x}.b", "orders.>", "b", "{p}", None])
_DOCS = st.one_of(
    _VALUES,
    st.fixed_dictionaries({
        "asyncapi": st.just("3.0.0"), "info": st.just({"title": "T", "version": "1"}),
        "channels": st.dictionaries(
            st.sampled_from(["a", "b", "c"]),
            st.fixed_dictionaries({"address": _ADDRESSES, "messages": st.dictionaries(
                st.sampled_from(["m", "n"]), _MESSAGES, max_size=2)}), max_size=3),
        "operations": st.just({"o": {"action": "send", "channel": {"$ref": "#/channels/a"}}})
        | st.just({})}),
    st.fixed_dictionaries({
        "asyncapi": st.just("2.6.0"), "info": st.just({"title": "T", "version": "1"}),
        "channels": st.dictionaries(
            st.sampled_from(["a", "a.{x}.b", "b"]),
            st.fixed_dictionaries({}, optional={
                "publish": st.fixed_dictionaries({"message": _MESSAGES}),
                "subscribe": st.fixed_dictionaries({"message": st.builds(
                    lambda ms: {"oneOf": ms}, st.lists(_MESSAGES, max_size=3))})}),
            max_size=3)}),
    st.fixed_dictionaries(
        {"asyncapi": st.sampled_from(["3.0.0", "2.6.0"]),
         "info": st.one_of(st.just({"title": "T", "version": "1"}), _VALUES)},
        optional={"channels": st.dictionaries(st.sampled_from(["a", "b", "c/d"]), _VALUES,
                                              max_size=3),
                  "operations": st.dictionaries(st.sampled_from(["o", "p"]), _VALUES,
                                                max_size=2),
                  "components": st.fixed_dictionaries(
                      {}, optional={"schemas": st.dictionaries(st.sampled_from(["A", "B"]),
                                                               _VALUES, max_size=2),
                                    "messages": st.dictionaries(st.just("M"), _VALUES)}),
                  "servers": _VALUES, "defaultContentType": _SCALARS}))

SEC = 1_000_000_000


def _small_trace() -> ek.Trace:
    rows = []
    for i, (subject, payload) in enumerate([("a", b'{"x": 1}'), ("a.1.b", b"[1, 2]"),
                                            ("b", b"not json"), ("orders.x", b"")]):
        block = f"NATS/1.0\r\nce-id: e{i}\r\nce-source: s\r\nx-h: {i}\r\n\r\n".encode()
        rows.append(("publish", (1_900_000_000 + i) * SEC, "s", None, None, subject.encode(),
                     None, payload, block, None))
    return ek.Trace(build_observations(rows))


TRACE = _small_trace()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_DOCS)
def test_random_documents_give_a_spec_or_a_spec_error(doc):
    try:
        spec = ek.asyncapi.load(doc)
    except ek.SpecError:
        return
    assert isinstance(spec, ek.asyncapi.Spec)
    result = TRACE.conformance(spec)  # whatever loaded can be checked against
    assert len(result.events) == len(TRACE.events)
    result.summary()


@settings(max_examples=100, deadline=None)
@given(st.one_of(
    st.text(alphabet=string.printable + "{}[]&*!|>-:#'\"\t", max_size=200),
    st.builds(lambda d: yaml.safe_dump(d, default_flow_style=None), _DOCS)))
def test_random_text_gives_a_spec_or_a_spec_error(text):
    try:
        data = reader.parse(text, "fuzz.yaml")
        spec = ek.asyncapi.load(data) if isinstance(data, dict) else None
    except ek.SpecError:
        return
    assert spec is None or isinstance(spec, ek.asyncapi.Spec)
