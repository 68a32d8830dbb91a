"""ek.asyncapi.infer: an AsyncAPI 3.0 document from traffic — channels with parameters,
payload and header schemas, operations per application, observed figures — that the
official parser accepts and that the same traffic conforms to."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import evtkit as ek
from evtkit.analysis.conformance import FAILING
from evtkit.asyncapi.infer import infer_document, to_yaml
from evtkit.asyncapi.reader import parse
from evtkit.cli import main
from tests.asyncapi.traffic import pub, recv, tap, trace
from tests.paths import ROOT

TOOLS = ROOT / "tools" / "asyncapi"
UUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
ORDERS = 24


def shop() -> ek.Trace:
    """A small shop: order ids in subjects, two regions, several producers and consumers,
    headers (one a credential), formats, a non-JSON channel and a structured CloudEvent.

    * ``orders.<n>.placed`` × 24 by ``shop``: ``order`` (integer), ``amount`` (integer or
      fraction: number), ``placed_at`` (date-time), ``customer`` {``email``, ``id`` (uuid)},
      ``note`` on every other order only; headers ``x-tenant`` and an ``Authorization``;
      received by ``billing`` 0.25 s later and by ``notifications`` 1 s later.
    * ``payments.eu.done`` × 12 and ``payments.us.done`` × 9 by ``billing``; received by
      ``shop``.
    * ``logs.text`` × 3 plain text (``content-type: text/plain``) by ``shop``.
    * ``audit.<n>`` × 12 seen by a tap with ``ce-source: auditor``.
    * ``cloud.events`` × 2 structured-mode CloudEvents by ``shop``.
    """
    rows = []
    for n in range(ORDERS):
        payload = {"order": n, "amount": n + 0.5 if n % 3 else n,
                   "placed_at": f"2030-03-17T17:{n:02d}:41Z",
                   "customer": {"email": f"c{n}@example.com", "id": UUID}}
        if n % 2:
            payload["note"] = "gift"
        headers = {"x-tenant": "acme", "ce-correlationid": f"flow-{n}",
                   "Authorization": "Bearer s3cr3t-t0ken"}
        subject = f"orders.{n}.placed"
        rows += [pub(n, f"placed-{n}", subject, payload, headers=headers),
                 recv(n + 0.25, f"placed-{n}", subject, "billing"),
                 recv(n + 1, f"placed-{n}", subject, "notifications")]
    for n in range(21):
        region = "eu" if n < 12 else "us"
        eid = f"paid-{n}"
        rows += [pub(30 + n, eid, f"payments.{region}.done", {"order": n, "paid": True},
                     producer="billing", source="billing"),
                 recv(30.5 + n, eid, f"payments.{region}.done", "shop")]
    for n in range(3):
        rows.append(pub(60 + n, f"log-{n}", "logs.text", f"line {n}".encode(),
                        headers={"content-type": "text/plain"}))
    for n in range(12):
        rows.append(tap(70 + n, f"audit-{n}", f"audit.{1000 + n}", {"what": "placed"},
                        source="auditor"))
    for n in range(2):
        envelope = {"specversion": "1.0", "id": f"ce-{n}", "source": "shop",
                    "type": "shop.hello", "datacontenttype": "application/json",
                    "data": {"hello": n}}
        rows.append(pub(90 + n, f"ce-{n}", "cloud.events", envelope,
                        headers={"content-type": "application/cloudevents+json"}))
    return trace(*rows)


def parse_with_asyncapi_parser(path: Path) -> dict:
    """The official parser's verdict on the document at ``path`` (tools/asyncapi/
    validate.mjs): ``{"valid", "errors", "diagnostics"}``. Fails when Node.js or the
    parser is missing: CI installs both (.ci/run)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is not installed: the AsyncAPI tests run the official parser "
                    "with it (apt-get install nodejs npm; .ci/run does)")
    if not (TOOLS / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.fail("@asyncapi/parser is not installed: run "
                    "'npm ci --prefix tools/asyncapi' (.ci/run does)")
    run = subprocess.run([node, str(TOOLS / "validate.mjs"), str(path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode in (0, 1), f"validate.mjs failed: {run.stderr}"
    verdict = json.loads(run.stdout)
    assert (run.returncode == 0) == verdict["valid"]
    return verdict


def errors(verdict: dict) -> list[dict]:
    return [d for d in verdict["diagnostics"] if d["severity"] == "error"]


ADDRESSES = {"orders.{orderId}.placed", "payments.eu.done", "payments.us.done", "logs.text",
             "audit.{auditId}", "cloud.events"}


@pytest.fixture(scope="module")
def traffic():
    return shop()


@pytest.fixture(scope="module")
def doc(traffic):
    return infer_document(traffic, title="Shop")


@pytest.fixture(scope="module")
def text(traffic):
    return ek.asyncapi.infer(traffic, title="Shop")


@pytest.fixture(scope="module")
def written(text, tmp_path_factory):
    path = tmp_path_factory.mktemp("infer") / "api.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def channel(doc, address):
    (found,) = [c for c in doc["channels"].values() if c["address"] == address]
    return found


def message(doc, address, raw=False):
    (found,) = [m for m in channel(doc, address)["messages"].values()
                if m["name"].endswith("Raw") == raw]
    return found


class TestDocument:
    def test_is_asyncapi_3_yaml_with_the_title(self, text, doc):
        assert parse(text.encode(), "<inferred>") == doc
        assert doc["asyncapi"] == "3.0.0"
        assert doc["info"]["title"] == "Shop"
        assert doc["info"]["x-evtkit"]["events"] == len(shop().events)

    def test_infer_returns_the_yaml_of_infer_document(self, text, doc):
        assert text == to_yaml(doc)
        assert "&id" not in text and "*id" not in text  # no YAML aliases

    def test_the_official_parser_accepts_it(self, written):
        verdict = parse_with_asyncapi_parser(written)
        assert verdict["valid"], errors(verdict)
        assert errors(verdict) == []

    def test_without_node_the_parser_check_fails_instead_of_skipping(self, written,
                                                                   monkeypatch):
        monkeypatch.setattr(shutil, "which", lambda name: None)
        with pytest.raises(pytest.fail.Exception, match="Node.js is not installed"):
            parse_with_asyncapi_parser(written)
        monkeypatch.setattr(shutil, "which", lambda name: "/bin/node")
        monkeypatch.setattr(Path, "is_dir", lambda self: False)
        with pytest.raises(pytest.fail.Exception, match="npm ci --prefix tools/asyncapi"):
            parse_with_asyncapi_parser(written)

    def test_the_parser_check_really_refuses_a_broken_document(self, tmp_path):
        path = tmp_path / "broken.yaml"
        path.write_text("asyncapi: 3.0.0\ninfo: {title: T, version: '1'}\nchannels:\n"
                        "  a: {address: 'x.{id}', parameters: {other: {}}}\n")
        verdict = parse_with_asyncapi_parser(path)
        assert not verdict["valid"]
        assert any(d["code"] == "asyncapi3-channel-parameters" for d in errors(verdict))


class TestChannels:
    def test_id_tokens_become_parameters_and_regions_stay_literal(self, doc):
        assert {c["address"] for c in doc["channels"].values()} == ADDRESSES

    def test_a_parameter_is_named_and_described_with_examples(self, doc):
        orders = channel(doc, "orders.{orderId}.placed")
        assert orders["parameters"] == {"orderId": {
            "description": f"token 2 of the subject: {ORDERS} distinct values seen",
            "examples": ["0", "1", "2"]}}
        assert "parameters" not in channel(doc, "payments.eu.done")

    def test_channel_ids_are_references_safe(self, doc):
        assert set(doc["channels"]) >= {"orders.orderId.placed", "audit.auditId"}

    def test_observed_figures(self, doc):
        figures = channel(doc, "orders.{orderId}.placed")["x-evtkit"]
        span = 91.0  # first event at 0 s, last at 91 s
        assert figures == {
            "events": ORDERS, "rate_per_s": round(ORDERS / span, 6), "subjects": ORDERS,
            "producers": ["shop"], "consumers": ["billing", "notifications"],
            # half the deliveries 0.25 s after publishing, half 1 s: p95 is 1 s
            "p95_latency_s": 1.0,
            "first_seen": "2030-03-17T17:46:40Z", "last_seen": "2030-03-17T17:47:03Z"}
        assert channel(doc, "payments.eu.done")["x-evtkit"]["events"] == 12
        assert channel(doc, "audit.{auditId}")["x-evtkit"]["consumers"] == []


class TestMessages:
    def test_payload_types_required_fields_and_formats(self, doc):
        payload = message(doc, "orders.{orderId}.placed")["payload"]
        assert payload["required"] == ["amount", "customer", "order", "placed_at"]
        props = payload["properties"]
        assert props["order"] == {"type": "integer"}
        assert props["amount"] == {"type": "number"}  # integers and fractions seen
        assert props["placed_at"] == {"type": "string", "format": "date-time"}
        assert props["note"] == {"type": "string"}  # on every other order: optional
        assert props["customer"] == {
            "type": "object", "required": ["email", "id"],
            "properties": {"email": {"type": "string", "format": "email"},
                           "id": {"type": "string", "format": "uuid"}}}

    def test_headers_schema_and_correlation_id(self, doc):
        placed = message(doc, "orders.{orderId}.placed")
        assert placed["headers"]["required"] == ["ce-correlationid", "ce-id", "ce-source",
                                                 "x-tenant"]
        assert placed["correlationId"] == {"location": "$message.header#/ce-correlationid"}
        assert "correlationId" not in message(doc, "payments.eu.done")

    def test_credentials_are_left_out(self, text):
        assert "Authorization" not in text and "s3cr3t" not in text

    def test_examples_are_the_first_distinct_payloads(self, doc):
        examples = message(doc, "orders.{orderId}.placed")["examples"]
        assert [e["payload"]["order"] for e in examples] == [0, 1, 2]
        assert examples[0]["headers"]["x-tenant"] == "acme"
        assert "examples" not in infer_document(shop(), examples=0)["channels"][
            "orders.orderId.placed"]["messages"]["OrdersPlaced"]

    def test_content_types_and_payloads_that_are_not_json(self, doc):
        logs = message(doc, "logs.text", raw=True)
        assert logs["contentType"] == "text/plain" and "payload" not in logs
        assert logs["headers"]["properties"]["content-type"] == {"type": "string",
                                                                 "enum": ["text/plain"]}
        assert [e["payload"] for e in logs["examples"]] == ["line 0", "line 1", "line 2"]
        assert "contentType" not in message(doc, "orders.{orderId}.placed")  # the default
        assert doc["defaultContentType"] == "application/json"

    def test_a_structured_cloudevent_is_described_by_its_data(self, doc):
        cloud = message(doc, "cloud.events")
        assert cloud["payload"] == {"type": "object", "properties": {"hello": {
            "type": "integer"}}, "required": ["hello"]}
        assert cloud["contentType"] == "application/json"

    def test_json_and_other_payloads_on_one_channel_are_two_messages(self):
        doc = infer_document(trace(pub(1, "a", "mixed", {"a": 1}), pub(2, "b", "mixed", b""),
                                   pub(3, "c", "mixed", b"\xff\x00")))
        messages = doc["channels"]["mixed"]["messages"]
        assert list(messages) == ["Mixed", "MixedRaw"]
        assert messages["Mixed"]["x-evtkit"] == {"events": 1}
        assert messages["MixedRaw"]["x-evtkit"] == {"events": 2}
        assert messages["MixedRaw"]["contentType"] == "application/octet-stream"
        spec = ek.asyncapi.load(doc)
        assert spec.match("mixed") is not None
        assert doc["operations"]["shop.send.mixed"]["messages"] == [
            {"$ref": "#/channels/mixed/messages/Mixed"},
            {"$ref": "#/channels/mixed/messages/MixedRaw"}]


    def test_json_drift_is_told_apart_from_text_by_its_headers(self):
        text = {"content-type": "text/plain"}
        spec = ek.asyncapi.load(infer_document(trace(
            pub(1, "a", "mixed", {"a": 1}), pub(2, "b", "mixed", b"hello", headers=text))))
        later = trace(pub(1, "c", "mixed", {"a": "one"}),
                      pub(2, "d", "mixed", b"bye", headers=text),
                      pub(3, "e", "mixed", b"bye", headers={"content-type": "text/csv"}))
        assert later.conformance(spec).events["valid"].tolist() == [False, True, False]


class TestOperations:
    def test_one_per_application_direction_and_channel(self, doc):
        ops = {(o["x-application"], o["action"], doc["channels"][
            o["channel"]["$ref"].rpartition("/")[2]]["address"])
            for o in doc["operations"].values()}
        assert ops == {
            ("shop", "send", "orders.{orderId}.placed"), ("shop", "send", "logs.text"),
            ("shop", "send", "cloud.events"), ("auditor", "send", "audit.{auditId}"),
            ("billing", "send", "payments.eu.done"), ("billing", "send", "payments.us.done"),
            ("billing", "receive", "orders.{orderId}.placed"),
            ("notifications", "receive", "orders.{orderId}.placed"),
            ("shop", "receive", "payments.eu.done"), ("shop", "receive", "payments.us.done")}

    def test_named_after_application_action_and_channel_with_figures(self, doc):
        op = doc["operations"]["billing.receive.orders.orderId.placed"]
        assert op["messages"] == [
            {"$ref": "#/channels/orders.orderId.placed/messages/OrdersPlaced"}]
        assert op["x-evtkit"]["deliveries"] == ORDERS
        assert op["x-evtkit"]["p95_latency_s"] == 0.25
        assert doc["operations"]["shop.send.orders.orderId.placed"]["x-evtkit"][
            "events"] == ORDERS


class TestRoundTrip:
    def test_load_gives_the_same_producers_and_consumers(self, written, traffic):
        spec = ek.asyncapi.load(written)
        orders = spec.match("orders.7.placed")
        assert orders is not None and orders.address == "orders.{orderId}.placed"
        assert spec.producers(orders.id) == ("shop",)
        assert set(spec.consumers(orders.id)) == {"billing", "notifications"}
        assert spec.producers(spec.match("audit.1003").id) == ("auditor",)
        assert spec.match("payments.eu.done").id != spec.match("payments.us.done").id

    def test_the_same_traffic_conforms_with_nothing_undeclared_or_unused(self, written,
                                                                        traffic):
        result = traffic.conformance(ek.asyncapi.load(written))
        assert result.ok
        assert result.events["valid"].all()
        assert result.violations.empty
        assert result.summary().empty, result.describe()

    def test_new_ids_conform_but_drift_does_not(self, written):
        spec = ek.asyncapi.load(written)
        good = {"order": 99, "amount": 1, "placed_at": "2031-01-01T00:00:00Z",
                "customer": {"email": "x@example.com", "id": "x"}}
        later = trace(pub(1, "n", "orders.99.placed", good, headers={
                          "x-tenant": "acme", "ce-correlationid": "f"}),
                      pub(2, "d", "orders.100.placed", {**good, "amount": "1"}, headers={
                          "x-tenant": "acme", "ce-correlationid": "f"}),
                      pub(3, "u", "payments.asia.done", {"order": 1, "paid": True},
                          producer="billing", source="billing"))
        found = later.conformance(spec).summary()
        assert set(found["kind"]) & set(FAILING) == {"violations", "undeclared_subject"}
        assert later.conformance(spec).events["valid"].tolist()[:2] == [True, False]


class TestCommandLine:
    def test_writes_the_document(self, traffic, tmp_path, capsys):
        path = traffic.save(tmp_path / "run.parquet")
        out = tmp_path / "api.yaml"
        assert main(["infer", path, "--out", str(out), "--title", "Shop"]) == 0
        assert capsys.readouterr().out == (f"{out}: 6 channels, 6 messages, 10 operations "
                                           "(AsyncAPI 3.0.0)\n")
        spec = ek.asyncapi.load(out)
        assert spec.title == "Shop"
        assert ek.load(path).conformance(spec).ok

    def test_dash_writes_to_standard_output(self, traffic, tmp_path, capsys):
        path = traffic.save(tmp_path / "run.parquet")
        assert main(["infer", path, "--out", "-", "--examples", "0"]) == 0
        doc = yaml.safe_load(capsys.readouterr().out)
        assert doc["asyncapi"] == "3.0.0"
        assert not any("examples" in m for c in doc["channels"].values()
                       for m in c["messages"].values())

    def test_an_unreadable_trace_exits_2(self, tmp_path, capsys):
        assert main(["infer", str(tmp_path / "missing.parquet"), "--out",
                     str(tmp_path / "api.yaml")]) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith("evtkit: error: ") and captured.out == ""
        assert not (tmp_path / "api.yaml").exists()

    def test_an_unwritable_output_exits_2(self, traffic, tmp_path, capsys):
        path = traffic.save(tmp_path / "run.parquet")
        assert main(["infer", path, "--out", str(tmp_path / "no" / "api.yaml")]) == 2
        assert capsys.readouterr().err.startswith("evtkit: error: ")

    def test_negative_examples_exit_2(self, traffic, tmp_path, capsys):
        path = traffic.save(tmp_path / "run.parquet")
        assert main(["infer", path, "--out", "-", "--examples", "-1"]) == 2
        assert capsys.readouterr().err == ("evtkit: error: examples must be 0 or more, "
                                           "not -1\n")
