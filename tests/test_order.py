"""Row orders by several keys: the same positions as ``np.lexsort``, ties and all."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from evtkit._order import in_order, lex_order

rows = st.integers(0, 60).flatmap(lambda n: st.lists(
    st.lists(st.integers(-3, 3) | st.sampled_from([2**63 - 1, -(2**63)]), min_size=n,
             max_size=n), min_size=1, max_size=4))


@given(rows)
def test_lex_order_is_lexsorts_order(keys: list[list[int]]) -> None:
    arrays = [np.array(k, dtype=np.int64) for k in keys]
    got = lex_order(arrays)
    want = np.lexsort(arrays[::-1])
    # Rows tied on every key may come in any order: compare the keys they put in order.
    for key in arrays:
        np.testing.assert_array_equal(key[got], key[want])
    assert sorted(got.tolist()) == list(range(len(arrays[0])))
    assert in_order([key[got] for key in arrays])
    as_rows = list(zip(*keys, strict=True))
    assert in_order(arrays) == (as_rows == sorted(as_rows))
