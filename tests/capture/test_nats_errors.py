"""nats-py's failures become evtkit errors in one place, with the words that help."""

from __future__ import annotations

import nats
import pytest

from evtkit import ConnectError, JetStreamError, PublishError
from evtkit.capture._nats_errors import nats_errors, reason


class TestNatsErrors:
    def test_a_client_failure_becomes_the_given_error_and_keeps_its_cause(self):
        with pytest.raises(JetStreamError) as caught, nats_errors(JetStreamError, "could not"):
            raise nats.errors.TimeoutError
        assert str(caught.value).startswith("could not: ")
        assert isinstance(caught.value.__cause__, nats.errors.TimeoutError)

    def test_specific_errors_get_their_own_message(self):
        hints = {nats.errors.NoRespondersError: "no stream stores it: add one"}
        with pytest.raises(PublishError, match="^no stream stores it: add one$"), \
                nats_errors(PublishError, "not stored", hints):
            raise nats.errors.NoRespondersError

    def test_hidden_cause_and_no_credentials_in_the_message(self):
        with pytest.raises(ConnectError) as caught, \
                nats_errors(ConnectError, "no connection", hide_cause=True):
            raise OSError("refused by nats://bob:hunter2@host:4222")
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
        assert "hunter2" not in str(caught.value) and "nats://host:4222" in str(caught.value)

    def test_other_exceptions_pass_through_untouched(self):
        with pytest.raises(KeyError), nats_errors(JetStreamError, "x"):
            raise KeyError("not a NATS failure")

    def test_reason_prefers_the_servers_description(self):
        class Described(nats.errors.Error):
            description = "stream name already in use"

        assert reason(Described()) == "stream name already in use"
        assert reason(TimeoutError()) == "TimeoutError"
