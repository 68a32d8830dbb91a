"""Capture rows as columns: the compiled path (evtkit/_columnar.c) and the numpy/Arrow
reference give the same columns and the same frames, for hostile rows too, on any number of
threads."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evtkit._columns import Columns, columns, compiled
from evtkit._headers import KNOWN
from evtkit.observation import build_observations
from tests.hostile import blocks, rfc3339, traceparents

T = 1_700_000_000 * 10**9
ACK = b"$JS.ACK.ORDERS.worker.2.15.7.1700000000000000000.3"

_texts = st.sampled_from(["a", "b", "<b>c", "\u00e9"])
_bytes = st.one_of(st.none(), st.binary(max_size=12), st.sampled_from([b"orders.placed", ACK]))
_good_blocks = st.builds(
    lambda tp, when, eid: (b"NATS/1.0\r\nce-id: " + eid + b"\r\nce-time: " + when.encode()
                           + b"\r\ntraceparent: " + tp.encode() + b"\r\n\r\n"),
    traceparents(), rfc3339, st.binary(min_size=1, max_size=6).filter(lambda b: b"\r" not in b))
_messages = st.tuples(
    st.sampled_from(["publish", "receive", "tap"]), st.integers(T, T + 10**12), _texts,
    st.one_of(st.none(), _texts), st.one_of(st.none(), _texts), _bytes, _bytes, _bytes,
    st.one_of(blocks, _good_blocks),
    st.one_of(st.none(), st.just("syn-stored-1"), st.integers(0, 5)),
)
_others = st.sampled_from([
    ("handled", T, "w", "billing", "g", None, None, None, None, (1, T - 5, "error", "E: x")),
    ("handled", T, "w", "worker", None, None, None, None, None, (4, T - 5, "ok", None, "ack")),
    ("drop", T, "w", "billing", None, b"orders.placed", None, None, None, (3, "slow")),
    ("disconnect", T, "w", None, None, None, None, None, None, "down"),
    ("hop", T, "w", "billing", "g", b"orders.placed", None, None,
     b"NATS/1.0\r\nce-id: e\r\n\r\n", ("n1", "eg", None)),
])
_rows = st.lists(st.one_of(_messages, _others), min_size=1, max_size=12)


def same(got: Columns, want: Columns) -> None:
    """Every field of two Columns holds the same values."""
    for name in ("kind", "observer", "consumer", "queue"):
        assert getattr(got, name).cast(pa.string()).to_pylist() == \
            getattr(want, name).cast(pa.string()).to_pylist(), name
    for name in ("subject", "reply", "payload", "block"):
        assert getattr(got, name).to_pylist() == getattr(want, name).to_pylist(), name
    assert got.ts.tolist() == want.ts.tolist()
    assert got.given.tolist() == want.given.tolist()
    assert got.parsed.known.keys() == want.parsed.known.keys()
    for name, values in want.parsed.known.items():
        assert got.parsed.known[name].to_pylist() == values.to_pylist(), name
    for name in ("lines", "extra", "malformed"):
        assert np.array_equal(getattr(got.parsed, name), getattr(want.parsed, name)), name
    for a, b in zip(got.traceparent, want.traceparent, strict=True):
        assert a.to_pylist() == b.to_pylist()
    assert got.event_time.to_pylist() == want.event_time.to_pylist()


class TestCompiledAgreesWithReference:
    def test_the_compiled_path_is_installed_where_required(self):
        """CI sets EVTKIT_REQUIRE_NATIVE=1: there, the fast path must have been built."""
        assert compiled() or os.environ.get("EVTKIT_REQUIRE_NATIVE") != "1"

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_rows, st.integers(1, 9))
    def test_columns_on_any_number_of_threads(self, rows, threads):
        same(columns(rows, threads=threads), columns(rows, native=False))

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_rows)
    def test_frames(self, rows):
        pd.testing.assert_frame_equal(build_observations(rows),
                                      build_observations(rows, native=False))

    def test_many_rows_on_several_threads(self):
        """Ranges of rows meet where threads split the work: values, offsets and validity
        line up across them (2,500 rows over 4 threads, every tenth without headers)."""
        rows = [("tap", T + i, "t", None, None, b"s.%d" % (i % 7), None, b"p" * (i % 5),
                 None if i % 10 == 0 else
                 b"NATS/1.0\r\nce-id: e%d\r\nce-type: t%d\r\n\r\n" % (i, i % 3), None)
                for i in range(2_500)]
        got = columns(rows, threads=4)
        same(got, columns(rows, native=False))
        assert got.parsed.known["ce-id"][11].as_py() == "e11"
        assert got.parsed.known["ce-id"][10].as_py() is None

    def test_rows_not_shaped_as_capture_makes_them_take_the_reference_path(self):
        """A bytearray payload is not what capture appends: the compiled path declines and
        the reference path builds the frame, with the same bytes."""
        row = ("tap", T, "t", None, None, b"s", None, bytearray(b"pay"), None, None)
        assert build_observations([row]).loc[0, "payload"] == b"pay"

    @pytest.mark.skipif(not compiled(), reason="the compiled path is not built here")
    def test_a_byte_column_over_2_gib_is_declined_before_anything_is_copied(self):
        """Arrow's binary columns hold up to 2 GiB: past that the compiled path refuses in
        its first look at the rows (the reference path then cuts the column in chunks).
        Eight rows sharing one 270 MB payload: 2.16 GB, nothing copied."""
        from evtkit import _columnar
        from evtkit._columns import _CLOUD, _NAMES, _TIME, _TRACEPARENT

        big = bytes(270_000_000)
        rows = [("tap", T, "t", None, None, b"s", None, big, None, None)] * 8
        with pytest.raises(OverflowError, match="2 GiB"):
            _columnar.split(rows, _NAMES, _CLOUD, _TRACEPARENT, _TIME, 2)

    @pytest.mark.parametrize("native", [True, False])
    def test_known_names_are_the_parsers(self, native):
        parsed = columns([("tap", T, "t", None, None, b"s", None, b"", None, None)],
                         native=native).parsed
        assert set(parsed.known) == set(KNOWN) - {"traceparent"}
