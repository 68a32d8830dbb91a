"""The one compiled part: evtkit/_columnar.c lays capture rows out as columns (the first step
of building observation frames, about 2x faster than the numpy/Arrow path). It is optional:
without a C compiler the install still succeeds and evtkit takes that path, which gives the
same frames (tests/test_columns.py checks both). Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "evtkit._columnar", ["evtkit/_columnar.c"], optional=True,
    extra_compile_args=["-O2", "-pthread", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
    extra_link_args=["-pthread"],
)])
