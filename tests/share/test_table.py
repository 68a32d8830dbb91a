"""readable(): frames in human units, whole text, blanks for missing values, escaped."""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd
import pytest

import evtkit as ek
from evtkit.share.table import readable


@pytest.fixture(scope="module")
def lag() -> pd.DataFrame:
    return ek.datasets.load("shop-incident").lag()


def cells(styled) -> list[dict[str, str]]:
    """The rendered table as one dict per row, header → cell text."""
    page = styled.to_html()
    heads = re.findall(r'<th [^>]*class="col_heading[^"]*"[^>]*>(.*?)</th>', page, re.S)
    rows = re.findall(r"<tr>\s*(.*?)</tr>", page, re.S)[1:]
    out = []
    for row in rows:
        values = re.findall(r"<td [^>]*>(.*?)</td>", row, re.S)
        out.append(dict(zip(heads, values, strict=True)))
    return out


def test_the_lag_table_in_human_units(lag):
    before = lag.copy()
    styled = readable(lag)
    page = styled.to_html()
    assert "<table" in styled._repr_html_()  # a notebook shows it as a table
    assert "ms" in page and "e+0" not in page and "nan" not in page.lower()
    assert "…" not in page and "..." not in page
    for reason in lag["reason"]:
        assert html.escape(reason) in page  # whole, however long
    rows = {row["consumer"]: row for row in cells(styled)}
    billing = rows["billing"]
    assert billing["queue_p95_s"] == "1.83 s"
    assert billing["processing_p50_s"] == "10.4 ms"
    assert billing["status"] == "ERR"
    assert rows["notifications"]["deliveries"] == "1,069"
    assert rows["inventory"]["queue"] == ""  # not "nan"
    pd.testing.assert_frame_equal(lag, before)  # display only: the seconds stay floats


def test_durations_are_right_aligned_and_text_wraps(lag):
    page = readable(lag).to_html()
    reason = lag.columns.get_loc("reason")
    p95 = lag.columns.get_loc("queue_p95_s")
    assert re.search(rf"td\.col{reason} \{{[^}}]*white-space: normal", page)
    assert re.search(rf"td\.col{p95} \{{[^}}]*white-space: nowrap", page)
    assert re.search(rf"td\.col{p95} \{{[^}}]*text-align: right", page)


def test_a_hand_built_frame():
    reason = "the handler waited on the payment gateway " * 12 + "<script>alert(1)</script>"
    assert len(reason) > 500
    frame = pd.DataFrame({
        "consumer": ["billing", None, "shipping", "audit"],
        "reason": [reason, np.nan, "None", "nan"],
        "evidence": pd.array(["ok", pd.NA, "x < y & z", "fine"], dtype="string"),
        "queue_p50_s": [0.000_382_1, 1.83, 65.0, np.nan],
        "p95_s_delta": [0.25, -0.0015, 0.0, None],
        "slowdown": [15.23, 0.0474, 1.0, np.nan],
        "p95_x": [322.0, 1.0, 2.5, 692.4],
        "error_rate": [0.23, 0.0, 1.0, np.nan],
        "deliveries": [12_345, 7, 1_000_000, 0],
        "started": pd.to_datetime(["2026-11-26 16:04:06.2009"] * 4, utc=True),
        "seen": pd.to_datetime(["2026-11-26 23:59:59.5", "2026-11-27 00:00:01.0", None, None],
                               utc=True),
        "took": pd.to_timedelta([1.5, 0.002, 90, None], unit="s"),
    })
    styled = readable(frame)
    page = styled.to_html()
    assert reason.replace("<script>", "&lt;script&gt;").replace("</script>", "&lt;/script&gt;") \
        in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "e+0" not in page and "nan" not in page.lower() and "None" not in page
    assert "…" not in page
    rows = cells(styled)
    assert [r["consumer"] for r in rows] == ["billing", "", "shipping", "audit"]
    assert [r["reason"] for r in rows][1:] == ["", "", ""]
    assert [r["evidence"] for r in rows] == ["ok", "", "x &lt; y &amp; z", "fine"]
    assert [r["queue_p50_s"] for r in rows] == ["382 µs", "1.83 s", "65 s", ""]
    assert [r["p95_s_delta"] for r in rows] == ["+250 ms", "-1.5 ms", "0 µs", ""]
    assert [r["slowdown"] for r in rows] == ["15.2×", "0.0474×", "1×", ""]
    assert [r["p95_x"] for r in rows] == ["322×", "1×", "2.5×", "692×"]
    assert [r["error_rate"] for r in rows] == ["23%", "0%", "100%", ""]
    assert [r["deliveries"] for r in rows] == ["12,345", "7", "1,000,000", "0"]
    assert {r["started"] for r in rows} == {"16:04:06.200"}
    assert [r["seen"] for r in rows] == ["2026-11-26 23:59:59.500", "2026-11-27 00:00:01.000",
                                         "", ""]  # the date, since the column spans two
    assert [r["took"] for r in rows] == ["1.5 s", "2 ms", "90 s", ""]


def test_headers_and_index_are_escaped_and_a_plain_index_is_hidden():
    frame = pd.DataFrame({"<b>name</b>": ["a"]}, index=pd.Index(["<i>x</i>"], name="key"))
    page = readable(frame).to_html()
    assert "<b>" not in page and "&lt;b&gt;name&lt;/b&gt;" in page
    assert "<i>" not in page and "&lt;i&gt;x&lt;/i&gt;" in page
    plain = readable(pd.DataFrame({"n": [5, 6]})).to_html()
    assert "row_heading" not in plain


def test_a_rate_that_is_not_a_share_stays_a_number():
    rows = cells(readable(pd.DataFrame({"publish_rate": [120.5, 80.0]})))
    assert [r["publish_rate"] for r in rows] == ["120", "80"]


def test_duplicate_column_names_are_refused():
    with pytest.raises(ValueError, match="unique"):
        readable(pd.DataFrame([[1, 2]], columns=["a", "a"]))
