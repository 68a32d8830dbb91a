"""The parameter rule: which subject tokens become ``{parameters}`` when channels are
inferred from subjects (evtkit.asyncapi.infer_channels)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import evtkit as ek
from evtkit.asyncapi.infer_channels import MIN_VALUES, addresses, is_id_like


def found(counts):
    return {a.address: a.subjects for a in addresses(counts)}


class TestRule:
    def test_ids_become_a_parameter_named_after_the_token_before(self):
        out = addresses({f"orders.{n}.placed": 1 for n in range(3)})
        assert [(a.address, a.id) for a in out] == [("orders.{orderId}.placed",
                                                     "orders.orderId.placed")]
        assert out[0].parameters == {"orderId": (1, ("0", "1", "2"), 3)}
        assert out[0].subjects == ("orders.0.placed", "orders.1.placed", "orders.2.placed")

    def test_uuids_and_long_hex_are_ids(self):
        subjects = {"users.3f2504e0-4f89-11d3-9a0c-0305e82c3301.seen": 1,
                    "users.6ba7b810-9dad-11d1-80b4-00c04fd430c8.seen": 1}
        assert list(found(subjects)) == ["users.{userId}.seen"]
        assert is_id_like("a1b2c3d4e5") and is_id_like("order-20301") and is_id_like("7")
        assert not is_id_like("eu") and not is_id_like("v2") and not is_id_like("deadbeef")

    def test_a_few_values_seen_often_stay_literal(self):
        assert set(found({"payments.eu.done": 500, "payments.us.done": 300,
                          "payments.ap.done": 200})) == {
            "payments.eu.done", "payments.us.done", "payments.ap.done"}

    def test_many_values_each_seen_once_or_twice_become_a_parameter(self):
        words = [f"w{chr(97 + i)}x" for i in range(MIN_VALUES)]
        assert list(found({f"sessions.{w}.open": 2 for w in words})) == [
            "sessions.{sessionId}.open"]
        # the same values, each seen many times: an enumeration, kept literal
        assert len(found({f"sessions.{w}.open": 50 for w in words})) == MIN_VALUES
        # fewer values than MIN_VALUES, each seen once: literal too
        assert len(found({f"sessions.{w}.open": 1 for w in words[:-1]})) == MIN_VALUES - 1

    def test_ids_beside_literal_values_at_the_same_place(self):
        out = found({"orders.eu.placed": 100, "orders.us.placed": 90, "orders.1.placed": 1,
                     "orders.2.placed": 1})
        assert out == {"orders.eu.placed": ("orders.eu.placed",),
                       "orders.us.placed": ("orders.us.placed",),
                       "orders.{orderId}.placed": ("orders.1.placed", "orders.2.placed")}

    def test_a_single_value_is_not_a_parameter(self):
        assert list(found({"orders.1.placed": 40})) == ["orders.1.placed"]

    def test_several_positions_become_parameters(self):
        counts = {f"tenants.t{t:04d}.orders.{n}": 1 for t in range(3) for n in range(4)}
        assert list(found(counts)) == ["tenants.{tenantId}.orders.{orderId}"]

    def test_names_are_singular_camel_case_and_unique(self):
        counts = {f"{a}.{b}": 1 for a in ("1", "2") for b in ("3", "4")}
        assert list(found(counts)) == ["{token1}.{token2}"]
        counts = {f"order-items.{n}.{m}": 1 for n in range(2) for m in range(2)}
        assert list(found(counts)) == ["order-items.{orderItemId}.{token3}"]
        counts = {f"categories.{n}": 1 for n in range(2)}
        assert list(found(counts)) == ["categories.{categoryId}"]

    def test_tokens_an_address_cannot_hold_are_parameters(self):
        out = addresses({"a.{x}": 1, "a.*": 1, "a.b": 5, "": 3})
        assert [(a.address, a.subjects) for a in out] == [
            ("a.b", ("a.b",)), ("a.{aId}", ("a.{x}", "a.*"))]


subjects = st.lists(st.lists(st.sampled_from(["a", "b", "1", "2", "33", "x{", "*", "eu", ""]),
                             min_size=1, max_size=4).map(".".join),
                    min_size=1, max_size=30)


class TestMatchesTheReader:
    @settings(max_examples=200, deadline=None)
    @given(subjects, st.integers(1, 20))
    def test_every_subject_is_carried_by_the_channel_load_picks(self, names, times):
        counts = {s: times for s in names if s}
        out = addresses(counts)
        assert sorted(s for a in out for s in a.subjects) == sorted(counts)
        doc = {"asyncapi": "3.0.0", "info": {"title": "t", "version": "1"}, "channels": {
            a.id: {"address": a.address, "parameters": {p: {} for p in a.parameters}}
            for a in out}}
        spec = ek.asyncapi.load(doc)
        assert len({a.id for a in out}) == len(out)
        for a in out:
            for subject in a.subjects:
                assert spec.match(subject).id == a.id
