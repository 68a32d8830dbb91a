"""`evtkit check TRACE --spec api.yaml`: prints violations and undeclared things, exits 0
when the traffic conforms, 1 when it does not, 2 when the spec or trace cannot be read."""

from __future__ import annotations

import subprocess
import sys

import pytest

from evtkit.cli import main
from tests.asyncapi.traffic import GOOD, SHOP, conforming, pub, trace


@pytest.fixture
def good(tmp_path):
    return conforming().save(tmp_path / "good.parquet")


@pytest.fixture
def bad(tmp_path):
    rows = [pub(1, "bad-1", "orders.1.placed", {**GOOD, "amount": "12.50"}),
            pub(2, "stray-1", "orders.1.shipped")]
    return trace(*rows).save(tmp_path / "bad.parquet")


def test_conforming_traffic_exits_0(good, capsys):
    assert main(["check", good, "--spec", str(SHOP)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Shop 1.2.0 (AsyncAPI 3.0.0, ") and " 5 conform," in out[0]
    assert out[1] == "conforms: nothing undeclared or invalid"


def test_violations_and_undeclared_subjects_exit_1(bad, capsys):
    assert main(["check", bad, "--spec", str(SHOP)]) == 1
    out = capsys.readouterr().out
    assert "does not conform: 2 findings" in out
    assert "  bad-1  orders.1.placed  payload /amount: '12.50' is not of type 'number'" in out
    assert "1 event on 'orders.*.shipped' (e.g. orders.1.shipped) at 17:46:42.000 " in out


def test_strict_also_fails_on_what_was_not_seen(tmp_path, capsys):
    path = trace(pub(1, "a", "orders.1.placed")).save(tmp_path / "some.parquet")
    assert main(["check", path, "--spec", str(SHOP)]) == 0
    assert "unused_channel" in capsys.readouterr().out
    assert main(["check", path, "--spec", str(SHOP), "--strict"]) == 1


def test_a_bad_spec_exits_2_with_one_line(good, tmp_path, capsys):
    spec = tmp_path / "api.yaml"
    spec.write_text("asyncapi: 3.0.0\ninfo: {title: T, version: '1'}\nchannels:\n  a:\n"
                    "    messages: {m: {$ref: '#/components/messages/Nope'}}\n")
    assert main(["check", good, "--spec", str(spec)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"evtkit: error: {spec}: /channels/a/messages/m: $ref "
                            "'#/components/messages/Nope' does not resolve (nothing at "
                            f"/components in {spec})\n")


def test_an_unreadable_trace_exits_2(tmp_path, capsys):
    assert main(["check", str(tmp_path / "missing.parquet"), "--spec", str(SHOP)]) == 2
    assert capsys.readouterr().err.startswith("evtkit: error: ")


def test_the_installed_command_exit_codes_and_no_traceback(bad, tmp_path):
    spec = tmp_path / "api.yaml"
    spec.write_text("asyncapi: 1.0.0\n")
    run = [sys.executable, "-m", "evtkit", "check"]
    failed = subprocess.run([*run, bad, "--spec", str(SHOP)], capture_output=True, text=True,
                            timeout=60)
    broken = subprocess.run([*run, bad, "--spec", str(spec)], capture_output=True, text=True,
                            timeout=60)
    assert (failed.returncode, broken.returncode) == (1, 2)
    assert "break their schema" in failed.stdout
    assert broken.stderr == (f"evtkit: error: {spec}: /asyncapi: AsyncAPI 1.0.0 is not "
                             "supported: evtkit reads 3.0 and 2.0–2.6 documents (the AsyncAPI "
                             "CLI's 'asyncapi convert' converts others)\n")
