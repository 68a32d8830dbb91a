"""Type stub of the compiled half of :mod:`evtkit._columns` (``evtkit/_columnar.c``)."""

from collections.abc import Sequence
from typing import Any

def split(
    rows: Sequence[tuple[Any, ...]], names: tuple[bytes, ...], cloudevents: tuple[bool, ...],
    traceparent: int, time: int, threads: int, /,
) -> tuple[Any, ...]: ...
