"""The notebooks' sentences about data are true: each one is checked here, or printed from
the data by the notebook itself.

``CLAIMS`` is a table of (notebook, a fragment of a markdown sentence, a check). One test
asserts each fragment is still in its notebook's markdown, so a sentence cannot be edited
or dropped while its check stays behind; another runs each check on the data the notebook
reads (the sample traces; for a sentence about what a cell does, that cell's code).

The notebooks that run their own shop or server (01, 02, 06) print what depends on the run
from the data, in the cell. Every notebook that concludes does so the same way: a markdown
cell ``**Conclusion**, …`` followed by a code cell that prints the conclusion from frames,
with no number written into its text.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import pandas as pd
import pytest

import evtkit as ek
from tests.paths import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ALARM = ["critical", "warning"]


# -- reading notebooks ----------------------------------------------------------------------

def cells(stem: str) -> list[dict]:
    return json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"]


def text(cell: dict) -> str:
    return "".join(cell["source"])


def markdown(stem: str) -> str:
    """The notebook's markdown, whitespace collapsed (sentences wrap across lines)."""
    return " ".join(" ".join(text(c) for c in cells(stem) if c["cell_type"] == "markdown")
                    .split())


def code(stem: str) -> str:
    return "\n".join(text(c) for c in cells(stem) if c["cell_type"] == "code")


# -- the data the notebooks read ------------------------------------------------------------

@cache
def incident() -> ek.Trace:
    return ek.datasets.load("shop-incident")


@cache
def baseline() -> ek.Trace:
    return ek.datasets.load("shop-baseline")


def alarms(trace: ek.Trace, **where: str) -> pd.DataFrame:
    """Warning and critical root causes, optionally of one kind/consumer."""
    f = trace.diagnose()
    f = f[f["root_cause"] & f["severity"].isin(ALARM)]
    for column, value in where.items():
        f = f[f[column] == value]
    return f


def one(trace: ek.Trace, kind: str, consumer: str) -> pd.Series:
    found = alarms(trace, kind=kind, consumer=consumer)
    assert len(found) == 1, (kind, consumer, found)
    return found.iloc[0]


def steps(consumer: str, freq: str = "500ms") -> pd.DataFrame:
    bl = incident().backlog(freq)
    return bl[bl["consumer"] == consumer]


# -- the checks -----------------------------------------------------------------------------

def incident_had_faults() -> None:
    assert len(alarms(incident())) and (incident().diagnose()["severity"] == "critical").any()


def billing_slowed_and_shipping_hung() -> None:
    one(incident(), "slow_consumer", "billing")
    one(incident(), "stalled_consumer", "shipping")


def statuses_are_the_diagnosis() -> None:
    lag = incident().lag().set_index("consumer")
    findings = incident().diagnose()
    flagged = set(findings.loc[findings["severity"].isin(ALARM), "consumer"].dropna())
    for consumer, row in lag.iterrows():
        assert (row["status"] != "OK") == (consumer in flagged), consumer
        if row["status"] != "OK":  # the reason is the findings' evidence
            evidence = findings.loc[findings["consumer"] == consumer, "evidence"]
            assert any(e in row["reason"] for e in evidence), consumer


def billing_and_shipping_wait_longer_than_they_work() -> None:
    lag = incident().lag().set_index("consumer")
    for consumer in ("billing", "shipping"):
        assert lag.loc[consumer, "queue_p95_s"] > 5 * lag.loc[consumer, "processing_p95_s"]
    for consumer in ("inventory", "notifications"):  # the contrast the sentence draws
        assert lag.loc[consumer, "queue_p95_s"] < lag.loc[consumer, "processing_p95_s"]


def billing_backlog_builds_then_drains() -> None:
    slow = one(incident(), "slow_consumer", "billing")
    s = steps("billing")
    during = s[s["time"].between(slow.start, slow.end)]["backlog"].to_numpy()
    half = len(during) // 2
    assert during.max() >= 10 and during[half:].mean() > 2 * during[:half].mean()
    after = s[s["time"].between(slow.end, slow.end + pd.Timedelta(seconds=2))]
    assert after["backlog"].min() <= 1
    assert s.loc[s["time"] > slow.end + pd.Timedelta(seconds=2), "backlog"].max() <= 3


