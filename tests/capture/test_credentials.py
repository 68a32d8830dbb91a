"""Credentials never reach what evtkit shows: URLs and free text are cleaned."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evtkit.capture.credentials import public_url, redact


class TestRedact:
    @pytest.mark.parametrize(("text", "clean"), [
        ("nats://alice:s3cret@host:4222 refused", "nats://host:4222 refused"),
        ("tls://tok@h1:4222,nats://u:p@h2", "tls://h1:4222,nats://h2"),
        ("NATS://U:P@H", "NATS://H"),
        ("no url here: user:pass@host", "no url here: user:pass@host"),
        ("nats://host:4222/path@x", "nats://host:4222/path@x"),  # @ after the host: not userinfo
    ])
    def test_removes_userinfo_from_every_url(self, text, clean):
        assert redact(text) == clean

    @given(st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True),
           st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True))
    def test_no_password_survives(self, user, password):
        text = f"could not connect to nats://{user}:{password}@example:4222 (timeout)"
        assert redact(text) == "could not connect to nats://example:4222 (timeout)"


class TestPublicUrl:
    @pytest.mark.parametrize(("url", "shown"), [
        ("nats://alice:s3cret@host:4222", "nats://host:4222"),
        ("host:4222", "nats://host:4222"),
        ("tls://token@[::1]:4443", "tls://[::1]:4443"),
        ("nats://host", "nats://host"),
    ])
    def test_shows_scheme_host_and_port_only(self, url, shown):
        assert public_url(url) == shown
