"""A trace: captured observations plus metadata, with tidy views derived from them.

::

    trace = bus.trace()            # or ek.load("run.parquet")
    trace.events                   # one row per event
    trace.deliveries               # one row per event × consumer
    trace.observations             # the raw rows (what files store)
    trace.drops, trace.gaps        # what was lost, and when the connection was down
    trace.consumer_info            # JetStream consumer samples (bus.watch_jetstream)
    trace.advisories, trace.hops   # JetStream advisories; server message-trace hops
    trace.with_spec("api.yaml")    # the same trace held against its event definitions:
                                   #   problems() and diagnose() name what breaks them
    trace.save("run.parquet")
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cached_property, wraps
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

import numpy as np
import pandas as pd

from ._memory import give_back
from ._views import deliveries_of, events_of
from .observation import hop_event_ids
from .schema import SCHEMA_VERSION, as_dicts, positions

if TYPE_CHECKING:
    from .analysis.causal import Chain
    from .analysis.conformance import Conformance
    from .analysis.diagnose import Rules
    from .asyncapi import Spec

__all__ = ["Trace"]

T = TypeVar("T")
_DERIVED = ("events", "deliveries", "consumer_info", "advisories", "hops")
"""The frames derived from the observations once and kept (cached properties)."""
_SHARED = ("event_rows", "delivery_events", "lineage", "conformance")
"""Cached results a trace shares with :meth:`Trace.with_spec` copies (no spec in them)."""
P = ParamSpec("P")


def _then_give_back(method: Callable[Concatenate[Trace, P], T]
                    ) -> Callable[Concatenate[Trace, P], T]:
    """An analysis that, once done, hands what its temporaries held back to the system
    (on a large trace; see :mod:`evtkit._memory`), so it does not add to the next one's
    peak."""
    @wraps(method)
    def run(self: Trace, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(self, *args, **kwargs)
        finally:
            give_back(len(self.observations))
    return run


def _read_spec(spec: Spec | str | os.PathLike[str] | dict[str, Any] | None) -> Spec | None:
    if spec is None:
        return None
    from .asyncapi import load

    return load(spec)


class Trace:
    """Observations and metadata of one capture, with derived ``events`` and ``deliveries``.

    The frames are for reading: a column without any value is one missing value seen from
    every row, which takes no memory (a trace loaded from a file has many such); take a
    ``.copy()`` of a frame before writing into it in place. On a large trace (200,000 rows
    or more) each analysis hands the memory it freed back to the system, and the first
    fixes glibc's mmap threshold for the process at 8 MiB (``EVTKIT_MALLOC=keep`` leaves
    the allocator as it is; see :mod:`evtkit._memory`).

    Args:
        observations: a frame with the columns of :data:`evtkit.schema.OBSERVATIONS`.
        metadata: capture metadata (server, client, times, ...); JSON-serialisable.
        spec: event definitions to hold the traffic against (see :attr:`spec`): a
            :class:`~evtkit.asyncapi.Spec`, or an AsyncAPI document to read (path, URL or
            dict).

    Raises:
        SpecError: ``spec`` is a document that cannot be read.
    """

    def __init__(self, observations: pd.DataFrame, metadata: dict[str, Any] | None = None,
                 *, spec: Spec | str | os.PathLike[str] | dict[str, Any] | None = None):
        self.observations = observations
        self.metadata: dict[str, Any] = {"schema_version": SCHEMA_VERSION, **(metadata or {})}
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._spec = _read_spec(spec)

    # -- event definitions -------------------------------------------------------------------

    @property
    def spec(self) -> Spec | None:
        """The event definitions attached to this trace (``ek.load(..., spec=)``,
        :meth:`with_spec`), or None. With one, :meth:`problems` and :meth:`diagnose`
        include what :meth:`conformance` finds: events that break their schema and
        undeclared subjects, producers and consumers."""
        return self._spec

    def with_spec(self, spec: Spec | str | os.PathLike[str] | dict[str, Any] | None
                  ) -> Trace:
        """This trace with ``spec`` attached (None: without one): a new :class:`Trace`
        sharing this one's frames and the results that do not depend on the spec.

        Raises:
            SpecError: ``spec`` is a document that cannot be read.
        """
        other = Trace(self.observations, self.metadata, spec=spec)
        for name in _DERIVED:  # frames derived already: shared, not derived again
            if name in self.__dict__:
                other.__dict__[name] = self.__dict__[name]
        other._cache.update({k: v for k, v in self._cache.items() if k[0] in _SHARED})
        return other

    # -- derived views ---------------------------------------------------------------------

    @cached_property
    def events(self) -> pd.DataFrame:
        """One row per event; columns in :data:`evtkit.schema.EVENTS`."""
        frame, rows = events_of(self.observations)
        self._cache[("event_rows",)] = rows
        give_back(len(self.observations))  # (in the cached property: see _then_give_back)
        return frame

    @property
    def event_rows(self) -> np.ndarray:
        """For each row of :attr:`events`, the position in :attr:`observations` of the row
        that describes it (its publish, else a tap, else a receive) — e.g. for its bytes."""
        _ = self.events  # deriving the events records these positions
        return cast(np.ndarray, self._cache.get(("event_rows",), np.zeros(0, np.int64)))

    @cached_property
    def deliveries(self) -> pd.DataFrame:
        """One row per event × consumer; columns in :data:`evtkit.schema.DELIVERIES`."""
        frame, where = deliveries_of(self.observations, self.events)
        self._cache[("delivery_events",)] = where
        give_back(len(self.observations))
        return frame

    @property
    def delivery_events(self) -> np.ndarray:
        """For each row of :attr:`deliveries`, the position of its event in :attr:`events`
        (-1 if the event is unknown): the join every analysis needs, computed once."""
        dv = self.deliveries  # deriving the deliveries records these positions
        return self._memo(("delivery_events",), lambda: positions(dv["event_id"],
                                                                  self.events["event_id"]))

    # -- what the server said ------------------------------------------------------------------

    def _server_rows(self, kind: str, columns: dict[str, str]) -> pd.DataFrame:
        """Rows of one server-side kind, with observation columns renamed for the view."""
        obs = self.observations
        rows = obs.loc[(obs["kind"] == kind).to_numpy(), list(columns)]
        return rows.rename(columns=columns).reset_index(drop=True)

    @cached_property
    def consumer_info(self) -> pd.DataFrame:
        """JetStream consumer samples (from :meth:`Bus.watch_jetstream`), one row per
        consumer per sample: ``ts, stream, consumer, pending, ack_pending, redelivered,
        waiting, delivered_seq, delivered_stream_seq, ack_floor, last_active, backlog``.

        ``backlog`` = ``pending + ack_pending``: messages stored but not yet acknowledged
        by this consumer — its lag in messages."""
        frame = self._server_rows("consumer_info", {
            "ts": "ts", "stream": "stream", "consumer": "consumer", "pending": "pending",
            "ack_pending": "ack_pending", "redelivered": "redelivered", "waiting": "waiting",
            "consumer_seq": "delivered_seq", "stream_seq": "delivered_stream_seq",
            "ack_floor": "ack_floor", "last_active": "last_active",
        })
        frame["backlog"] = frame["pending"] + frame["ack_pending"]
        return frame

    @cached_property
    def advisories(self) -> pd.DataFrame:
        """JetStream advisories: ``ts, advisory`` (MAX_DELIVERIES, MSG_NAKED,
        MSG_TERMINATED...), ``stream, consumer, stream_seq, deliveries, subject, payload``
        (the advisory's JSON)."""
        return self._server_rows("advisory", {
            "ts": "ts", "detail": "advisory", "stream": "stream", "consumer": "consumer",
            "stream_seq": "stream_seq", "delivery_count": "deliveries", "subject": "subject",
            "payload": "payload",
        })

    @cached_property
    def hops(self) -> pd.DataFrame:
        """Server message-trace hops (nats-server 2.11+): ``ts`` (server time), ``server``,
        ``hop`` (``in``: a connection sent it; ``eg``: delivered to a client connection;
        ``rt``/``gw``/``leaf``: passed to another server; ``js``: stored in a stream),
        ``connection`` (its name; for ``js``, the stream's), ``queue``, ``subject``,
        ``event_id`` (for a message without ``ce-id``: the one evtkit saw with the same
        ``traceparent`` and subject), ``trace_id``,
        ``error`` (why it was not delivered, if so), ``trace_only`` (published with
        ``trace="only"``: not delivered, the hops say who *would* have received it)."""
        frame = self._server_rows("hop", {
            "ts": "ts", "server": "server", "detail": "hop", "consumer": "connection",
            "queue": "queue", "subject": "subject", "event_id": "event_id",
            "trace_id": "trace_id", "error": "error", "headers": "headers",
        })
        frame["trace_only"] = np.array([
            isinstance(h, dict) and any(k.lower() == "nats-trace-only" and v.lower() == "true"
                                        for k, v in h.items())
            for h in as_dicts(frame.pop("headers"))
        ], dtype=bool)
        frame["event_id"] = hop_event_ids(self.observations).array
        return frame

    # -- analysis: one-line hand-offs to evtkit.analysis (causal, lag, fanout, problems) --

    @_then_give_back
    def lineage(self, *, infer: bool = True, window_s: float = 1.0) -> pd.DataFrame:
        """How each event links to its cause; see :func:`evtkit.analysis.causal.lineage`."""
        from .analysis.causal import lineage

        return self._memo(("lineage", infer, window_s),
                          lambda: lineage(self, infer=infer, window_s=window_s))

    @_then_give_back
    def chains(self, *, infer: bool = True) -> pd.DataFrame:
        """One row per flow; see :func:`evtkit.analysis.chains.chains`."""
        from .analysis.chains import chains

        return chains(self, infer=infer)

    def chain(self, correlation_id: str, *, infer: bool = True) -> Chain:
        """One flow as a DAG of nodes and edges; see :func:`evtkit.analysis.causal.chain`."""
        from .analysis.causal import chain

        return chain(self, correlation_id, infer=infer)

    def critical_path(self, correlation_id: str, *, infer: bool = True) -> pd.DataFrame:
        """The segments that set a flow's end time; see
        :func:`evtkit.analysis.causal.critical_path`."""
        from .analysis.causal import critical_path

        return critical_path(self, correlation_id, infer=infer)

    def slowest_flows(self, top: int = 10) -> pd.DataFrame:
        """The slowest flows, when they started and their bottleneck; see
        :func:`evtkit.analysis.bottleneck.slowest_flows`."""
        from .analysis.bottleneck import slowest_flows

        return self._memo(("slowest_flows", top), lambda: slowest_flows(self, top))

    @_then_give_back
    def lag(self, freq: str | pd.Timedelta | None = None, **options: Any) -> pd.DataFrame:
        """One row per consumer: latency percentiles and lag status; see
        :func:`evtkit.analysis.lag.lag`."""
        from .analysis.lag import lag

        return lag(self, freq, **options)

    @_then_give_back
    def backlog(self, freq: str | pd.Timedelta | None = None) -> pd.DataFrame:
        """Lag in messages and seconds over time, per consumer; see
        :func:`evtkit.analysis.lag.backlog`."""
        from .analysis.lag import backlog

        return backlog(self, freq)

    @_then_give_back
    def lag_status(self, freq: str | pd.Timedelta | None = None, **options: Any
                   ) -> pd.DataFrame:
        """Status of every sliding window, per consumer; see
        :func:`evtkit.analysis.lag.lag_status`."""
        from .analysis.lag import lag_status

        return lag_status(self, freq, **options)

    @_then_give_back
    def fanout(self) -> pd.DataFrame:
        """One row per subject and type: who consumes it; see
        :func:`evtkit.analysis.fanout.fanout`."""
        from .analysis.fanout import fanout

        return fanout(self)

    @_then_give_back
    def flow_graph(self) -> pd.DataFrame:
        """The observed service graph as edges; see :func:`evtkit.analysis.fanout.flow_graph`."""
        from .analysis.fanout import flow_graph

        return flow_graph(self)

    @_then_give_back
    def diagnose(self, baseline: Trace | None = None, *, rules: Rules | None = None
                 ) -> pd.DataFrame:
        """What went wrong — where, when, how much, cause or symptom — worst first; see
        :func:`evtkit.analysis.diagnose.diagnose`."""
        from .analysis.diagnose import diagnose

        return self._memo(("diagnose", baseline, rules),
                          lambda: diagnose(self, baseline, rules=rules))

    @_then_give_back
    def problems(self) -> pd.DataFrame:
        """Everything that looks wrong, one row per finding — with a :attr:`spec`, events
        that break their schema and undeclared subjects, producers and consumers too; see
        :func:`evtkit.analysis.problems.problems`."""
        from .analysis.problems import problems

        return problems(self)

    def conformance(self, spec: Spec | str | os.PathLike[str] | dict[str, Any]
                    ) -> Conformance:
        """Every event checked against event definitions — a :class:`~evtkit.asyncapi.Spec`
        or an AsyncAPI document to read (path, URL or dict): ``.events`` (one row per
        event: channel, message, valid, violations), ``.summary()`` (undeclared subjects,
        producers and consumers, unused channels and operations, violations per message);
        see :func:`evtkit.analysis.conformance.conformance`."""
        from .analysis.conformance import conformance
        from .asyncapi import load

        spec = load(spec)
        return self._memo(("conformance", spec), lambda: conformance(self, spec))

    # -- the cache ---------------------------------------------------------------------------

    def _memo(self, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
        """``compute()`` once per ``key`` (until :meth:`clear_cache`)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return cast(T, self._cache[key])

    def clear_cache(self, what: str | None = None) -> None:
        """Forget derived results so the next use computes them again.

        Args:
            what: only this one (``"lineage"``, ``"events"``, ``"deliveries"``...);
                default: everything derived (frames and analysis results).
        """
        for key in [k for k in self._cache if what is None or k[0] == what]:
            del self._cache[key]
        for name in _DERIVED:
            if what in (None, name):
                self.__dict__.pop(name, None)

    # -- counters --------------------------------------------------------------------------

    @property
    def drops(self) -> int:
        """Messages lost: slow-consumer drops reported by the client plus deliveries dropped
        because a handler fell behind its pending limits."""
        obs = self.observations
        reported = obs.loc[obs["kind"] == "drop", "count"].fillna(1).sum()
        dropped = ((obs["kind"] == "handled") & (obs["outcome"] == "dropped")).sum()
        return int(reported + dropped)

    @property
    def gaps(self) -> pd.DataFrame:
        """Connection gaps: one row per disconnect with ``observer, start, end, gap_s``
        (``end`` is NaT if the connection never came back during the capture)."""
        obs = self.observations
        rows = []
        for observer, group in obs[obs["kind"].isin(("disconnect", "reconnect"))].groupby(
            "observer", sort=True
        ):
            start = None
            for kind, ts in zip(group["kind"], group["ts"], strict=True):
                if kind == "disconnect" and start is None:
                    start = ts
                elif kind == "reconnect" and start is not None:
                    rows.append((observer, start, ts))
                    start = None
            if start is not None:
                rows.append((observer, start, pd.NaT))
        frame = pd.DataFrame(rows, columns=["observer", "start", "end"]).astype(
            {"observer": "str", "start": "datetime64[ns, UTC]", "end": "datetime64[ns, UTC]"}
        )
        frame["gap_s"] = (frame["end"] - frame["start"]).dt.total_seconds()
        return frame

    @property
    def errors(self) -> int:
        """Handler calls that raised."""
        obs = self.observations
        return int(((obs["kind"] == "handled") & (obs["outcome"] == "error")).sum())

    # -- summary ---------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Headline numbers: time span, counts of events, deliveries, consumers, subjects,
        drops, gaps, handler errors, pending deliveries, JetStream advisories and
        message-trace hops."""
        obs = self.observations
        start, end = (obs["ts"].min(), obs["ts"].max()) if len(obs) else (pd.NaT, pd.NaT)
        deliveries = self.deliveries
        gaps = self.gaps
        return {
            "start": start,
            "end": end,
            "duration_s": float((end - start).total_seconds()) if len(obs) else 0.0,
            "observations": len(obs),
            "events": len(self.events),
            "deliveries": len(deliveries),
            "subjects": int(self.events["subject"].nunique()),
            "consumers": int(deliveries["consumer"].nunique()),
            "drops": self.drops,
            "handler_errors": self.errors,
            "gaps": len(gaps),
            "gap_s": float(gaps["gap_s"].fillna(0).sum()),
            "pending": int((deliveries["outcome"] == "pending").sum()),
            "advisories": len(self.advisories),
            "hops": len(self.hops),
        }

    def verdict(self) -> list[str]:
        """What to read first: one sentence per critical finding of :meth:`diagnose`, or
        that nothing went wrong; see :func:`evtkit.analysis.finding.headlines`."""
        from .analysis.finding import headlines

        return headlines(self.diagnose(), failed=self.lag)

    def describe(self) -> str:
        """A one-screen text summary, the verdict first (what ``evtkit info`` prints)."""
        from .overview import describe

        return describe(self)

    def _repr_html_(self) -> str:
        from .overview import to_html

        return to_html(self)

    def __repr__(self) -> str:
        return (
            f"<Trace {len(self.observations):,} observations, {len(self.events):,} events, "
            f"{len(self.deliveries):,} deliveries>"
        )

    def __len__(self) -> int:
        return len(self.events)

    # -- files -----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the trace to ``path``: ``.parquet`` (native) or ``.jsonl`` (``.gz`` ok).

        Returns:
            The path written.
        """
        from .store import save

        return save(self, path)

