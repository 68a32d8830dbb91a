"""Durations, numbers, ratios, rates, counts and instants read as people write them."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from evtkit._units import clock, count, duration, number, percent, ratio


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


@pytest.mark.parametrize("missing", [None, float("nan"), pd.NA, pd.NaT, np.nan, "text", True])
def test_a_missing_or_non_numeric_duration_is_a_question_mark(missing):
    assert duration(missing) == "?"


def test_durations_from_numpy_and_timedeltas():
    assert duration(np.float32(0.5)) == "500 ms"
    assert duration(np.int64(65)) == "65 s"
    assert duration(pd.Timedelta("1.5s")) == "1.5 s"
    assert duration(np.timedelta64(3, "ms")) == "3 ms"
    assert duration(dt.timedelta(minutes=3)) == "3 min"


@pytest.mark.parametrize(("value", "text"), [
    (0.0474, "0.0474"), (2.0, "2"), (15.23, "15.2"), (999.4, "999"), (999.7, "1,000"),
    (1234.6, "1,235"), (1_234_567.8, "1,234,568"), (-0.5, "-0.5"), (-2500.2, "-2,500"),
    (1e-7, "0.0000001"), (0, "0"), (np.int64(3), "3"), (float("inf"), "∞"),
    (float("-inf"), "-∞"), (float("nan"), "?"), (None, "?"),
])
def test_numbers(value, text):
    assert number(value) == text


def test_ratios_percentages_and_counts():
    assert [ratio(x) for x in (15.23, 0.0474, float("inf"), None)] == [
        "15.2×", "0.0474×", "∞×", "?"]
    assert [percent(x) for x in (0.23, 0.000474, 1, 0, float("nan"))] == [
        "23%", "0.0474%", "100%", "0%", "?"]
    assert [count(x) for x in (1234, np.int64(1_234_567), 0, pd.NA)] == [
        "1,234", "1,234,567", "0", "?"]


def test_clock_to_the_millisecond():
    at = pd.Timestamp("2026-11-26 16:04:06.2009", tz="UTC")
    assert clock(at) == "16:04:06.200"
    assert clock(at.to_datetime64()) == "16:04:06.200"
    assert clock(at, date=True) == "2026-11-26 16:04:06.200"
    assert clock(pd.NaT) == clock(None) == "?"


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12))
def test_numbers_never_use_an_exponent(value):
    for text in (number(value), ratio(value), percent(value)):
        assert "e" not in text and "E" not in text
