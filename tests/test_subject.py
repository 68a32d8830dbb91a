"""NATS subjects: wildcard matching (``*`` one token, ``>`` one or more trailing tokens) and
``Remap`` rules (``OLD=NEW``, exact or ``.>`` prefixes), with their error messages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evtkit.subject import Remap, matches

# Tokens as real subjects use them: no dots, wildcards or whitespace.
TOKEN = st.text(alphabet="abcxyz019_-", min_size=1, max_size=6)
TOKENS = st.lists(TOKEN, min_size=1, max_size=6)


class TestMatches:
    @pytest.mark.parametrize(("pattern", "subject"), [
        ("orders.placed", "orders.placed"),
        ("orders.*", "orders.placed"),
        ("*.placed", "orders.placed"),
        ("orders.*.placed", "orders.eu.placed"),
        ("*.*", "a.b"),
        ("orders.>", "orders.placed"),
        ("orders.>", "orders.eu.placed"),
        ("orders.*.>", "orders.eu.placed.now"),
        (">", "orders"),
        (">", "a.b.c"),
    ])
    def test_matching_pairs(self, pattern, subject):
        assert matches(pattern, subject) is True

    @pytest.mark.parametrize(("pattern", "subject"), [
        ("orders.placed", "orders.paid"),
        ("orders.placed", "orders.placed.eu"),
        ("orders.placed.eu", "orders.placed"),
        ("orders.*", "orders"),
        ("orders.*", "orders.eu.placed"),  # '*' is one token, never two
        ("*", "a.b"),
        ("*.placed", "eu.orders.placed"),
        ("orders.>", "orders"),  # '>' needs at least one token
        ("orders.>", "payments.placed"),
        ("a.>.c", "a.b.c"),  # '>' only counts as the last token
        ("orders.*.>", "orders.eu"),
    ])
    def test_non_matching_pairs(self, pattern, subject):
        assert matches(pattern, subject) is False

    def test_tokens_are_compared_whole_not_as_prefixes(self):
        assert not matches("order", "orders")
        assert not matches("orders.p", "orders.placed")
        assert not matches("orders.*", "ordersx.placed")

    @settings(max_examples=200)
    @given(TOKENS)
    def test_a_subject_matches_itself_and_the_full_wildcard(self, tokens):
        subject = ".".join(tokens)
        assert matches(subject, subject)
        assert matches(">", subject)

    @settings(max_examples=200)
    @given(TOKENS, st.integers(min_value=1, max_value=7))
    def test_stars_match_exactly_as_many_tokens(self, tokens, stars):
        subject = ".".join(tokens)
        assert matches(".".join(["*"] * stars), subject) is (stars == len(tokens))

    @settings(max_examples=200)
    @given(TOKENS, st.data())
    def test_a_star_replaces_exactly_one_token(self, tokens, data):
        i = data.draw(st.integers(min_value=0, max_value=len(tokens) - 1))
        pattern = ".".join([*tokens[:i], "*", *tokens[i + 1:]])
        subject = ".".join(tokens)
        assert matches(pattern, subject)
        # A star never swallows a dot: one token more or less on the subject side fails.
        assert not matches(pattern, subject + ".extra")
        if len(tokens) > 1:
            assert not matches(pattern, ".".join(tokens[:i] + tokens[i + 1:]))

    @settings(max_examples=200)
    @given(TOKENS, st.data())
    def test_a_trailing_wildcard_needs_one_or_more_tokens_after_the_prefix(self, tokens, data):
        k = data.draw(st.integers(min_value=0, max_value=len(tokens)))
        pattern = ".".join([*tokens[:k], ">"])
        assert matches(pattern, ".".join(tokens)) is (len(tokens) > k)


class TestRemap:
    def test_exact_rule_renames_only_that_subject(self):
        remap = Remap(["orders.placed=test.orders.placed"])
        assert remap.apply("orders.placed") == "test.orders.placed"
        assert remap.apply("orders.placed.eu") == "orders.placed.eu"
        assert remap.apply("orders") == "orders"

    def test_prefix_rule_keeps_the_tail(self):
        remap = Remap(["orders.>=test.orders.>"])
        assert remap.apply("orders.placed") == "test.orders.placed"
        assert remap.apply("orders.eu.placed") == "test.orders.eu.placed"

    def test_prefix_rule_needs_a_token_after_the_prefix(self):
        remap = Remap(["orders.>=test.>"])
        assert remap.apply("orders") == "orders"
        assert remap.apply("ordersx.placed") == "ordersx.placed"

    def test_prefix_can_shorten_or_lengthen(self):
        remap = Remap(["a.b.c.>=x.>", "p.>=q.r.s.>"])
        assert remap.apply("a.b.c.d") == "x.d"
        assert remap.apply("p.1.2") == "q.r.s.1.2"

    def test_unmatched_subjects_are_returned_unchanged(self):
        remap = Remap(["a.b=x.y", "orders.>=test.orders.>"])
        for subject in ("other", "a.b.c", "a", "payments.captured"):
            assert remap.apply(subject) == subject

    def test_exact_rule_wins_over_a_prefix_in_either_order(self):
        for rules in (["orders.>=all.>", "orders.vip=vip.orders"],
                      ["orders.vip=vip.orders", "orders.>=all.>"]):
            remap = Remap(rules)
            assert remap.apply("orders.vip") == "vip.orders"
            assert remap.apply("orders.std") == "all.std"

    def test_first_listed_prefix_wins(self):
        remap = Remap(["orders.>=a.>", "orders.eu.>=b.>"])
        assert remap.apply("orders.eu.placed") == "a.eu.placed"
        remap = Remap(["orders.eu.>=b.>", "orders.>=a.>"])
        assert remap.apply("orders.eu.placed") == "b.placed"
        assert remap.apply("orders.us.placed") == "a.us.placed"

    def test_rules_are_applied_once_not_chained(self):
        remap = Remap(["a=b", "b=c", "x.>=y.>", "y.>=z.>"])
        assert remap.apply("a") == "b"
        assert remap.apply("x.1") == "y.1"

    def test_truthiness_says_whether_any_rule_exists(self):
        assert not Remap()
        assert not Remap([])
        assert Remap(["a=b"])
        assert Remap(["a.>=b.>"])

    def test_rules_may_be_any_iterable(self):
        remap = Remap(rule for rule in ["a=b"])
        assert remap.apply("a") == "b"

    @pytest.mark.parametrize(("rule", "message"), [
        ("orders.placed", "must look like OLD=NEW"),
        ("", "must look like OLD=NEW"),
        ("=x", "subject map source '' is not a valid NATS subject"),
        ("x=", "subject map target '' is not a valid NATS subject"),
        ("a..b=c", "subject map source 'a..b' is not a valid NATS subject"),
        ("a.=c", "is not a valid NATS subject"),
        (".a=c", "is not a valid NATS subject"),
        ("a b=c", "subject map source 'a b' is not a valid NATS subject"),
        ("a=b\tc", "subject map target 'b\\tc' is not a valid NATS subject"),
        ("a.>.b=c.>", "'>' may only be the last token"),
        ("a.b>=c", "'>' may only be the last token"),
        ("a=>b", "'>' may only be the last token"),
        ("a.>=b", "use '.>' on both sides or neither"),
        ("a=b.>", "use '.>' on both sides or neither"),
        ("a.*=b.*", "'*' is not supported, use '.>'"),
        ("a.*.c=b", "'*' is not supported"),
        ("a=*.b", "'*' is not supported"),
    ])
    def test_invalid_rules_are_refused_with_a_clear_message(self, rule, message):
        with pytest.raises(ValueError) as caught:
            Remap([rule])
        assert message in str(caught.value)

    def test_one_bad_rule_refuses_the_whole_map(self):
        with pytest.raises(ValueError, match="'a..b'"):
            Remap(["good=fine", "a..b=c"])

    @settings(max_examples=200)
    @given(TOKENS, TOKENS, TOKENS)
    def test_prefix_rule_maps_every_subject_under_it(self, old, new, tail):
        remap = Remap([".".join([*old, ">"]) + "=" + ".".join([*new, ">"])])
        assert remap.apply(".".join(old + tail)) == ".".join(new + tail)
        # The prefix alone (nothing after it) is not under the rule.
        assert remap.apply(".".join(old)) == ".".join(old)


class TestRemapRefusals:
    """Rules that could only be mistakes are refused, before anything is published."""

    @pytest.mark.parametrize("rule", ["orders.placed=>", "orders.placed=*", ">=x",
                                      "a=b.*", "a.*=b"])
    def test_exact_rules_never_involve_wildcards(self, rule):
        with pytest.raises(ValueError):
            Remap([rule])

    @pytest.mark.parametrize("rules", [["a=b", "a=c"], ["a.>=b.>", "a.>=c.>"]])
    def test_a_subject_mapped_twice_is_refused(self, rules):
        with pytest.raises(ValueError, match="mapped twice"):
            Remap(rules)

    def test_an_exact_rule_beside_a_prefix_of_its_parent_is_fine(self):
        remap = Remap(["a.>=x.>", "a.b=y"])
        assert remap.apply("a.b") == "y" and remap.apply("a.c") == "x.c"
