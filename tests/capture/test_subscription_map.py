"""The subscription map from CONNZ/SUBSZ, asked as the system account of a real server."""

from __future__ import annotations

import nats
import pytest

import evtkit as ek


class TestSubscriptionMap:
    async def test_named_connections_subjects_and_queue_groups(self, nats_server, url):
        one = await nats.connect(url, name="worker-1")
        two = await nats.connect(url, name="worker-2")
        try:
            async def cb(msg):
                pass
            await one.subscribe("jobs.*", queue="workers", cb=cb)
            await two.subscribe("jobs.*", queue="workers", cb=cb)
            await two.subscribe("jobs.urgent", cb=cb)
            await one.flush()
            await two.flush()
            async with ek.connect(url, name="mapper") as bus:
                await bus.subscribe("audit.>", lambda e: None, consumer="audit")
                subs = await bus.subscriptions(**nats_server.system_options())
            frame = subs.frame
            named = frame[~frame["internal"]]
            rows = set(zip(named["connection"], named["subject"], named["queue"].fillna(""),
                           strict=True))
            assert {("worker-1", "jobs.*", "workers"), ("worker-2", "jobs.*", "workers"),
                    ("worker-2", "jobs.urgent", ""), ("mapper", "audit.>", "")} <= rows
            assert subs.servers == [nats_server.name]
            # Who would receive jobs.urgent: one of the two queue members, and worker-2.
            who = subs.receivers("jobs.urgent")
            gets = dict(zip(zip(who["connection"], who["subject"], strict=True), who["gets"],
                            strict=True))
            assert gets == {("worker-1", "jobs.*"): "1 of 2", ("worker-2", "jobs.*"): "1 of 2",
                            ("worker-2", "jobs.urgent"): "every message"}
            assert subs.receivers("nobody.listens").empty
            assert "SubscriptionMap" in repr(subs)
        finally:
            await one.close()
            await two.close()

    async def test_streams_show_as_internal_receivers(self, nats_server, url):
        async with ek.connect(url, name="streams") as bus:
            await bus.add_stream("MAPPED", ["mapped.>"])
            subs = await bus.subscriptions(**nats_server.system_options())
        inside = subs.receivers("mapped.x", internal=True)
        assert (inside["internal"] & (inside["subject"] == "mapped.>")).any()
        assert subs.receivers("mapped.x").empty  # no client subscribes to it

    async def test_the_embedded_server_needs_no_credentials(self, monkeypatch):
        monkeypatch.delenv("NATS_URL", raising=False)
        async with ek.connect(name="solo") as bus:
            await bus.subscribe("solo.x", lambda e: None, consumer="c", queue="g")
            subs = await bus.subscriptions()
        assert ("solo", "solo.x", "g") in set(zip(
            subs.frame["connection"], subs.frame["subject"], subs.frame["queue"], strict=True))
        assert (subs.frame.loc[~subs.frame["internal"], "account"] == "APP").all()

    async def test_a_bus_connected_by_url_to_an_embedded_server_uses_it(self, bus):
        await bus.subscribe("mine.x", lambda e: None, consumer="c")
        subs = await bus.subscriptions()
        assert ("test", "mine.x") in set(zip(subs.frame["connection"], subs.frame["subject"],
                                             strict=True))

    async def test_without_system_credentials_it_says_what_to_pass(self):
        secret = "pw-99"
        async with ek.EmbeddedServer(accounts=False, config=(
                f'authorization {{ user: app, password: "{secret}" }}')) as server:
            url = server.url.replace("nats://", f"nats://app:{secret}@")
            async with ek.connect(url, name="plain") as bus:
                with pytest.raises(ek.SystemAccountError, match="needs the system account"):
                    await bus.subscriptions()

    async def test_wrong_credentials_are_a_clear_error_without_the_password(self, bus):
        with pytest.raises(ek.SystemAccountError) as info:
            await bus.subscriptions(user="evtkit-sys", password="wrong-pw-123")
        assert "wrong-pw-123" not in str(info.value)

    async def test_the_system_password_is_not_in_repr_or_url(self, nats_server):
        secret = nats_server.system_options()["password"]
        assert secret not in repr(nats_server) and secret not in (nats_server.url or "")
