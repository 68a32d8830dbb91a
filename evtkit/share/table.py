"""Frames as people read them, for display only: the frame keeps its float seconds.

::

    from evtkit.share.table import readable
    readable(trace.lag())            # in a notebook cell: the table, in human units
    readable(trace.problems()).to_html()

Each column is shown by what it holds, read from its name and dtype:

==============================================  ===========================================
column                                          shown as
==============================================  ===========================================
name ends in ``_s`` (also ``_s_base``,          a duration: ``382 µs``, ``1.83 s``,
``_s_other``, ``_s_delta``), or a timedelta     ``2.5 min``
``ratio``, ``slowdown``, ``factor``, ``*_x``    a factor: ``15.2×``
``*_rate``, ``*_share``, ``*_fraction``         a percentage, ``23%`` (when every value is
(values between 0 and 1)                        between 0 and 1)
integers                                        with thousands separators: ``1,069``
other numbers                                   3 significant digits, never ``e+03``
timestamps                                      ``16:04:06.200`` (with the date when the
                                                column spans more than one day)
text and anything else                          whole, wrapped, never cut with ``…``
==============================================  ===========================================

Missing values (``NaN``, ``None``, ``NA``, ``NaT``, and the texts ``nan``, ``None``,
``<NA>``) are blank. Columns ending in ``_delta`` show a ``+`` on increases. Every cell and
header is HTML-escaped: the text comes from the traffic.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

import pandas as pd
from pandas.io.formats.style import Styler

from .._units import clock, count, duration, is_missing, number, percent, ratio

__all__ = ["readable", "texts"]

_SUFFIX = r"(_(base|other|delta))?$"
_DURATION = re.compile(r"_s" + _SUFFIX)
_RATIO = re.compile(r"((^|_)(ratio|slowdown|factor)|.+_x)" + _SUFFIX)
_RATE = re.compile(r"_(rate|share|fraction)" + _SUFFIX)
_MISSING_TEXT = frozenset({"", "nan", "NaN", "None", "none", "<NA>", "NaT", "null"})

_TEXT_CSS = [("white-space", "normal"), ("overflow-wrap", "anywhere"), ("text-align", "left"),
             ("min-width", "12ch"), ("max-width", "70ch"), ("vertical-align", "top")]
_NUMBER_CSS = [("white-space", "nowrap"), ("text-align", "right"),
               ("font-variant-numeric", "tabular-nums"), ("vertical-align", "top")]


def readable(frame: pd.DataFrame) -> Styler:
    """``frame`` styled for reading: human units, blanks for missing values, whole text.

    Durations (columns named ``*_s``) read ``382 µs`` / ``1.83 s``, ratios ``15.2×``,
    rates ``23%``, counts ``1,069``, timestamps ``16:04:06.200``; text columns (reason,
    evidence, detail, …) are shown whole and wrap instead of being cut with ``…``; every
    cell and header is HTML-escaped. The module docstring has the full table of rules.

    This is for display only: ``frame`` is not changed and keeps its float seconds for
    computing. The result is a pandas ``Styler``: a notebook shows it as a table, and
    ``.to_html()`` gives the HTML.

    Args:
        frame: any frame, e.g. ``trace.lag()``, ``trace.chains()``, ``trace.problems()``
            or ``ek.compare(base, other).consumers``.
    """
    styler = frame.style
    if frame.columns.has_duplicates:  # Styler can address columns only by unique label
        raise ValueError("readable() needs unique column names; got duplicates "
                         f"{sorted(map(str, frame.columns[frame.columns.duplicated()]))}")
    text_columns: list[Any] = []
    number_columns: list[Any] = []
    for column in frame.columns:
        show, is_text = _formatter(str(column), frame[column])
        styler.format(show, subset=[column])
        (text_columns if is_text else number_columns).append(column)
    styler.format_index(escape="html", axis=1)
    if isinstance(frame.index, pd.RangeIndex) and frame.index.name is None:
        styler.hide(axis="index")  # 0, 1, 2 … says nothing
    else:
        styler.format_index(_text, axis=0)
    # One CSS rule per column (``td.col3``), not one selector per cell: chains() has
    # thousands of cells.
    styler.set_table_styles({column: [{"selector": "td", "props": _TEXT_CSS}]
                             for column in text_columns}, overwrite=False)
    styler.set_table_styles({column: [{"selector": "td", "props": _NUMBER_CSS}]
                             for column in number_columns}, overwrite=False)
    styler.set_table_styles([{"selector": "th", "props": [("text-align", "left"),
                                                          ("vertical-align", "bottom")]}],
                            overwrite=False)
    return styler


def texts(frame: pd.DataFrame) -> list[list[str]]:
    """The cells of ``frame``, row by row, as :func:`readable` shows them, but as plain
    (unescaped) text, for a template that escapes on its own."""
    columns = []
    for column in frame.columns:
        show, _ = _formatter(str(column), frame[column])
        columns.append([html.unescape(show(v)) for v in frame[column]])
    return [list(row) for row in zip(*columns, strict=True)]


def _formatter(name: str, values: pd.Series) -> tuple[Callable[[Any], str], bool]:
    """How to show each value of column ``name``, and whether the column is text."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return _guard(lambda v: "yes" if v else "no"), False
    if pd.api.types.is_datetime64_any_dtype(dtype):
        days = values.dropna().dt.normalize().nunique()
        return _guard(lambda v: clock(v, date=days > 1)), False
    if pd.api.types.is_timedelta64_dtype(dtype) or _DURATION.search(name):
        return _guard(_signed(duration, name)), not _numeric(dtype)
    if _RATIO.search(name):
        return _guard(ratio), not _numeric(dtype)
    if _RATE.search(name) and _shares(values):
        return _guard(percent), not _numeric(dtype)
    if pd.api.types.is_integer_dtype(dtype):
        return _guard(_signed(count, name)), False
    if pd.api.types.is_numeric_dtype(dtype):
        return _guard(_signed(number, name)), False
    return _guard(_signed(number, name)), True  # text, or numbers among text


def _numeric(dtype: Any) -> bool:
    return bool(pd.api.types.is_numeric_dtype(dtype)
                or pd.api.types.is_timedelta64_dtype(dtype))


def _shares(values: pd.Series) -> bool:
    """Every present value is a number between 0 and 1 (a share, not e.g. events/s)."""
    numbers = pd.to_numeric(values, errors="coerce")
    present = numbers[values.notna()]
    return bool(present.notna().all() and present.between(0, 1).all())


def _signed(show: Callable[[Any], str], name: str) -> Callable[[Any], str]:
    """``show``, with ``+`` before increases in a ``*_delta`` column."""
    if not name.endswith("_delta"):
        return show
    return lambda v: ("+" if pd.api.types.is_number(v) and v > 0 else "") + show(v)


def _guard(show: Callable[[Any], str]) -> Callable[[Any], str]:
    """``show`` for numbers, whole text for text, blank for anything missing; escaped."""

    def cell(value: Any) -> str:
        if isinstance(value, str) or not _scalar_number(value) and not _time(value):
            return _text(value)
        return "" if is_missing(value) else html.escape(show(value))

    return cell


def _scalar_number(value: Any) -> bool:
    return is_missing(value) or (pd.api.types.is_number(value)
                                 and not isinstance(value, complex))


def _time(value: Any) -> bool:
    return isinstance(value, pd.Timestamp | pd.Timedelta)


def _text(value: Any) -> str:
    if is_missing(value):
        return ""
    text = str(value)
    return "" if text.strip() in _MISSING_TEXT else html.escape(text)
