"""Reading AsyncAPI 3.0 and 2.6 documents: channels with parameters → NATS subject patterns,
messages ($refs across two files, traits merged), operations → who sends and who
receives, servers; and the same document from a dict, a JSON file or a file:// URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import evtkit as ek
from evtkit.asyncapi import subject_pattern

DOCS = Path(__file__).parent / "docs"
SHOP = DOCS / "shop-3.0.yaml"
BILLING = DOCS / "billing-2.6.yaml"


@pytest.fixture(scope="module")
def shop() -> ek.asyncapi.Spec:
    return ek.asyncapi.load(SHOP)


@pytest.fixture(scope="module")
def billing() -> ek.asyncapi.Spec:
    return ek.asyncapi.load(BILLING)


class TestAsyncAPI3:
    def test_document_fields(self, shop):
        assert (shop.title, shop.version, shop.asyncapi) == ("Shop", "1.2.0", "3.0.0")
        assert shop.application == "shop"  # info.x-application, not the title
        assert shop.default_content_type == "application/json"
        assert shop.source == str(SHOP)

    def test_channels_keep_document_order_and_addresses(self, shop):
        assert list(shop.channels) == ["orderPlaced", "orderCancelled", "expressPlaced",
                                       "audit", "paymentDone"]
        placed = shop.channels["orderPlaced"]
        assert placed.address == "orders.{orderId}.placed"
        assert placed.subject == "orders.*.placed"
        assert placed.parameters == ("orderId",)
        assert shop.channels["audit"].subject == "audit.>"  # the address's own wildcard

    def test_message_from_a_ref_into_another_file(self, shop):
        cancelled = shop.channels["orderCancelled"].messages["cancelled"]
        assert cancelled.name == "OrderCancelled"
        assert cancelled.payload["required"] == ["order", "reason"]
        assert cancelled.content_type == "application/json"  # the document's default

    def test_refs_inside_the_neighbouring_file_are_resolved_there(self, shop):
        placed = shop.channels["orderPlaced"].messages["placed"]
        items = placed.payload["properties"]["items"]["items"]
        assert items["required"] == ["sku"]  # common.yaml's own '#/components/schemas/Item'
        assert "$ref" not in json.dumps(placed.payload)

    def test_traits_merge_into_the_message_its_own_fields_winning(self, shop):
        placed = shop.channels["orderPlaced"].messages["placed"]
        assert placed.headers["required"] == ["x-tenant"]  # from the trait
        assert placed.correlation_id == "$message.header#/ce-correlationid"
        assert placed.content_type == "application/json"  # the trait said text/plain

    def test_two_channels_referencing_one_message_get_the_same_definition(self, shop):
        a = shop.channels["orderPlaced"].messages["placed"]
        b = shop.channels["expressPlaced"].messages["placed"]
        assert a.payload == b.payload and a.headers == b.headers
        assert (a.channel, b.channel) == ("orderPlaced", "expressPlaced")

    def test_operations_name_application_direction_channel_and_messages(self, shop):
        ops = shop.operations
        assert ops["sendOrderPlaced"] == ek.asyncapi.Operation(
            "sendOrderPlaced", "send", "orderPlaced", "shop", ("placed",))
        assert ops["receivePayment"].action == "receive"
        assert ops["billingReceivesOrders"].application == "billing"  # operation's x-application
        assert shop.producers("orderPlaced") == ("shop",)
        assert shop.consumers("orderPlaced") == ("billing",)
        assert shop.consumers("paymentDone") == ("shop",)
        assert shop.producers("audit") == ()

    def test_servers(self, shop):
        assert shop.servers["local"] == ek.asyncapi.Server(
            "local", "localhost:4222", "nats", description="the embedded server")
        assert shop.servers["production"].pathname == "/shop"


class TestAsyncAPI26:
    def test_document_fields(self, billing):
        assert (billing.title, billing.version, billing.asyncapi) == ("Billing", "0.9", "2.6.0")
        assert billing.application == "billing"

    def test_channel_names_are_addresses(self, billing):
        assert list(billing.channels) == ["orders.{orderId}.placed", "payments.done"]
        assert billing.channels["orders.{orderId}.placed"].subject == "orders.*.placed"

    def test_publish_means_the_application_receives_subscribe_that_it_sends(self, billing):
        receive = billing.operations["receiveOrderPlaced"]
        send = billing.operations["sendPaymentDone"]
        assert (receive.action, receive.channel) == ("receive", "orders.{orderId}.placed")
        assert (send.action, send.channel) == ("send", "payments.done")
        assert billing.consumers("orders.{orderId}.placed") == ("billing",)
        assert billing.producers("payments.done") == ("billing",)

    def test_one_of_lists_every_message_named_by_its_component(self, billing):
        assert list(billing.channels["payments.done"].messages) == ["PaymentDone",
                                                                     "PaymentFailed"]
        assert billing.operations["sendPaymentDone"].messages == ("PaymentDone",
                                                                  "PaymentFailed")

    def test_traits_win_over_the_message_in_2x(self, billing):
        placed = billing.channels["orders.{orderId}.placed"].messages["OrderPlaced"]
        assert placed.content_type == "application/json"  # the message said text/plain
        assert placed.headers["properties"]["x-tenant"] == {"type": "string"}
        assert placed.payload["required"] == ["order", "amount", "currency"]  # common.yaml

    def test_servers_use_url(self, billing):
        assert billing.servers["staging"].host == "nats://staging.example.com:4222"
        assert billing.servers["staging"].protocol_version == "2"


class TestMatch:
    def test_a_parameter_matches_one_token(self, shop):
        assert shop.match("orders.42.placed").id == "orderPlaced"
        assert shop.match("orders.42.7.placed") is None
        assert shop.match("orders.placed") is None

    def test_the_most_specific_channel_wins(self, shop):
        assert shop.match("orders.express.placed").id == "expressPlaced"

    def test_a_trailing_wildcard_matches_one_or_more_tokens(self, shop):
        assert shop.match("audit.orders.42").id == "audit"
        assert shop.match("audit") is None

    def test_no_channel(self, shop):
        assert shop.match("inventory.reserved") is None

    def test_a_parameter_inside_a_token(self):
        spec = ek.asyncapi.load(_doc({"v": {"address": "api.v{version}.ping"}}))
        assert spec.channels["v"].subject == "api.*.ping"
        assert spec.match("api.v2.ping").id == "v"
        assert spec.match("api.x2.ping") is None

    @pytest.mark.parametrize(("address", "pattern"), [
        ("orders.{id}.placed", "orders.*.placed"), ("a.{x}.{y}", "a.*.*"),
        ("a.*.>", "a.*.>"), ("plain", "plain"), ("user/{id}/signup", "*")])
    def test_subject_pattern(self, address, pattern):
        assert subject_pattern(address) == pattern

    def test_a_channel_without_an_address_matches_nothing(self):
        spec = ek.asyncapi.load(_doc({"dynamic": {"description": "address known at runtime"}}))
        assert spec.channels["dynamic"].subject is None
        assert spec.match("dynamic") is None


class TestSources:
    def test_a_dict(self):
        spec = ek.asyncapi.load(_doc({"a": {"address": "a.b"}}))
        assert spec.source == "<dict>" and spec.channels["a"].subject == "a.b"

    def test_json_file_and_file_url_give_the_same_spec(self, tmp_path):
        (tmp_path / "shop.json").write_text(json.dumps(yaml.safe_load(SHOP.read_text())))
        (tmp_path / "common.yaml").write_text((DOCS / "common.yaml").read_text())
        from_json = ek.asyncapi.load(tmp_path / "shop.json")
        from_url = ek.asyncapi.load((tmp_path / "shop.json").as_uri())
        for spec in (from_json, from_url):
            assert list(spec.channels) == list(ek.asyncapi.load(SHOP).channels)
            assert spec.channels["orderCancelled"].messages["cancelled"].payload[
                "required"] == ["order", "reason"]

    def test_a_spec_is_returned_as_it_is(self, shop):
        assert ek.asyncapi.load(shop) is shop

    def test_a_dict_cannot_reach_other_files(self):
        doc = _doc({"a": {"address": "a", "messages": {"m": {"$ref": "common.yaml#/x"}}}})
        with pytest.raises(ek.SpecError, match="not read from a local file"):
            ek.asyncapi.load(doc)

    def test_repr_counts_what_it_declares(self, shop):
        assert repr(shop) == ("<Spec 'Shop' 1.2.0 (AsyncAPI 3.0.0): 5 channels, "
                              "6 messages, 4 operations, 2 servers>")


def _doc(channels: dict) -> dict:
    return {"asyncapi": "3.0.0", "info": {"title": "T", "version": "1"}, "channels": channels}
