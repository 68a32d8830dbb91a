"""Whose rows a diagnosis holds, and whose it tells the evidence it will read next."""

from __future__ import annotations

import pandas as pd
import pytest

import evtkit as ek
from evtkit.analysis.consumer import Consumer, Holding
from evtkit.analysis.evidence import Evidence


class Told(Evidence):
    """The evidence of a small trace, holding ``keep`` consumers' rows, that notes what
    the diagnosis reads and announces."""

    def __init__(self, keep: int) -> None:
        super().__init__(ek.testing.make_trace(60, seed=1))
        self.keep = keep
        self.announced: list[list[str]] = []
        self.read: list[str] = []

    def read_ahead(self, consumers: list[str]) -> None:
        self.announced.append(consumers)

    def deliveries_of(self, consumer: str) -> pd.DataFrame:
        self.read.append(consumer)
        return super().deliveries_of(consumer)


@pytest.mark.parametrize("keep", [1, 2])
def test_the_reads_announced_are_the_reads_made(keep):
    evidence = Told(keep)
    holding = Holding(evidence, lambda rows: rows)
    names = evidence.consumers()[:3]
    a, b, c = (Consumer(name, holding.load) for name in names)
    for order in ([a, b, c], [c, a, b], [b, b, a], [a, c, c, b]):
        before = len(evidence.read)
        holding.visit(order)
        for consumer in order:
            assert len(consumer.rows)
        assert evidence.announced[-1] == evidence.read[before:]
        held = [x for x in (a, b, c) if x._rows is not None]
        assert len(held) <= keep
    assert evidence.announced[1] == [names[0], names[1]]  # (the last one still held)
    assert evidence.announced[2] == ([names[0]] if keep == 1 else [])


def test_a_whole_diagnosis_reads_what_it_announced():
    """The rules read, consumer by consumer, what the diagnosis announced they would (a
    rule reading another consumer's rows out of turn would break the read-ahead)."""
    from evtkit.analysis.diagnose import Diagnosis, Rules

    evidence = Told(keep=1)
    Diagnosis(evidence, None, Rules()).run()
    announced = [name for names in evidence.announced for name in names]
    assert evidence.read == announced and len(set(announced)) == len(evidence.consumers())


def test_a_diagnosis_in_memory_holds_one_consumers_rows_at_a_time(monkeypatch):
    """Rows in memory are read again cheaply; held, every consumer's at once were the
    peak of lag() at 1 M events (22 MB per consumer)."""
    most = 0
    load = Holding.load

    def counted(self: Holding, consumer: Consumer) -> pd.DataFrame:
        nonlocal most
        rows = load(self, consumer)
        most = max(most, len(self._held))
        return rows

    monkeypatch.setattr(Holding, "load", counted)
    findings = ek.testing.make_trace(300, seed=2, slow="audit").diagnose()
    assert len(findings) and most == 1
