"""Durations read as people write them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evtkit._units import duration


@pytest.mark.parametrize(("seconds", "text"), [
    (0.000_380_2, "380 µs"), (0.012_54, "12.5 ms"), (1.0, "1 s"), (1.834, "1.83 s"),
    (0.999_9, "1 s"), (59.95, "60 s"), (150, "2.5 min"), (9000, "2.5 h"), (0, "0 µs"),
    (-0.25, "-250 ms"),
    (float("nan"), "?"), (float("inf"), "?"),
])
def test_durations(seconds, text):
    assert duration(seconds) == text


@given(st.floats(min_value=1e-9, max_value=1e7))
def test_never_an_exponent_and_at_most_four_digits_before_the_unit(seconds):
    number, _, unit = duration(seconds).partition(" ")
    assert "e" not in number and unit in ("µs", "ms", "s", "min", "h")
    assert len(number.replace(".", "").lstrip("0")) <= 4
