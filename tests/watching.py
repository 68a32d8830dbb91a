"""Watching what code under test asks of a real object, without changing what it gets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def calls_to(obj: Any, method: str, note: Callable[..., Any] = lambda *a, **k: a[0]
             ) -> list[Any]:
    """From now on, each call of ``obj.method`` still goes through and leaves
    ``note(*args, **kwargs)`` (by default its first argument) in the list returned."""
    seen: list[Any] = []
    real = getattr(obj, method)

    def call(*args: Any, **kwargs: Any) -> Any:
        seen.append(note(*args, **kwargs))
        return real(*args, **kwargs)

    setattr(obj, method, call)
    return seen