def shipping_jumps_and_oldest_climbs() -> None:
    stall = one(incident(), "stalled_consumer", "shipping")
    s = steps("shipping")
    before = s.loc[s["time"] < stall.start, "backlog"].max()
    inside = s[(s["time"] > stall.start) & (s["time"] < stall.end)]
    assert len(inside) >= 4 and inside["backlog"].max() >= 10 * max(before, 1)
    oldest = inside["oldest_s"].to_numpy()
    assert (oldest[1:] > oldest[:-1]).all()          # climbs, step after step
    assert oldest[-1] >= 0.75 * stall.duration_s     # by about a second a second


def same_shop_same_load() -> None:
    def orders(trace: ek.Trace) -> pd.Series:
        return trace.events.loc[trace.events["subject"] == "orders.placed", "published_at"]

    a, b = orders(baseline()), orders(incident())
    assert len(a) == len(b)
    span = [(o.max() - o.min()).total_seconds() for o in (a, b)]
    assert abs(span[0] - span[1]) < 0.05 * span[0]
    assert set(baseline().deliveries["consumer"]) == set(incident().deliveries["consumer"])


def baseline_is_healthy() -> None:
    assert not baseline().diagnose()["severity"].isin(ALARM).any()
    assert baseline().verdict() == ["Nothing went wrong: no warning or critical finding."]


def compare_findings_are_diagnosis_against_baseline() -> None:
    pd.testing.assert_frame_equal(ek.compare(baseline(), incident()).findings,
                                  incident().diagnose(baseline=baseline()))


def symptoms_input_arrives_as_fast_as_cause_lets_through() -> None:
    findings = incident().diagnose()
    symptoms = findings[~findings["root_cause"]]
    assert len(symptoms)
    graph = incident().flow_graph()
    dv = incident().deliveries
    span = (incident().observations["ts"].max()
            - incident().observations["ts"].min()).total_seconds()
    for s in symptoms.itertuples():
        cause = findings[findings["finding_id"] == s.caused_by].iloc[0]
        emitted = graph.loc[(graph["kind"] == "emits") & (graph["source"] == cause.consumer),
                            "target"]
        got = dv[(dv["consumer"] == s.consumer) & dv["subject"].isin(emitted)]
        inside = got["received_at"].between(cause.start, cause.end)
        rate_in = inside.sum() / cause.duration_s
        rate_out = (~inside).sum() / (span - cause.duration_s)
        assert rate_in < 0.8 * rate_out, (s.finding_id, rate_in, rate_out)


def every_event_carries_its_cause() -> None:
    events = incident().events
    roots = events["subject"].str.startswith("orders.")
    assert events.loc[~roots, "causation_id"].notna().all()
    assert incident().chains()["links_inferred"].sum() == 0


def representatives_differ_in_bottleneck() -> None:
    slow = incident().slowest_flows()
    reps = slow[slow["representative"]]
    pairs = list(zip(reps["bottleneck"], reps["bottleneck_kind"], strict=True))
    assert len(pairs) == len(set(pairs)) == len(
        set(zip(slow["bottleneck"], slow["bottleneck_kind"], strict=True))) >= 2
    # And the slowest of each: no flow with the same bottleneck is slower.
    for rep in reps.itertuples():
        same = slow[(slow["bottleneck"] == rep.bottleneck)
                    & (slow["bottleneck_kind"] == rep.bottleneck_kind)]
        assert rep.duration_s == same["duration_s"].max()


def shop_as_described() -> None:
    dv = incident().deliveries
    assert set(dv["consumer"]) == {"inventory", "billing", "shipping", "notifications"}
    assert dv.loc[dv["consumer"] == "billing", "observer"].nunique() == 2


