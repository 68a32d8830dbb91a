"""The public surface: a curated, documented front door."""

from __future__ import annotations

import inspect

import evtkit as ek


def test_all_lists_exactly_the_public_names():
    public = {n for n in vars(ek) if not n.startswith("_") and not inspect.ismodule(getattr(ek, n))}
    public.discard("annotations")
    # Modules re-exported on purpose: ek.testing.make_trace, ek.datasets.load, ek.demo.run_shop,
    # ek.asyncapi.load
    public |= {"testing", "datasets", "demo", "asyncapi"}
    assert set(ek.__all__) - {"__version__"} == public
    assert list(ek.__all__) == sorted(ek.__all__)


def test_every_public_name_has_a_docstring():
    for name in ek.__all__:
        obj = getattr(ek, name)
        if callable(obj):
            assert inspect.getdoc(obj), name
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and callable(member):
                    assert inspect.getdoc(member), f"{name}.{attr}"


def test_errors_inherit_the_matching_builtins():
    assert issubclass(ek.TraceFormatError, ValueError)
    assert issubclass(ek.SpecError, ValueError)
    assert issubclass(ek.PublishError, ValueError)
    assert issubclass(ek.ConnectError, ConnectionError)
    assert issubclass(ek.ServerNotFoundError, FileNotFoundError)
    assert issubclass(ek.ServerTimeoutError, TimeoutError)
    assert issubclass(ek.JetStreamError, RuntimeError)
    assert issubclass(ek.SystemAccountError, PermissionError)
    # Term and Nak are not errors evtkit raises: handlers raise them to settle a message.
    signals = {ek.Term, ek.Nak}
    for name in ek.__all__:
        obj = getattr(ek, name)
        if inspect.isclass(obj) and issubclass(obj, Exception) and obj not in signals:
            assert issubclass(obj, ek.EvtkitError)
