"""Sample traces, loadable by name (like ``plotly.express.data``).

::

    trace = ek.datasets.load("shop-incident")

Both were recorded from the demo shop (:mod:`evtkit.demo`); ``data/README.md`` gives the exact
command lines, seeds and headline numbers. The traces are looked for in ``$EVTKIT_DATA``,
then in the ``data/`` directory of the source checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import env
from .errors import TraceFormatError
from .store import load as load_trace
from .trace import Trace

__all__ = ["load", "names", "path"]

DATASETS = {
    "shop-baseline": "shop-baseline.parquet",
    "shop-incident": "shop-incident.parquet",
}


def names() -> list[str]:
    """The names of the sample traces."""
    return sorted(DATASETS)


def _places() -> list[Path]:
    places = []
    if os.environ.get(env.EVTKIT_DATA):
        places.append(Path(os.environ[env.EVTKIT_DATA]))
    places.append(Path(__file__).resolve().parent.parent / "data")
    return places


def path(name: str) -> Path:
    """Where the sample trace ``name`` is.

    Raises:
        KeyError: no sample trace has that name.
        TraceFormatError: the file is not where it should be.
    """
    if name not in DATASETS:
        raise KeyError(f"no sample trace {name!r}; there are {', '.join(names())}")
    for place in _places():
        candidate = place / DATASETS[name]
        if candidate.exists():
            return candidate
    where = ", ".join(str(p) for p in _places())
    raise TraceFormatError(DATASETS[name], f"sample trace {name!r} not found in {where}; "
                           f"set {env.EVTKIT_DATA} to the directory that holds it")


def load(name: str) -> Trace:
    """Load the sample trace ``name`` (``shop-baseline`` or ``shop-incident``).

    ``shop-baseline``: 30 s of the demo shop at 20 orders/s, healthy. ``shop-incident``: the
    same load while billing slows down (backlog builds, some payments fail) and shipping
    stalls and recovers. Columns: see :mod:`evtkit.schema` (``trace.events``,
    ``trace.deliveries``, ``trace.observations``).
    """
    return load_trace(path(name))
