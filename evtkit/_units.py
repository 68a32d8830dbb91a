"""Numbers as people read them: durations in µs / ms / s / min / h with 3 significant digits,
ratios as ``15.2×``, rates as ``23%``, counts as ``1,234``, instants as ``16:04:06.200`` —
never ``1e+03``."""

from __future__ import annotations

import datetime as _dt
import math
import numbers
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["clock", "count", "duration", "is_missing", "number", "percent", "ratio"]


def is_missing(value: Any) -> bool:
    """``None``, ``NaN``, ``NaT`` and ``pd.NA`` (not lists, strings or other containers)."""
    if value is None:
        return True
    try:
        return bool(pd.api.types.is_scalar(value) and pd.isna(value))
    except (TypeError, ValueError):  # pragma: no cover - exotic scalars
        return False


def _real(value: Any) -> float | None:
    """``value`` as a finite-or-infinite float, or ``None`` when it is missing or not a
    number (booleans are not numbers here)."""
    if is_missing(value) or isinstance(value, bool):
        return None
    if isinstance(value, _dt.timedelta | np.timedelta64):  # pd.Timedelta is the first
        return pd.Timedelta(value).total_seconds()
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def duration(seconds: Any) -> str:
    """``seconds`` in the unit that keeps it between 1 and 1000: ``380 µs``, ``12.5 ms``,
    ``1.83 s``, ``2.5 min``, ``3.2 h``; ``?`` for a missing value. A ``timedelta`` is
    read as its seconds."""
    value = _real(seconds)
    if value is None or not math.isfinite(value):
        return "?"
    sign, value = ("-" if value < 0 else ""), float(f"{abs(value):.3g}")
    if value >= 7200:
        return f"{sign}{_sig(value / 3600)} h"
    if value >= 120:
        return f"{sign}{_sig(value / 60)} min"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if value >= scale or unit == "µs":
            return f"{sign}{_sig(value / scale)} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def number(value: Any) -> str:
    """3 significant digits (more only before the decimal point), thousands separated,
    no exponent: ``0.0474``, ``2``, ``15.2``, ``1,235``; ``?`` when missing."""
    real = _real(value)
    if real is None or math.isnan(real):
        return "?"
    if math.isinf(real):
        return "-∞" if real < 0 else "∞"
    sign, real = ("-" if real < 0 else ""), abs(real)
    if real >= 999.5:  # whole numbers keep every digit before the point
        return f"{sign}{round(real):,}"
    return sign + _sig(float(f"{real:.3g}"))


def ratio(value: Any) -> str:
    """A factor: ``15.2×``, ``0.0474×``, ``∞×`` (after ÷ a zero before); ``?`` when missing."""
    text = number(value)
    return text if text == "?" else f"{text}×"


def percent(share: Any) -> str:
    """A share of 1 as a percentage: ``0.23`` → ``23%``, ``0.000474`` → ``0.0474%``."""
    real = _real(share)
    return "?" if real is None or math.isnan(real) else f"{number(real * 100)}%"


def count(value: Any) -> str:
    """A whole number with thousands separators: ``1,234``; ``?`` when missing."""
    real = _real(value)
    if real is None or not math.isfinite(real):
        return "?"
    return f"{round(real):,}"


def clock(instant: Any, *, date: bool = False) -> str:
    """Wall-clock time to the millisecond, ``16:04:06.200`` (with the date before it when
    ``date``); in the timestamp's own time zone (evtkit's are UTC). ``?`` when missing."""
    if is_missing(instant):
        return "?"
    ts = pd.Timestamp(instant)
    text = ts.strftime("%H:%M:%S.") + f"{ts.microsecond // 1000:03d}"
    return f"{ts.strftime('%Y-%m-%d')} {text}" if date else text


def _sig(value: float) -> str:
    """3 significant digits without exponent: 1.83, 12.5, 380, 1,000 → '1000'."""
    if value == 0:
        return "0"
    digits = max(0, 2 - math.floor(math.log10(value)))
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
