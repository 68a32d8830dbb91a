"""Numbers as people read them: durations in µs / ms / s / min / h with 3 significant digits,
never ``1e+03``."""

from __future__ import annotations

import math

__all__ = ["duration"]


def duration(seconds: float) -> str:
    """``seconds`` in the unit that keeps it between 1 and 1000: ``380 µs``, ``12.5 ms``,
    ``1.83 s``, ``2.5 min``, ``3.2 h``; ``?`` for a missing value."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    sign, value = ("-" if seconds < 0 else ""), float(f"{abs(seconds):.3g}")
    if value >= 7200:
        return f"{sign}{_sig(value / 3600)} h"
    if value >= 120:
        return f"{sign}{_sig(value / 60)} min"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if value >= scale or unit == "µs":
            return f"{sign}{_sig(value / scale)} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def _sig(value: float) -> str:
    """3 significant digits without exponent: 1.83, 12.5, 380, 1,000 → '1000'."""
    if value == 0:
        return "0"
    digits = max(0, 2 - math.floor(math.log10(value)))
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
