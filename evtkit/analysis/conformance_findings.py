"""What a conformance check found, as findings and as text (see
:mod:`evtkit.analysis.conformance`).

=======================  =================================================================
``violations``           events on a channel that break their message's schema, per message
``undeclared_subject``   events on a subject no channel's address matches, per subject
                         (tokens that look like ids — numbers, UUIDs — shown as ``*``)
``undeclared_producer``  a sender the document does not declare on a channel that declares
                         senders (by connection name or ``ce-source``)
``undeclared_consumer``  a consumer the document does not declare on a channel that
                         declares receivers
``unused_channel``       a declared channel no event was seen on
``unused_operation``     a declared send/receive not seen on a channel that was (receives
                         are judged only when the trace recorded consumers)
=======================  =================================================================

The first four make ``evtkit check`` fail; the last two say what the trace did not cover.
Application names are compared without regard to case.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._units import clock, count, duration, percent

if TYPE_CHECKING:
    from ..asyncapi.spec import Spec
    from .conformance import Conformance

__all__ = ["FAILING", "KINDS", "SUMMARY", "describe", "findings"]

KINDS = ("violations", "undeclared_subject", "undeclared_producer", "undeclared_consumer",
         "unused_channel", "unused_operation")
"""Finding kinds, in the order the summary lists them."""
FAILING = KINDS[:4]
"""Kinds that mean the traffic does not conform."""
SUMMARY = ["kind", "channel", "subject", "message", "application", "count", "first_seen",
           "last_seen", "event_id", "evidence"]
"""Columns of :meth:`Conformance.summary`."""


def findings(result: Conformance) -> pd.DataFrame:
    """The findings of ``result``, one row each (columns :data:`SUMMARY`)."""
    spec, res = result.spec, result.events
    rows: list[dict[str, Any]] = []
    matched = res["channel"].notna().to_numpy()
    at = res["published_at"]

    invalid = res[res["valid"].eq(False).fillna(False).to_numpy()]
    if len(invalid):
        totals = res.groupby(["channel", "message"], observed=True).size()
    for (channel, message), group in invalid.groupby(["channel", "message"], observed=True,
                                                     sort=True):
        total = int(totals[(channel, message)])
        where = Counter((v["part"], v["path"]) for found in group["violations"]
                        for v in found)
        (part, path), times = where.most_common(1)[0]
        example = next(v["message"] for found in group["violations"] for v in found
                       if (v["part"], v["path"]) == (part, path))
        rows.append(_row("violations", group, channel=channel, message=message, evidence=(
            f"{count(len(group))} of {_events(total, str(message))} on {channel!r} "
            f"({percent(len(group) / total)}) break its schema, {_span(group)}; most often "
            f"at {part} {path or 'as a whole'} ({_events(times)}), e.g. {example}")))

    senders = _Senders(result.trace.events)
    stray = res[~matched]
    subjects = stray["subject"].cat.remove_unused_categories()  # each generalised once
    shapes = np.array([_generalised(s) for s in subjects.cat.categories] + ["?"], dtype=object)
    for subject, group in stray.groupby(shapes[subjects.cat.codes.to_numpy()], sort=True):
        example = str(group["subject"].iloc[0])
        rows.append(_row("undeclared_subject", group, subject=subject, evidence=(
            f"{_events(len(group))} on {subject!r}"
            f"{f' (e.g. {example})' if example != subject else ''} {_span(group)} matched "
            f"no channel of {spec.title!r}{_by(senders.names(group.index.to_numpy()))}")))

    for channel_id, group in res[matched].groupby("channel", observed=True, sort=True):
        declared = {a.casefold() for a in spec.producers(str(channel_id))}
        if not declared:
            continue
        at_rows = group.index.to_numpy()
        alien = senders.known[at_rows] & ~senders.among(at_rows, declared)
        shown = senders.shown[at_rows[alien]]
        for name, bad in group[alien].groupby(shown, sort=True):
            rows.append(_row("undeclared_producer", bad, channel=channel_id,
                             application=name, evidence=(
                f"{name!r} published {_events(len(bad))} on {channel_id!r} "
                f"{_span(bad)}, which the document declares only "
                f"{_list(spec.producers(str(channel_id)))} to send")))

    rows += _consumers(result)
    seen = set(res["channel"].dropna().astype(str))
    span = duration((at.max() - at.min()).total_seconds()) if len(at) else "0 s"
    for channel in spec.channels.values():
        if channel.subject is not None and channel.id not in seen:
            rows.append(_row("unused_channel", None, channel=channel.id,
                             subject=channel.subject, evidence=(
                f"channel {channel.id!r} ({channel.subject}) is declared, but none of the "
                f"{_events(len(res))} in {span} of traffic was on it")))
    rows += _operations(result, seen, senders)
    return _frame(rows)


def _channels(spec: Spec, subjects: pd.Series) -> pd.Series:
    """The id of the channel of each subject (missing: none), each distinct subject
    matched once."""
    subjects = subjects.astype("category")
    ids = np.array([c.id for c in spec.channels.values()] + [None], dtype=object)
    of_subject = spec.match_all(subjects.cat.categories.tolist())
    codes = subjects.cat.codes.to_numpy()
    found = np.where(codes >= 0, of_subject[np.maximum(codes, 0)] if len(of_subject) else -1,
                     -1)
    return pd.Series(ids[found], index=subjects.index, dtype=object)


def _consumers(result: Conformance) -> list[dict[str, Any]]:
    spec, dv = result.spec, result.trace.deliveries
    if not len(dv):
        return []
    frame = pd.DataFrame({"channel": _channels(spec, dv["subject"]),
                          "consumer": dv["consumer"].astype(object),
                          "subject": dv["subject"].astype(object),
                          "published_at": dv["received_at"].fillna(dv["published_at"]),
                          "event_id": dv["event_id"].astype(object)})
    rows = []
    frame = frame[frame["channel"].notna() & frame["consumer"].notna()]
    for (channel_id, consumer), group in frame.groupby(["channel", "consumer"], sort=True):
        declared = {a.casefold() for a in spec.consumers(channel_id)}
        if declared and consumer.casefold() not in declared:
            rows.append(_row("undeclared_consumer", group, channel=channel_id,
                             application=consumer, evidence=(
                f"{consumer!r} received {_events(len(group))} on {channel_id!r} "
                f"{_span(group)}, which the document declares only "
                f"{_list(spec.consumers(channel_id))} to receive")))
    return rows


def _operations(result: Conformance, seen: set[str], senders: _Senders
                ) -> list[dict[str, Any]]:
    spec, res, dv = result.spec, result.events, result.trace.deliveries
    receivers: dict[str, set[str]] = {}
    if len(dv):
        pairs = pd.DataFrame({"channel": _channels(spec, dv["subject"]),
                              "consumer": dv["consumer"].astype(object)}).dropna()
        for channel_id, consumer in pairs.drop_duplicates().itertuples(index=False):
            receivers.setdefault(channel_id, set()).add(str(consumer).casefold())
    channel_of = res["channel"]
    rows = []
    for op in spec.operations.values():
        if op.channel not in seen:
            continue  # reported as an unused channel
        app = op.application.casefold()
        if op.action == "send":
            on = np.flatnonzero((channel_of == op.channel).to_numpy(dtype=bool,
                                                                     na_value=False))
            if not senders.known[on].any() or senders.among(on, {app}).any():
                continue  # seen, or no event on the channel says who sent it
            what = f"no event on {op.channel!r} came from {op.application!r}"
        else:
            if not len(dv) or app in receivers.get(op.channel, set()):
                continue  # seen, or the trace recorded no consumers
            what = f"{op.application!r} received none of the events on {op.channel!r}"
        rows.append(_row("unused_operation", None, channel=op.channel,
                         application=op.application, evidence=(
            f"operation {op.id!r} ({op.application} {op.action}s on {op.channel!r}) is "
            f"declared but was not seen: {what}")))
    return rows


def describe(result: Conformance, *, examples: int = 10) -> str:
    """The verdict, one line per finding and up to ``examples`` violations, as text."""
    spec, res = result.spec, result.events
    found = result.summary()
    valid = res["valid"]
    lines = [f"{spec.title} {spec.version} (AsyncAPI {spec.asyncapi}, {spec.source}): "
             f"{_events(len(res))}, {count(valid.eq(True).sum())} conform, "
             f"{count(valid.eq(False).sum())} break their schema, "
             f"{count(valid.isna().sum())} on undeclared subjects"]
    failing = found[found["kind"].isin(FAILING)]
    lines.append("conforms: nothing undeclared or invalid" if failing.empty else
                 f"does not conform: {count(len(failing))} finding"
                 f"{'' if len(failing) == 1 else 's'}")
    if len(found):
        lines.append("")
        width = max(len(k) for k in found["kind"])
        lines += [f"  {row.kind:<{width}}  {count(row.count):>8}  {row.evidence}"
                  for row in found.itertuples(index=False)]
    bad = result.violations.head(examples)
    if len(bad):
        lines += ["", f"violations (first {count(len(bad))} of {count(len(result.violations))}):"]
        lines += [f"  {row.event_id}  {row.subject}  {row.part}"
                  f"{' ' + row.path if row.path else ''}: {row.detail}"
                  for row in bad.itertuples(index=False)]
    return "\n".join(lines)


# -- helpers ---------------------------------------------------------------------------------


def _row(kind: str, group: pd.DataFrame | None, **values: Any) -> dict[str, Any]:
    row = {"kind": kind, "count": 0, "first_seen": pd.NaT, "last_seen": pd.NaT,
           "event_id": None, **values}
    if group is not None and len(group):
        subjects = sorted({_generalised(s) for s in group["subject"].dropna().unique()})
        row.update(count=len(group), first_seen=group["published_at"].min(),
                   last_seen=group["published_at"].max(),
                   event_id=str(group["event_id"].iloc[0]))
        row.setdefault("subject", ", ".join(subjects[:3]) + (", …" if len(subjects) > 3
                                                             else ""))
    return row


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=SUMMARY)
    order = {k: i for i, k in enumerate(KINDS)}
    if len(frame):
        frame = frame.assign(_k=frame["kind"].map(order)).sort_values(
            ["_k", "count"], ascending=[True, False], kind="stable").drop(columns="_k")
    frame = frame.reset_index(drop=True).astype({
        "kind": "str", "channel": "str", "subject": "str", "message": "str",
        "application": "str", "count": "int64", "event_id": "str"})
    for column in ("first_seen", "last_seen"):
        frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[ns, UTC]")
    return frame


_HEX = re.compile(r"[0-9a-fA-F-]{8,}")
_DIGITS = re.compile(r"\d{4,}")


def _generalised(subject: object) -> str:
    """A subject with the tokens that look like ids (numbers, UUIDs and long hex, or
    holding four digits in a row) as ``*``, so ``orders.41.shipped`` and
    ``orders.42.shipped`` are one finding."""
    if not isinstance(subject, str):
        return "?"
    return ".".join("*" if _id_like(t) else t for t in subject.split("."))


def _id_like(token: str) -> bool:
    return token.isdigit() or _DIGITS.search(token) is not None or (
        _HEX.fullmatch(token) is not None and any(c.isdigit() for c in token))


def _events(n: int, what: str = "") -> str:
    """``1 event``, ``1,204 OrderPlaced events``."""
    return f"{count(n)} {what + ' ' if what else ''}event{'' if n == 1 else 's'}"


def _span(group: pd.DataFrame) -> str:
    first, last = group["published_at"].min(), group["published_at"].max()
    if pd.isna(first):
        return "(time unknown)"
    if first == last:
        return f"at {clock(first)}"
    return f"from {clock(first)} to {clock(last)} ({duration((last - first).total_seconds())})"


class _Senders:
    """Who sent each event: the names it goes by (its ``ce-source`` and its producer's
    connection name), read per distinct name.

    Attributes:
        known: per event, whether either name is known.
        shown: per event, the name to show (the source, else the producer), or None.
    """

    def __init__(self, ev: pd.DataFrame) -> None:
        self._codes: list[np.ndarray] = []
        self._folded: list[list[str]] = []
        shown = []
        for column in (ev["source"], ev["producer"]):
            names = column.astype("category")
            self._codes.append(names.cat.codes.to_numpy())
            self._folded.append([str(n).casefold() for n in names.cat.categories])
            shown.append(np.array([*map(str, names.cat.categories), None], dtype=object))
        (source, producer), (by_source, by_producer) = self._codes, shown
        self.shown = np.where(source >= 0, by_source[source], by_producer[producer])
        self.known = (source >= 0) | (producer >= 0)

    def among(self, rows: np.ndarray, declared: set[str]) -> np.ndarray:
        """Per event at ``rows``: whether one of its names is in ``declared`` (casefolded)."""
        out = np.zeros(len(rows), bool)
        for codes, folded in zip(self._codes, self._folded, strict=True):
            hit = np.array([n in declared for n in folded] + [False], bool)
            out |= hit[codes[rows]]  # (code -1, a missing name: the False at the end)
        return out

    def names(self, rows: np.ndarray) -> list[str]:
        """The names shown for the events at ``rows``, sorted, once each."""
        return sorted({n for n in self.shown[rows] if isinstance(n, str)})


def _by(senders: list[str]) -> str:
    return f" (published by {_list(senders)})" if senders else ""


def _list(names: Any) -> str:
    names = [f"{n!r}" for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" and {names[-1]}"
