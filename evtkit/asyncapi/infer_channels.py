"""Channel addresses from observed subjects: which subject tokens become ``{parameters}``
(for :func:`evtkit.asyncapi.infer`).

::

    found = addresses({"orders.1.placed": 1, "orders.2.placed": 1, "orders.eu.paid": 9,
                       "orders.us.paid": 7})
    [a.address for a in found]       # ['orders.eu.paid', 'orders.us.paid',
                                     #  'orders.{orderId}.placed']

**The rule.** Subjects are compared token by token (NATS tokens are separated by ``.``).
Among subjects that agree on every other token, a token position becomes a parameter when
its values are

1. *ids*: the values that look like ids — a number, a UUID or other hex of 8+ characters
   with a digit, or anything holding 4 digits in a row (the test the conformance summary
   uses to group undeclared subjects) — are at least 2 distinct values: those become the
   parameter; other values at that place stay literal channels; or
2. *many*: at least :data:`MIN_VALUES` distinct values, and at least :data:`MIN_SHARE` as
   many values as messages (most values seen once or twice: keys, not an enumeration):
   all of them become the parameter.

So ``orders.1.placed``, ``orders.2.placed`` … give ``orders.{orderId}.placed``, while
``eu``/``us`` (a few values, each seen many times) stay literal: ``orders.eu.paid``,
``orders.us.paid``. The rule is applied again to what it produced until nothing changes, so
several positions can become parameters (``tenants.{tenantId}.orders.{orderId}``). A token
that cannot be written literally in an address — holding ``{`` or ``}``, or a wildcard
``*``/``>`` — is always a parameter.

A parameter is named after the literal token before it, singular, plus ``Id``
(``orders.{orderId}``, ``tenants.{tenantId}``), else ``token<position>``.

Finally each subject is assigned to the channel that reading the document back will pick
for it (the most specific matching address, the first on a tie: see
:meth:`Spec.match <evtkit.asyncapi.Spec.match>`), so what is inferred for a channel is
exactly what will be checked against it.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from .spec import Channel

__all__ = ["MIN_SHARE", "MIN_VALUES", "Address", "addresses", "is_id_like"]

MIN_VALUES = 10
"""Distinct values a token position needs (when they are not ids) to become a parameter."""
MIN_SHARE = 0.5
"""…and how many distinct values per message it needs at least."""
_EXAMPLES = 3

_HEX = re.compile(r"[0-9a-fA-F-]{8,}")
_DIGITS = re.compile(r"\d{4,}")
_WORDS = re.compile(r"[A-Za-z0-9]+")
_NOT_ID = re.compile(r"[^A-Za-z0-9._-]")


def is_id_like(token: str) -> bool:
    """Whether a subject token looks like an id: digits, a UUID or long hex with a digit,
    or holding four digits in a row."""
    return token.isdigit() or _DIGITS.search(token) is not None or (
        _HEX.fullmatch(token) is not None and any(c.isdigit() for c in token))


@dataclass(frozen=True, slots=True)
class Address:
    """One inferred channel address.

    Attributes:
        address: with ``{parameters}``, e.g. ``orders.{orderId}.placed``.
        id: a channel id derived from it (``orders.orderId.placed``), unique.
        parameters: name → (token position, a few values seen, distinct values seen).
        subjects: the observed subjects it carries (those for which it is the match), in
            the order of ``counts``.
    """

    address: str
    id: str
    parameters: dict[str, tuple[int, tuple[str, ...], int]]
    subjects: tuple[str, ...]


@dataclass
class _Pattern:
    tokens: tuple[str | None, ...]  # None: a parameter
    subjects: dict[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(self.subjects.values())


def addresses(counts: Mapping[str, int], *, min_values: int = MIN_VALUES,
              min_share: float = MIN_SHARE) -> list[Address]:
    """Channel addresses for the observed subjects (see the module's docstring).

    Args:
        counts: messages seen per subject (in the order they were first seen).
        min_values: see :data:`MIN_VALUES`.
        min_share: see :data:`MIN_SHARE`.

    Returns:
        The addresses in document order (sorted), each with the subjects it carries;
        the empty subject gets none.
    """
    patterns: dict[tuple[str | None, ...], _Pattern] = {}
    for subject, n in counts.items():
        if not subject:
            continue  # no address can hold the empty subject (nor can NATS publish on it)
        tokens = tuple(None if _forced(t) else t for t in subject.split("."))
        patterns.setdefault(tokens, _Pattern(tokens)).subjects[subject] = n
    changed = True
    while changed:
        changed = False
        width = max((len(t) for t in patterns), default=0)
        for i in range(width):
            merged = _generalise(patterns, i, min_values, min_share)
            changed = changed or merged
    first = {subject: i for i, subject in enumerate(counts)}
    return _assigned(list(patterns.values()), first)


def _forced(token: str) -> bool:
    """A token an address cannot hold literally."""
    return token in ("*", ">") or "{" in token or "}" in token


def _generalise(patterns: dict[tuple[str | None, ...], _Pattern], i: int, min_values: int,
                min_share: float) -> bool:
    """Apply the rule at token position ``i``; whether anything merged."""
    groups: dict[tuple[object, ...], list[_Pattern]] = defaultdict(list)
    for tokens, pattern in patterns.items():
        if i < len(tokens):
            groups[(len(tokens), *tokens[:i], *tokens[i + 1:])].append(pattern)
    merged = False
    for group in groups.values():
        literal = [p for p in group if p.tokens[i] is not None]
        if not literal:
            continue
        values = Counter({str(p.tokens[i]): p.count for p in literal})
        param = next((p for p in group if p.tokens[i] is None), None)
        seen = len(values) + (len({s.split(".")[i] for s in param.subjects}) if param else 0)
        messages = sum(values.values()) + (param.count if param else 0)
        if seen >= min_values and seen >= min_share * messages:
            chosen = literal
        else:
            chosen = [p for p in literal if is_id_like(str(p.tokens[i]))]
            if len(chosen) + (param is not None) < 2:
                continue
        into = param.tokens if param else (*chosen[0].tokens[:i], None,
                                           *chosen[0].tokens[i + 1:])
        target = patterns.setdefault(into, _Pattern(into))
        for p in chosen:
            target.subjects.update(p.subjects)
            del patterns[p.tokens]
        merged = True
    return merged


def _assigned(patterns: list[_Pattern], first: dict[str, int]) -> list[Address]:
    """The patterns as addresses, in document order, each subject moved to the channel
    :meth:`Spec.match` picks for it; channels left without subjects dropped."""
    named = sorted(((_address(p.tokens), p) for p in patterns), key=lambda a: a[0][0])
    channels = [Channel.of(str(k), address, {}) for k, ((address, _), _) in enumerate(named)]
    by_width: dict[int, list[int]] = defaultdict(list)
    for k, (_, p) in enumerate(named):
        by_width[len(p.tokens)].append(k)
    carried: dict[int, list[str]] = defaultdict(list)
    for _, p in named:
        for subject in p.subjects:
            found = [k for k in by_width[len(p.tokens)] if channels[k].matches(subject)]
            if not found:  # (cannot happen: its own pattern matches it)
                continue
            best = max(found, key=lambda k: channels[k].specificity)  # first on ties
            carried[best].append(subject)
    out: list[Address] = []
    ids: set[str] = set()
    for k, ((address, names), _) in enumerate(named):
        subjects = sorted(carried.get(k, ()), key=first.__getitem__)
        if not subjects:
            continue
        parameters = {}
        for name, position in names.items():
            values = list(dict.fromkeys(s.split(".")[position] for s in subjects))
            parameters[name] = (position, tuple(values[:_EXAMPLES]), len(values))
        out.append(Address(address, unique_name(_channel_id(address, names), ids), parameters,
                           tuple(subjects)))
    return out


def _address(tokens: tuple[str | None, ...]) -> tuple[str, dict[str, int]]:
    """The address of a pattern and its parameters' positions by name."""
    names: dict[str, int] = {}
    parts = []
    for i, token in enumerate(tokens):
        if token is not None:
            parts.append(token)
            continue
        before = tokens[i - 1] if i else None
        words = _WORDS.findall(before) if before is not None else []
        if words:
            base = words[0].lower() + "".join(w.capitalize() for w in words[1:])
            if base.endswith("ies") and len(base) > 4:
                base = base[:-3] + "y"
            elif base.endswith("s") and not base.endswith("ss") and len(base) > 3:
                base = base[:-1]
            name = base + "Id" if base[0].isalpha() else f"token{i + 1}"
        else:
            name = f"token{i + 1}"
        name = unique_name(name, set(names))
        names[name] = i
        parts.append("{" + name + "}")
    return ".".join(parts), names


def _channel_id(address: str, names: dict[str, int]) -> str:
    text = address
    for name in names:
        text = text.replace("{" + name + "}", name)
    return _NOT_ID.sub("_", text) or "channel"


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name2``, ``name3``… (``name_2`` after a digit): the first not in
    ``taken``, which it joins."""
    out, n = name, 1
    while out in taken:
        n += 1
        out = f"{name}{n}" if not name[-1:].isdigit() else f"{name}_{n}"
    taken.add(out)
    return out