def drift_is_as_described() -> None:
    from evtkit.demo import DRIFT

    assert DRIFT == {"renamed": ("orders.placed", "customer", "customerId"),
                     "retyped": ("orders.placed", "total", "string"),
                     "undeclared": "orders.created"}
    spec = ek.asyncapi.load(ek.demo.SPEC)
    assert spec.match("orders.created") is None
    assert spec.channels["orderPlaced"].messages["orderPlaced"].payload["properties"][
        "total"]["type"] == "number"


def in_code(stem: str, *fragments: str) -> Callable[[], None]:
    """A sentence about what the notebook's own code does: the code says so."""
    def check() -> None:
        source = code(stem)
        for fragment in fragments:
            assert fragment in source, fragment
    check.__name__ = f"code_of_{stem[:2]}_says_{'_'.join(fragments)}"
    return check


@dataclass(frozen=True)
class Claim:
    notebook: str
    fragment: str
    check: Callable[[], None]

    def __str__(self) -> str:
        return f"{self.notebook[:2]}:{self.check.__name__}"


CLAIMS = [
    Claim("02-replay", "`data/shop-incident` was recorded while the demo shop had an incident",
          incident_had_faults),
    Claim("02-replay", "**ten times faster** than they were recorded", in_code(
        "02-replay", "SPEED = 10", "speed=SPEED")),
    Claim("02-replay", "yesterday's orders arriving ten times as fast", in_code(
        "02-replay", "SPEED = 10")),
    Claim("02-replay", "the load is ten times higher", in_code("02-replay", "SPEED = 10")),
    Claim("02-replay", "Start the shop's consumers (inventory, billing with two workers, "
          "shipping, notifications, and the analytics tap)", shop_as_described),
    Claim("03-consumer-latency", "recorded while billing slowed down and shipping hung",
          billing_slowed_and_shipping_hung),
    Claim("03-consumer-latency", "The status is the verdict of `trace.diagnose()` for that "
          "consumer", statuses_are_the_diagnosis),
    Claim("03-consumer-latency", "Billing and shipping wait far longer than they work: the "
          "time is spent in queues, not in handlers.",
          billing_and_shipping_wait_longer_than_they_work),
    Claim("03-consumer-latency", "billing's backlog builds while it is slow and drains "
          "afterwards", billing_backlog_builds_then_drains),
    Claim("03-consumer-latency", "shipping's jumps while it hangs and the age of its oldest "
          "waiting message climbs second by second", shipping_jumps_and_oldest_climbs),
    Claim("04-causal-chains-and-fanout", "Every event in the shop carries its cause.",
          every_event_carries_its_cause),
    Claim("04-causal-chains-and-fanout", "`representative` marks the slowest flow of each "
          "distinct bottleneck", representatives_differ_in_bottleneck),
    Claim("04-causal-chains-and-fanout", "The representative flows, one per distinct "
          "bottleneck", representatives_differ_in_bottleneck),
    Claim("05-baseline-vs-incident", "Two recordings of the same shop under the same load",
          same_shop_same_load),
    Claim("05-baseline-vs-incident", "a healthy baseline and the incident",
          baseline_is_healthy),
    Claim("05-baseline-vs-incident", "`diff.findings` is `incident.diagnose(baseline=baseline)`",
          compare_findings_are_diagnosis_against_baseline),
    Claim("06-server-side-view", "*audit* sleeps 30 ms per order while the orders come every "
          "20 ms or so", in_code("06-server-side-view", "await asyncio.sleep(0.03)",
                                 "await asyncio.sleep(0.02)")),
    Claim("06-server-side-view", "Every seventh order is nak'd and redelivered, and after "
          "three tries JetStream gives up", in_code("06-server-side-view", "% 7 == 0",
                                                    "max_deliver=3")),
    Claim("07-diagnose-an-incident", "`shop-incident` was recorded with faults injected",
          incident_had_faults),
    Claim("07-diagnose-an-incident", "a healthy recording of the same shop",
          baseline_is_healthy),
    Claim("07-diagnose-an-incident", "`shop-baseline` is the same shop under the same load "
          "without faults", same_shop_same_load),
    Claim("07-diagnose-an-incident", "Diagnosed on its own it should have nothing to report",
          baseline_is_healthy),
    Claim("07-diagnose-an-incident", "(`diff.findings` is `trace.diagnose(baseline=baseline)`)",
          compare_findings_are_diagnosis_against_baseline),
    Claim("07-diagnose-an-incident", "how many calls finished in each 100 ms step", in_code(
        "07-diagnose-an-incident", 'trace.backlog("100ms")')),
    Claim("07-diagnose-an-incident", "a symptom's input arrives only as fast as its cause "
          "lets it through", symptoms_input_arrives_as_fast_as_cause_lets_through),
    Claim("08-does-the-system-match-its-design", "`orders.placed` renames `customer` to "
          "`customerId` and sends `total` as a string, and every order is also sent on "
          "`orders.created`, a subject no channel declares.", drift_is_as_described),
    Claim("08-does-the-system-match-its-design", "We run the shop twice on an embedded "
          "server: healthy, and with the `drift` fault", in_code(
              "08-does-the-system-match-its-design", "run_shop(duration=4",
              'faults=["drift:orders@1+2"]')),
]

