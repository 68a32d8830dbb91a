"""Shared fixtures: one real nats-server for the session (the same helper users get)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

import evtkit as ek


@pytest.fixture(scope="session")
def nats_server() -> Iterator[ek.EmbeddedServer]:
    """A real nats-server on a free loopback port, for the whole session.

    A missing binary fails the session loudly (it is a dependency, installed by make test).
    """
    with ek.EmbeddedServer() as server:
        yield server


@pytest.fixture
def url(nats_server: ek.EmbeddedServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The session server's URL; NATS_URL is cleared so nothing leaks in from outside."""
    monkeypatch.delenv("NATS_URL", raising=False)
    assert nats_server.url is not None
    return nats_server.url


@pytest.fixture
async def bus(url: str) -> AsyncIterator[ek.Bus]:
    """A connected bus named 'test' on the session server."""
    async with ek.connect(url, name="test") as bus:
        yield bus


@pytest.fixture(autouse=True)
def _no_nats_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests decide where to connect; a developer's NATS_URL must not redirect them.
    if "NATS_URL" in os.environ:
        monkeypatch.delenv("NATS_URL")
