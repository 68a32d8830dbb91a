"""Consumer lag: exact percentiles, exact backlog, and statuses that agree with diagnose()."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evtkit as ek
from evtkit.observation import build_observations

US = 1e-6
SEC = 1_000_000_000


@pytest.fixture(scope="module")
def incident() -> ek.Trace:
    # Anomalies on consumers that do not publish, so their effects stay local.
    return ek.testing.make_trace(
        3000, rate=100, slow="search", stall=("audit", 3, 3), stop=("notifications", 6, 2),
        failing={"fraud": 0.3}, seed=7)  # 1000 flows: 10 s


def lasted(reason: str) -> float:
    """The 'for N s' duration a lag reason states first."""
    return float(re.search(r" for ([0-9.]+) s", reason).group(1))


class TestLag:
    def test_percentiles_match_the_generator_within_a_microsecond(self, incident):
        truth = incident.metadata["truth"]["consumers"]
        lag = incident.lag().set_index("consumer")
        assert set(lag.index) == set(truth)
        for name, expected in truth.items():
            row = lag.loc[name]
            assert row["deliveries"] == expected["deliveries"]
            assert row["errors"] == expected["errors"]
            for column in ("queue_p50_s", "queue_p95_s", "queue_p99_s", "queue_max_s",
                           "processing_p50_s", "processing_p95_s"):
                assert abs(row[column] - expected[column]) < US, (name, column)

    def test_statuses_match_the_injected_faults(self, incident):
        truth = incident.metadata["truth"]["consumers"]
        lag = incident.lag().set_index("consumer")
        assert lag["status"].to_dict() == {k: v["status"] for k, v in truth.items()}
        assert {"STOP", "STALL", "ERR", "WARN", "OK"} == set(lag["status"])

    def test_reasons_explain_with_numbers(self, incident):
        """A reason is the evidence of the consumer's worst finding, in human units."""
        reasons = incident.lag().set_index("consumer")["reason"]
        assert reasons["audit"].startswith("audit stalled for ")
        assert "none was handled" in reasons["audit"]
        assert abs(lasted(reasons["audit"]) - 3.0) <= 0.3  # the injected 3 s stall
        assert "received nothing" in reasons["notifications"]
        assert abs(lasted(reasons["notifications"]) - 2.0) <= 0.3  # the 2 s stop
        assert re.search(r"failed \d+ of \d+ calls \(\d+%\)", reasons["fraud"])
        assert "backlog of search reached" in reasons["search"]
        assert reasons["billing"].startswith("kept up: messages waited at most")
        assert not any("e+0" in r or "nan" in r for r in reasons)

    def test_a_healthy_run_is_all_ok(self):
        lag = ek.testing.make_trace(900, rate=100, seed=1).lag()
        assert (lag["status"] == "OK").all() and (lag["status_now"] == "OK").all()

    def test_status_windows(self, incident):
        windows = incident.lag_status()
        audit = windows[windows["consumer"] == "audit"]
        stalled = audit[audit["status"] == "STALL"]
        assert len(stalled) > 0
        assert stalled["start"].min() >= audit["start"].min()
        assert (windows["end"] > windows["start"]).all()


class TestBacklog:
    def rows(self):
        """One consumer; three events published at 0, 1 and 2 s, handled at known times."""
        t = 1_900_000_000 * SEC
        rows = []
        for i, (pub, start, done) in enumerate([(0.0, 0.2, 0.5), (1.0, 1.1, 3.5),
                                                 (2.0, 3.5, 3.6)]):
            block = f"NATS/1.0\r\nce-id: e{i}\r\n\r\n".encode()
            rows.append(("publish", t + int(pub * SEC), "p", None, None, b"s", None, b"",
                         block, None))
            rows.append(("receive", t + int((pub + 0.1) * SEC), "c", "c", None, b"s", None,
                         b"", block, None))
            rows.append(("handled", t + int(done * SEC), "c", "c", None, None, None, None, None,
                         (len(rows) - 1, t + int(start * SEC), "ok", None)))
        return rows

    def test_exact_counts_and_ages(self):
        trace = ek.Trace(build_observations(self.rows()))
        data = trace.backlog("1s")
        t0 = pd.Timestamp(1_900_000_000, unit="s", tz="UTC")
        at = data.set_index((data["time"] - t0).dt.total_seconds())
        # At 1 s: e1 published (waiting), e0 done. At 2 s: e1, e2 waiting; e1 since 1 s.
        assert at.loc[1.0, "backlog"] == 1 and at.loc[1.0, "oldest_s"] == 0.0
        assert at.loc[2.0, "backlog"] == 2 and at.loc[2.0, "oldest_s"] == 1.0
        assert at.loc[3.0, "backlog"] == 2 and at.loc[3.0, "oldest_s"] == 2.0
        assert at.loc[4.0, "backlog"] == 0 and at.loc[4.0, "oldest_s"] == 0.0
        assert at["handled"].sum() == 3 and at["received"].sum() == 3
        assert at.loc[4.0, "handled"] == 2  # e1 at 3.5 and e2 at 3.6

    def test_bad_freq(self):
        trace = ek.Trace(build_observations(self.rows()))
        with pytest.raises(ValueError, match="positive"):
            trace.backlog("0s")
        with pytest.raises(ValueError, match="window"):
            trace.lag_status(window=1)

    def test_empty_trace(self):
        empty = ek.Trace(build_observations([]))
        assert empty.lag().empty and empty.backlog().empty
        assert empty.chains().empty and empty.fanout().empty