CONCLUDING = ["02-replay", "03-consumer-latency", "04-causal-chains-and-fanout",
              "05-baseline-vs-incident", "07-diagnose-an-incident",
              "08-does-the-system-match-its-design"]


class TestClaims:
    @pytest.mark.parametrize("claim", CLAIMS, ids=str)
    def test_the_sentence_is_still_in_its_notebook(self, claim):
        assert claim.fragment in markdown(claim.notebook), (
            f"{claim.notebook} no longer says {claim.fragment!r}: update CLAIMS with the "
            "sentence and a check for what it now says")

    @pytest.mark.parametrize("claim", CLAIMS, ids=str)
    def test_the_sentence_is_true(self, claim):
        claim.check()

    @pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
    def test_no_unchecked_measurement_in_markdown(self, notebook):
        """A number with a unit in markdown is data, so it must sit inside a checked claim;
        better, print it from the data."""
        prose = markdown(notebook.stem)
        for claim in CLAIMS:
            if claim.notebook == notebook.stem:
                prose = prose.replace(claim.fragment, "")
        prose = re.sub(r"`[^`]*`", "", prose)  # code: names and arguments, not measurements
        found = re.findall(r"\d[\d.,]*\s*(?:(?:µs|ms|s|min|x|messages|orders|events|calls)\b|%|×)",
                           prose)
        assert not found, found


def string_text(source: str) -> list[str]:
    """The literal text of every string in ``source``, format specs left out."""
    texts: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FormattedValue):
            visit(node.value)  # its format_spec (".1f") is not text
            return
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts.append(node.value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return texts


class TestConclusions:
    @pytest.mark.parametrize("stem", CONCLUDING)
    def test_conclusion_is_printed_from_data(self, stem):
        nb = cells(stem)
        heads = [i for i, c in enumerate(nb)
                 if c["cell_type"] == "markdown" and text(c).startswith("**Conclusion**")]
        assert len(heads) == 1, stem
        cell = nb[heads[0] + 1]
        assert cell["cell_type"] == "code" and "print(" in text(cell)
        for literal in string_text(text(cell)):
            assert not re.search(r"(?<![\w.])\d+(\.\d+)?(?!\w)", literal), literal

    @pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
    def test_no_hand_written_conclusion(self, notebook):
        for cell in cells(notebook.stem):
            if cell["cell_type"] == "markdown" and "Conclusion" in text(cell):
                assert text(cell).startswith("**Conclusion**,") and len(text(cell)) < 80

    def test_the_check_sees_a_number_written_into_a_conclusion(self):
        texts = string_text('print(f"took {x:.1f} s, 15× slower")')
        assert texts == ["took ", " s, 15× slower"]
        assert re.search(r"(?<![\w.])\d+(\.\d+)?(?!\w)", texts[1])
