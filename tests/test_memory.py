"""Freed memory goes back to the system after a large step (``evtkit._memory``).

Each case runs in a fresh interpreter: the allocators' state (glibc's mmap threshold, what
Arrow's pool keeps) is per process, and the test process's own history would blur it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import evtkit as ek
from evtkit._memory import LARGE, _glibc

from .paths import ROOT

pytestmark = pytest.mark.skipif(_glibc() is None or not os.path.exists("/proc/self/status"),
                                reason="glibc's allocator and /proc: Linux with glibc only")

RSS = """
def rss_mib():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024
"""


def _env(**more: str) -> dict[str, str]:
    """This environment without what would choose the allocators' settings, plus ``more``."""
    chosen = ("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD", "EVTKIT_MALLOC", "ARROW_DEFAULT")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(chosen)}, **more}


def _run(code: str, **env: str) -> dict[str, float]:
    """Run ``code`` (which prints one JSON object) in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", RSS + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=60, check=True,
                          env=_env(**env))
    return json.loads(done.stdout)


def _glibc_block_kept(rows: int, **env: str) -> float:
    """MiB still resident after freeing a 24 MiB block that glibc served from its heap."""
    return _run(f"""
        import json, numpy as np
        from evtkit._memory import give_back
        give_back({rows})
        block = (24 << 20) // 8
        a = np.ones(block); del a  # (glibc now serves blocks this size from its heap...)
        base = rss_mib()
        a = np.ones(block); b = np.ones(1000); del a  # (...and a small one above it)
        print(json.dumps({{"kept": rss_mib() - base}}))
    """, **env)["kept"]


def _arrow_kept(rows: int) -> dict[str, float]:
    """MiB resident while many small Arrow arrays live, after they are freed, and after
    give_back(rows)."""
    return _run(f"""
        import json, numpy as np, pyarrow as pa
        from evtkit._memory import give_back
        base = rss_mib()
        arrays = [pa.array(np.arange(i, i + 1000)) for i in range(4000)]  # Arrow's pool
        held = rss_mib() - base
        del arrays
        freed = rss_mib() - base
        give_back({rows})
        print(json.dumps({{"held": held, "freed": freed, "after": rss_mib() - base}}))
    """)


class TestGiveBack:
    def test_after_a_large_step_large_blocks_go_back_when_freed(self):
        """glibc raises its mmap threshold to the size of each large block freed, and then
        keeps such blocks in its heap: a million-row column stayed resident after use."""
        assert _glibc_block_kept(LARGE) < 8
        assert _glibc_block_kept(LARGE - 1) > 20  # (a small step leaves glibc as it is)

    def test_what_arrows_allocator_kept_goes_back(self):
        small, large = _arrow_kept(LARGE - 1), _arrow_kept(LARGE)
        for got in (small, large):
            assert got["held"] > 20 and got["freed"] > 20  # (kept by the pool once freed)
        assert small["after"] > 20 and large["after"] < 5

    @pytest.mark.parametrize("choice", [{"MALLOC_MMAP_THRESHOLD_": "131072"},
                                        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"},
                                        {"EVTKIT_MALLOC": "keep"}])
    def test_a_user_choice_of_threshold_is_left_alone(self, choice):
        got = _run("""
            import json
            from evtkit._memory import _fix_threshold, _glibc
            print(json.dumps({"fixed": _fix_threshold(_glibc())}))
        """, **choice)
        assert got["fixed"] is False

    def test_told_to_keep_its_allocator_glibc_stays_as_it_was(self):
        assert _glibc_block_kept(LARGE, EVTKIT_MALLOC="keep") > 20


class TestLargeTraceSteps:
    def test_loading_and_analysing_a_large_trace_hands_memory_back(self, tmp_path):
        """Each step over a large trace leaves no more resident than what it keeps: the
        peak of the next step starts from there (1 M events: 1.86 → 1.48 GB)."""
        path = tmp_path / "big.parquet"
        ek.testing.make_trace(LARGE // 7 + 1000, seed=1, payloads=False).save(path)
        got = _run(f"""
            import json, evtkit as ek, pyarrow as pa
            from evtkit._memory import _glibc
            trace = ek.load({str(path)!r})
            trace.chains(); trace.lag(); trace.backlog()
            before = rss_mib()
            _glibc().malloc_trim(0)  # (nothing left to hand back: it was done)
            pa.default_memory_pool().release_unused()
            print(json.dumps({{"rows": len(trace.observations),
                               "returned": before - rss_mib()}}))
        """)
        assert got["rows"] >= LARGE
        assert got["returned"] < 5


def test_a_loan_hands_what_duckdb_freed_back_to_the_system() -> None:
    """What DuckDB's allocator kept of a large query's memory goes back to the system when
    the engine lends memory to pandas (else the loan would free nothing: at 100 M events
    ~3 GB stayed resident beside the rows it was for)."""
    measured = _run(f"""
        import json
        import evtkit as ek
        ds = ek.open({str(ROOT / "data" / "shop-incident.parquet")!r}, memory_limit="1GB")
        con = ds._engine.con
        ds.summary()
        con.sql("SELECT i % 5000000 AS k, count(*) AS n FROM range(20000000) r(i) "
                "GROUP BY k ORDER BY n LIMIT 1").fetchall()
        kept = rss_mib()
        with ds._engine.lend(1 << 20):
            lent = rss_mib()
        print(json.dumps({{"kept": kept, "lent": lent}}))
    """)
    assert measured["kept"] - measured["lent"] > 100, measured
