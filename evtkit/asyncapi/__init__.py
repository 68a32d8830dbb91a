"""Event definitions: AsyncAPI documents read, and traffic checked against them.

Teams declare their events as AsyncAPI documents (3.0, or 2.0–2.6): channels with
``{parameters}`` in their addresses, messages with JSON Schema payloads and headers, and
which application sends and which receives. evtkit holds what was declared against what
a trace shows::

    import evtkit as ek
    spec = ek.asyncapi.load("api.yaml")          # a Spec; SpecError names a bad place
    result = trace.conformance(spec)             # or ek.asyncapi.conformance(trace, spec)
    result.events                                # one row per event: channel, message,
                                                 #   valid, violations (JSON pointers)
    result.summary()                             # undeclared subjects, producers and
                                                 #   consumers; unused channels and
                                                 #   operations; violations per message

From a shell, ``evtkit check run.parquet --spec api.yaml`` prints the same and exits 1
when the traffic does not conform (for CI pipelines).

The other way round, a document is inferred from traffic (channels with ``{parameters}``,
JSON Schemas of payloads and headers, who sends and who receives, observed rates and
latencies under ``x-evtkit``)::

    text = ek.asyncapi.infer(trace)              # AsyncAPI 3.0, YAML text
    doc = ek.asyncapi.infer_document(trace)      # the same as a dict; load(doc) reads it

and from a shell with ``evtkit infer run.parquet --out api.yaml``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import SpecError
from .document import load
from .infer import infer, infer_document
from .spec import Channel, Message, Operation, Server, Spec, subject_pattern

if TYPE_CHECKING:
    import os

    from ..analysis.conformance import Conformance
    from ..trace import Trace

__all__ = ["Channel", "Message", "Operation", "Server", "Spec", "SpecError", "conformance",
           "infer", "infer_document", "load", "subject_pattern"]


def conformance(trace: Trace, spec: Spec | str | os.PathLike[str] | dict[str, Any]
                ) -> Conformance:
    """``trace`` checked against ``spec`` (a :class:`Spec`, or what :func:`load` reads);
    see :func:`evtkit.analysis.conformance.conformance`."""
    from ..analysis.conformance import conformance as check

    return check(trace, load(spec))
