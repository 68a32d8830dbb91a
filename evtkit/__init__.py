"""evtkit: capture, analyse and share the behaviour of event-driven systems on NATS.

::

    import evtkit as ek
    bus = await ek.connect()                  # embedded nats-server when no URL / NATS_URL
    await bus.publish("orders.placed", {"order": 1}, source="shop")
    await bus.settle()                        # every handler done
    trace = bus.trace()                       # pandas frames inside
    trace.diagnose()                          # what went wrong, worst first
    trace.conformance("api.yaml").summary()   # traffic against its AsyncAPI document
    trace.save("run.parquet"); ek.load("run.parquet")
"""

from __future__ import annotations

import importlib.metadata as _metadata

from . import asyncapi, datasets, demo, testing
from .analysis.causal import Chain
from .analysis.compare import Comparison, compare
from .analysis.conformance import Conformance
from .analysis.diagnose import KINDS, Rules, diagnose
from .capture.bus import Bus, Subscription, Tap, connect, current_event
from .capture.jetstream import JetStreamSubscription, JetStreamWatch, Nak, Term
from .capture.msgtrace import MessageTraces
from .capture.recorder import Recorder
from .capture.server import MSG_TRACE_SUBJECT, EmbeddedCluster, EmbeddedServer, find_nats_server
from .capture.subscription_map import SubscriptionMap
from .capture.telemetry import TELEMETRY_SUBJECT, Collector, TelemetrySender
from .engine import Dataset, open
from .errors import (
    ConnectError,
    ContractError,
    EngineError,
    EvtkitError,
    JetStreamError,
    PayloadTooLargeError,
    PublishError,
    ServerError,
    ServerNotFoundError,
    ServerStartError,
    ServerTimeoutError,
    SettleTimeoutError,
    SpecError,
    SystemAccountError,
    TraceFormatError,
)
from .event import Event, decode_message, parse_traceparent
from .recording import record
from .replay import ReplayResult, replay
from .schema import as_bytes, as_dicts
from .share.contract import plot_conformance, plot_contract
from .share.graphs import plot_dag, plot_dependencies, plot_fanout, plot_waterfall
from .share.notebook import LiveView, export, live
from .share.plots import plot_backlog, plot_compare, plot_jetstream, plot_latency
from .share.report import report
from .share.table import readable
from .store import load
from .trace import Trace

try:
    __version__ = _metadata.version("evtkit")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "Bus",
    "Chain",
    "Collector",
    "Comparison",
    "Conformance",
    "ConnectError",
    "ContractError",
    "Dataset",
    "EmbeddedCluster",
    "EmbeddedServer",
    "EngineError",
    "Event",
    "EvtkitError",
    "JetStreamError",
    "JetStreamSubscription",
    "JetStreamWatch",
    "KINDS",
    "LiveView",
    "MSG_TRACE_SUBJECT",
    "MessageTraces",
    "Nak",
    "PayloadTooLargeError",
    "PublishError",
    "Recorder",
    "ReplayResult",
    "Rules",
    "ServerError",
    "ServerNotFoundError",
    "ServerStartError",
    "ServerTimeoutError",
    "SettleTimeoutError",
    "SpecError",
    "Subscription",
    "SubscriptionMap",
    "SystemAccountError",
    "TELEMETRY_SUBJECT",
    "Tap",
    "TelemetrySender",
    "Term",
    "Trace",
    "TraceFormatError",
    "__version__",
    "as_bytes",
    "as_dicts",
    "asyncapi",
    "compare",
    "connect",
    "current_event",
    "datasets",
    "decode_message",
    "demo",
    "diagnose",
    "export",
    "find_nats_server",
    "live",
    "load",
    "open",
    "parse_traceparent",
    "plot_backlog",
    "plot_compare",
    "plot_conformance",
    "plot_contract",
    "plot_dag",
    "plot_dependencies",
    "plot_fanout",
    "plot_jetstream",
    "plot_latency",
    "plot_waterfall",
    "readable",
    "record",
    "replay",
    "report",
    "testing",
]
