"""The conda environment and the Python package ask for the same things."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# conda-forge names that differ from PyPI's.
CONDA_NAMES = {"msgpack": "msgpack-python", "duckdb": "python-duckdb",
               "fastjsonschema": "python-fastjsonschema"}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!\[ ]", r.strip(), maxsplit=1)[0].lower() for r in requirements}


def test_environment_yml_lists_every_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"]) | _names(project["optional-dependencies"]["dev"])
    wanted = {CONDA_NAMES.get(name, name) for name in wanted}
    listed = set()
    for line in (ROOT / "environment.yml").read_text().splitlines():
        match = re.match(r"\s*-\s+([A-Za-z0-9_.-]+)", line)
        if match:
            listed.add(match.group(1).lower())
    assert wanted <= listed, sorted(wanted - listed)
    assert '-e ".[dev]"' in (ROOT / "environment.yml").read_text()


def test_fast_path_range_matches_the_pin():
    from evtkit.capture import _fastpath

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (pin,) = [d for d in project["dependencies"] if d.startswith("nats-py")]
    (low, high) = _fastpath.SUPPORTED
    assert pin == f"nats-py>={low[0]}.{low[1]},<{high[0]}.{high[1]}"
