"""NATS subjects: wildcard matching and remapping, as the server does it.

``*`` matches exactly one token, ``>`` one or more trailing tokens::

    matches("orders.*", "orders.placed")        # True
    matches("orders.>", "orders.eu.placed")     # True
    Remap(["orders.>=test.orders.>"]).apply("orders.placed")   # "test.orders.placed"
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Remap", "matches"]


def matches(pattern: str, subject: str) -> bool:
    """True when ``subject`` matches the subscription ``pattern`` (with ``*`` and ``>``)."""
    want = pattern.split(".")
    have = subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return i == len(want) - 1 and len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def _check(text: str, what: str) -> str:
    tokens = text.split(".")
    if not text or any(not t for t in tokens) or any(c.isspace() for c in text):
        raise ValueError(f"{what} {text!r} is not a valid NATS subject")
    if ">" in tokens[:-1] or any(t != ">" and ">" in t for t in tokens):
        raise ValueError(f"{what} {text!r}: '>' may only be the last token")
    return text


class Remap:
    """Subject renames given as ``OLD=NEW``: exact subjects, or prefixes ending in ``.>``.

    Raises:
        ValueError: a rule is not ``OLD=NEW`` with valid subjects.
    """

    def __init__(self, rules: Iterable[str] = ()) -> None:
        self.exact: dict[str, str] = {}
        self.prefixes: list[tuple[str, str]] = []
        for rule in rules:
            old, sep, new = rule.partition("=")
            if not sep:
                raise ValueError(f"subject map {rule!r} must look like OLD=NEW")
            _check(old, "subject map source")
            _check(new, "subject map target")
            if old.endswith(".>") != new.endswith(".>"):
                raise ValueError(f"subject map {rule!r}: use '.>' on both sides or neither")
            if "*" in old.split(".") or "*" in new.split("."):
                raise ValueError(f"subject map {rule!r}: '*' is not supported, use '.>'")
            if old in self.exact or (old.endswith(".>") and old[:-1] in dict(self.prefixes)):
                raise ValueError(f"subject map {rule!r}: {old!r} is mapped twice")
            if old.endswith(".>"):
                self.prefixes.append((old[:-1], new[:-1]))
            elif {"*", ">"} & set(old.split(".") + new.split(".")):
                raise ValueError(f"subject map {rule!r}: an exact rule maps one subject to "
                                 "another, without wildcards (for prefixes use 'a.>=b.>')")
            else:
                self.exact[old] = new

    def apply(self, subject: str) -> str:
        """The subject to use instead of ``subject`` (itself when no rule applies)."""
        if subject in self.exact:
            return self.exact[subject]
        for old, new in self.prefixes:
            if subject.startswith(old):
                return new + subject[len(old):]
        return subject

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefixes)