@pytest.mark.parametrize(("seed", "rate"), [(21, 50), (22, 100), (23, 150)])
def test_statuses_hold_across_seeds_and_rates(seed, rate):
    """The rules are not tuned to one random draw: other seeds and loads agree too."""
    n = 3000
    span = n / 3 / rate
    trace = ek.testing.make_trace(
        n, rate=rate, seed=seed, slow="search", stall=("audit", span * 0.3, span * 0.3),
        stop=("notifications", span * 0.6, span * 0.2), failing={"fraud": 0.3})
    want = {k: v["status"] for k, v in trace.metadata["truth"]["consumers"].items()}
    assert trace.lag().set_index("consumer")["status"].to_dict() == want


NAT = np.iinfo(np.int64).min


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.just(NAT), st.integers(-50, 250)), max_size=40),
       st.integers(-20, 20), st.integers(1, 30), st.integers(1, 8))
def test_bin_counts_equal_numpy_histogram(times, start, step, bins):
    """Counts per uniform bin (NaT, values before the first edge and after the last left
    out, the last bin closed) are np.histogram's, value for value."""
    from evtkit.analysis.lag import bin_counts

    values = np.array(times, np.int64)
    edges = start + step * np.arange(bins + 1, dtype=np.int64)
    want = np.histogram(values[values != NAT], edges)[0]
    assert bin_counts(values, start, step, bins).tolist() == want.tolist()


QS = (0.5, 0.95, 0.99, 1.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", None]), st.sampled_from(["", "q", None]),
                          st.one_of(st.none(), st.floats(0, 1e5)),
                          st.one_of(st.none(), st.floats(0, 1e5)),
                          st.sampled_from(["ok", "error", "dropped", "pending"])),
                min_size=1, max_size=30))
def test_delivery_stats_equal_pandas_grouped_quantiles(rows):
    """Per consumer and queue group, as pandas' grouped quantiles give them, to the last
    bit (how lag() computed them before; consumers without a name have no row;
    percentiles of a group whose times are all missing are NaN)."""
    from evtkit.analysis.lag import _delivery_stats

    dv = pd.DataFrame(rows, columns=["consumer", "queue", "queue_s", "processing_s",
                                     "outcome"]).astype(
        {"consumer": "category", "queue": "category", "outcome": "category",
         "queue_s": float, "processing_s": float})
    got = _delivery_stats(dv, ["consumer", "queue"])
    keyed = dv.assign(queue=dv["queue"].astype(object).fillna(""))
    groups = keyed.groupby(["consumer", "queue"], observed=True)
    grouped = {source: groups[source].quantile(list(QS)).unstack()
               for source in ("queue_s", "processing_s")}
    for (consumer, queue), part in groups:
        row = got[(got["consumer"] == consumer) & (got["queue"] == queue)]
        assert len(row) == 1 and row["deliveries"].item() == len(part)
        for column, source, q in (("queue_p50_s", "queue_s", 0.5),
                                  ("queue_p99_s", "queue_s", 0.99),
                                  ("queue_max_s", "queue_s", 1.0),
                                  ("processing_p95_s", "processing_s", 0.95)):
            want = grouped[source].loc[(consumer, queue), q]
            assert (np.isnan(want) and np.isnan(row[column].item())) or \
                row[column].item() == want  # (to the last bit)
        assert row["errors"].item() == (part["outcome"] == "error").sum()
        assert row["dropped"].item() == (part["outcome"] == "dropped").sum()
    assert len(got) == groups.ngroups
    assert got[["consumer", "queue"]].astype(str).values.tolist() == sorted(
        got[["consumer", "queue"]].astype(str).values.tolist())
