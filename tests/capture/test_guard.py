"""A bus given event definitions (``ek.connect(spec=...)``): what it publishes is checked
before it is sent; what it taps is recorded and flagged by ``trace.conformance``."""

from __future__ import annotations

import nats
import pandas as pd
import pytest

import evtkit as ek
from evtkit.capture.guard import Guard, sent_messages
from tests.paths import ROOT
from tests.waiting import flushed

DOCS = ROOT / "tests" / "asyncapi" / "docs"
SHOP = DOCS / "shop-3.0.yaml"  # AsyncAPI 3.0: the shop sends orders
BILLING = DOCS / "billing-2.6.yaml"  # AsyncAPI 2.6: billing sends payments

ORDER = {"order": 1, "amount": 9.5, "currency": "EUR", "items": [{"sku": "a", "qty": 1}]}
TENANT = {"x-tenant": "acme"}


@pytest.fixture
async def guarded(url):
    """A bus checking its publishes against the shop's document."""
    async with ek.connect(url, name="shop", spec=SHOP) as bus:
        yield bus


class Inbox:
    """What a subscription of the bus received, by subject."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.subjects: list[str] = []

    async def __call__(self, event: ek.Event) -> None:
        self.ids.append(event.id)
        self.subjects.append(event.subject)


async def listen(bus: ek.Bus, subject: str = ">") -> Inbox:
    inbox = Inbox()
    await bus.subscribe(subject, inbox, consumer="listener")
    return inbox


def published(bus: ek.Bus) -> list[str]:
    obs = bus.trace().observations
    return obs.loc[obs["kind"] == "publish", "event_id"].tolist()


async def refused(bus: ek.Bus, subject: str, data: object, **options: object
                  ) -> ek.ContractError:
    """Publish what must be refused; then a valid event, and once everything is settled
    check that only the valid one was sent and recorded (a message from one connection
    cannot overtake an earlier one, so the refused one was never sent)."""
    inbox = await listen(bus, "orders.>")
    before = published(bus)
    with pytest.raises(ek.ContractError) as caught:
        await bus.publish(subject, data, **options)
    ok = await bus.publish("orders.7.placed", ORDER, headers=TENANT)
    await bus.settle()
    assert inbox.ids == [ok.id]
    assert published(bus) == [*before, ok.id]
    return caught.value


class TestPublishChecked:
    async def test_a_valid_event_is_sent_and_recorded(self, guarded):
        inbox = await listen(guarded)
        event = await guarded.publish("orders.42.placed", ORDER, headers=TENANT)
        await guarded.settle()
        assert inbox.ids == [event.id]
        assert published(guarded) == [event.id]

    async def test_a_payload_that_breaks_the_schema_is_refused_before_sending(self, guarded):
        exc = await refused(guarded, "orders.42.placed", {**ORDER, "amount": -1},
                            headers=TENANT)
        assert isinstance(exc, ek.EvtkitError) and isinstance(exc, ValueError)
        assert exc.subject == "orders.42.placed" and exc.channel == "orderPlaced"
        assert exc.violations == [{"path": "/amount", "part": "payload",
                                   "message": "-1 is less than the minimum of 0"}]
        text = str(exc)
        assert "payload at /amount" in text and "'OrderPlaced'" in text
        assert "make the payload at /amount match the schema" in text
        assert "nothing was sent" in text

    async def test_every_violation_is_listed_by_json_pointer(self, guarded):
        exc = await refused(guarded, "orders.42.placed",
                            {"order": "x", "amount": 1, "currency": "JPY",
                             "items": [{"qty": 0}]}, headers=TENANT)
        assert [v["path"] for v in exc.violations] == [
            "/currency", "/items/0", "/items/0/qty", "/order"]
        assert "(and 3 more violations)" in str(exc)

    async def test_headers_are_checked_too(self, guarded):
        exc = await refused(guarded, "orders.42.placed", ORDER, headers={"x-tenant": "ACME"})
        assert exc.violations == [{"path": "/x-tenant", "part": "headers",
                                   "message": "'ACME' does not match '^[a-z]+$'"}]
        assert "headers at /x-tenant" in str(exc)
        missing = await refused(guarded, "orders.42.placed", ORDER)
        assert missing.violations == [{"path": "", "part": "headers",
                                       "message": "'x-tenant' is a required property"}]
        # Header values are text on the wire; a declared integer is read as one.
        attempt = await refused(guarded, "orders.42.placed", ORDER,
                                headers={**TENANT, "x-attempt": "0"})
        assert attempt.violations[0]["path"] == "/x-attempt"
        await guarded.publish("orders.42.placed", ORDER, headers={"X-Tenant": "acme",
                                                                  "x-attempt": "2"})

    async def test_headers_are_checked_as_sent_with_a_message_trace_request(self, guarded):
        exc = await refused(guarded, "orders.42.placed", ORDER, headers={"x-tenant": "A"},
                            trace=True)
        assert exc.violations[0]["path"] == "/x-tenant"

    @pytest.mark.parametrize(("data", "options", "problem"), [
        ("an order", {}, "content type 'text/plain; charset=utf-8' where "
                         "'application/json' is declared"),
        (b'{"order": 1', {}, "content type 'application/octet-stream' where "
                             "'application/json' is declared"),
        (b'{"order": 1', {"content_type": "application/json"}, "payload is not JSON"),
        (b"", {"content_type": "application/json"}, "payload is empty, not JSON"),
    ])
    async def test_non_json_where_json_is_declared_is_refused(self, guarded, data, options,
                                                              problem):
        exc = await refused(guarded, "orders.42.placed", data, headers=TENANT, **options)
        assert exc.violations[0]["path"] == "" and exc.violations[0]["part"] == "payload"
        assert exc.violations[0]["message"].startswith(problem)
        assert "send a payload of the declared content type (application/json)" in str(exc)

    async def test_json_bytes_stated_as_json_are_checked_as_json(self, guarded):
        inbox = await listen(guarded)
        await guarded.publish("orders.1.placed", b'{"order":1,"amount":0,"currency":"USD"}',
                              content_type="application/json", headers=TENANT)
        await refused(guarded, "orders.1.placed", b'{"order":1}',
                      content_type="application/json", headers=TENANT)
        assert len(inbox.ids) == 2  # the first, and refused()'s own valid one

    async def test_the_closest_of_several_messages_is_reported(self, guarded):
        inbox = await listen(guarded, "payments.>")
        await guarded.publish("payments.done", {"order": 1, "paid": True})
        await guarded.publish("payments.done", {"order": 1, "paid": False, "reason": "card"})
        with pytest.raises(ek.ContractError) as caught:
            await guarded.publish("payments.done", {"order": 1, "paid": False})
        await guarded.settle()
        assert len(inbox.ids) == 2
        # PaymentDone (paid must be true) and PaymentFailed (reason missing) are as close:
        # the first declared is reported.
        assert caught.value.violations == [{"path": "/paid", "part": "payload",
                                            "message": "True was expected"}]
        assert "'PaymentDone'" in str(caught.value)

    async def test_a_handler_whose_publish_is_refused_fails_its_delivery(self, guarded):
        async def forward(event: ek.Event) -> None:
            await guarded.publish("orders.9.cancelled", {"order": "nine"})

        await guarded.subscribe("work.start", forward, consumer="worker")
        await guarded.publish("work.start", {})
        await guarded.settle()
        deliveries = guarded.trace().deliveries
        assert deliveries["outcome"].tolist() == ["error"]
        assert "ContractError" in deliveries["error"].iloc[0]
        assert "'reason' is a required property" in deliveries["error"].iloc[0]


class TestUndeclaredSubjects:
    async def test_are_sent_by_default(self, guarded):
        inbox = await listen(guarded)
        event = await guarded.publish("inventory.reserved", "anything at all")
        await guarded.settle()
        assert inbox.ids == [event.id]

    async def test_are_refused_when_strict(self, url):
        async with ek.connect(url, name="shop", spec=SHOP, strict=True) as bus:
            exc = await refused(bus, "inventory.reserved", {"order": 1})
        assert exc.channel is None and exc.subject == "inventory.reserved"
        assert exc.violations == [{"path": "", "part": "subject", "message":
                                   "no channel of Shop 1.2.0 declares this subject"}]
        assert "declare a channel for it" in str(exc) and "strict=True" in str(exc)

    def test_strict_needs_a_spec(self):
        with pytest.raises(ValueError, match="spec="):
            ek.connect(strict=True)


class TestDocuments:
    async def test_asyncapi_2_6(self, url):
        async with ek.connect(url, name="billing", spec=BILLING) as bus:
            inbox = await listen(bus, "payments.>")
            await bus.publish("payments.done", {"order": 3, "paid": True})
            with pytest.raises(ek.ContractError) as caught:
                await bus.publish("payments.done", {"order": "3", "paid": True})
            # The message declares no content type: text is read as text, and is no object.
            with pytest.raises(ek.ContractError) as text:
                await bus.publish("payments.done", "paid")
            await bus.settle()
            assert len(inbox.ids) == 1
        assert caught.value.channel == "payments.done"
        assert caught.value.violations[0]["path"] == "/order"
        assert text.value.violations[0]["message"] == "'paid' is not of type 'object'"

    async def test_a_spec_object_or_a_dict(self, url):
        spec = ek.asyncapi.load(SHOP)
        document = {"asyncapi": "3.0.0", "info": {"title": "Tiny", "version": "1"},
                    "channels": {"ping": {"address": "ping", "messages": {"ping": {
                        "payload": {"type": "object", "required": ["n"]}}}}}}
        for given in (spec, document):
            async with ek.connect(url, spec=given) as bus:
                assert bus.spec is not None and bus.trace().spec is bus.spec
                with pytest.raises(ek.ContractError):
                    await bus.publish("ping" if given is document else "orders.1.placed", {})

    def test_an_unusable_document_fails_at_once(self, tmp_path):
        bad = tmp_path / "api.yaml"
        bad.write_text("asyncapi: 3.0.0\ninfo: {title: x}\n")
        with pytest.raises(ek.SpecError):
            ek.connect(spec=bad)

    def test_only_what_the_application_sends_is_allowed(self):
        """On a channel with two messages, an application that declares sending one may
        publish only that one (anyone may still *receive* either)."""
        spec = ek.asyncapi.load({
            "asyncapi": "3.0.0", "info": {"title": "Kinds", "version": "1",
                                          "x-application": "maker"},
            "channels": {"things": {"address": "things.made", "messages": {
                "a": {"payload": {"type": "object", "required": ["a"]}},
                "b": {"payload": {"type": "object", "required": ["b"]}}}}},
            "operations": {"make": {"action": "send", "channel": {"$ref": "#/channels/things"},
                                    "messages": [{"$ref": "#/channels/things/messages/a"}]}},
        })
        assert [m.id for m in sent_messages(spec, spec.channels["things"])] == ["a"]
        guard = Guard(spec)
        assert guard.violations("things.made", b'{"a": 1}', "application/json", None) == []
        assert guard.violations("things.made", b'{"b": 1}', "application/json", None) == [
            {"path": "", "part": "payload", "message": "'a' is a required property"}]


class TestTapMarks:
    async def test_violations_are_recorded_and_reported_not_refused(self, url):
        async with ek.connect(url, name="observer", spec=SHOP) as bus:
            await bus.tap("orders.>", "payments.>")
            nc = await nats.connect(url, name="legacy-shop")
            try:
                await nc.publish("orders.1.placed", b'{"order":1,"amount":2,"currency":"EUR"}',
                                 headers={"ce-id": "good", **TENANT})
                await nc.publish("orders.2.placed", b'{"order":2,"amount":-2,"currency":"EUR"}',
                                 headers={"ce-id": "negative", **TENANT})
                await nc.publish("orders.3.placed", b'{"order":3,"amount":2,"currency":"EUR"}',
                                 headers={"ce-id": "tenant", "x-tenant": "UPPER"})
                await nc.publish("payments.done", b"not json", headers={"ce-id": "text"})
                await flushed(nc)
            finally:
                await nc.close()
            await bus.settle()
            trace = bus.trace()
        taps = trace.observations[trace.observations["kind"] == "tap"]
        assert len(taps) == 4  # recorded as they came, none refused
        assert trace.spec is bus.spec
        result = trace.conformance(trace.spec).events.set_index("event_id")
        assert result["valid"].to_dict() == {"good": True, "negative": False,
                                             "tenant": False, "text": False}
        paths = {i: [(v["part"], v["path"]) for v in found]
                 for i, found in result["violations"].items()}
        assert paths["negative"] == [("payload", "/amount")]
        assert paths["tenant"] == [("headers", "/x-tenant")]
        assert paths["text"][0] == ("payload", "")
        assert not trace.conformance(trace.spec).ok


CASES = [  # subject, data, headers, content type
    ("orders.1.placed", ORDER, TENANT, None),
    ("orders.1.placed", {"order": 1, "amount": -1, "currency": "JPY"}, None, None),
    ("orders.1.placed", "text", TENANT, None),
    ("orders.1.placed", b"{bad", TENANT, "application/json"),
    ("orders.1.placed", b"", TENANT, "application/json"),
    ("orders.1.placed", b"\x00\x01", TENANT, "application/avro"),
    ("orders.1.placed", ORDER, {"X-Tenant": "acme", "x-attempt": "0"}, None),
    ("orders.1.placed", ORDER, {"x-tenant": "acme", "x-attempt": "two"}, None),
    ("orders.2.cancelled", {"order": "x"}, None, None),
    ("orders.2.cancelled", {"order": 2, "reason": "r"}, None, "application/vnd.x+json"),
    ("orders.3.cancelled", {"specversion": "1.0", "id": "s", "data": {"order": "x"}},
     {"content-type": "application/cloudevents+json"}, None),
    ("orders.4.cancelled", {"specversion": "1.0", "id": "t", "data": {"order": 4,
                                                                      "reason": "r"}},
     {"content-type": "application/cloudevents+json"}, None),
    ("payments.done", {"order": 1, "paid": False}, None, None),
    ("payments.done", {"order": 1, "paid": False, "reason": "r"}, None, None),
    ("payments.done", "paid", None, None),
    ("payments.done", b"\x00", None, None),
    ("payments.done", [1, 2], None, None),
    ("audit.a.b", "plain", None, None),
    ("audit.a.b", {"any": "thing"}, None, None),
    ("nowhere", {"a": 1}, None, None),
]


class TestAgreesWithConformance:
    @pytest.mark.parametrize("document", [SHOP, BILLING], ids=["3.0", "2.6"])
    async def test_the_guard_refuses_what_conformance_flags(self, bus, document):
        """Published unchecked, then held against the document both ways: the guard's
        verdict and violations equal those of ``trace.conformance`` for every event (on
        these documents the messages sent on each channel are all of its messages)."""
        spec = ek.asyncapi.load(document)
        for channel in spec:
            assert sent_messages(spec, channel) == list(channel.messages.values())
        events = [await bus.publish(subject, data, headers=headers, content_type=ct)
                  for subject, data, headers, ct in CASES]
        result = bus.trace().conformance(spec).events.set_index("event_id")
        guard = Guard(spec)
        for (_, _, headers, _), event in zip(CASES, events, strict=True):
            expected = result.loc[event.id, "violations"]
            for own in (headers or {}, None):  # the caller's headers given, or not
                found = guard.violations(event.subject, event.raw, event.content_type,
                                         event.block, own)
                assert found == expected, (event.subject, event.raw, own)
            valid = result.loc[event.id, "valid"]
            assert (valid is not pd.NA and not valid) == bool(expected)


class TestHostileSchemas:
    @pytest.mark.timeout(20)
    def test_a_backtracking_pattern_does_not_hang_the_guard(self):
        spec = ek.asyncapi.load({
            "asyncapi": "3.0.0", "info": {"title": "T", "version": "1"},
            "channels": {"c": {"address": "a", "messages": {"m": {"payload": {
                "type": "object",
                "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}}}}}})
        found = Guard(spec).violations("a", b'{"s": "' + b"a" * 30 + b'!"}',
                                       "application/json", None)
        assert [v["path"] for v in found] == ["/s"]
