"""The nats-py fast path: available on the pinned versions, same results as the public path."""

from __future__ import annotations

import pandas as pd

import evtkit as ek
from evtkit.capture import _fastpath


async def capture(url: str, fast: bool) -> pd.DataFrame:
    async with ek.connect(url, name=f"fast-{fast}", fast=fast) as bus:
        assert bus._fast is fast
        await bus.tap(f"fp{int(fast)}.>")

        async def handler(event):
            if event.subject.endswith("a"):
                await bus.publish(f"fp{int(fast)}.b", {"from": event.id}, headers={"X": "1"})

        await bus.subscribe(f"fp{int(fast)}.a", handler, consumer="h")
        for i in range(20):
            await bus.publish(f"fp{int(fast)}.a", {"i": i}, reply="reply.to")
        await bus.nc.publish(f"fp{int(fast)}.a", b"\xffbare")
        await bus.settle()  # all handled, and what the handler published came back too
        obs = bus.trace().observations
    obs = obs[obs["kind"] != "handled"].copy()
    obs["subject"] = obs["subject"].str.slice(3)
    return obs.sort_values(["kind", "subject", "seq"]).reset_index(drop=True)


class TestFastPath:
    def test_available_on_the_installed_nats_py(self):
        assert _fastpath.available()

    def test_unavailable_outside_the_supported_range(self, monkeypatch):
        monkeypatch.setattr(_fastpath, "_nats_version", lambda: (3, 0, 0))
        assert not _fastpath.available()

    async def test_same_observations_as_the_public_path(self, url):
        fast, slow = await capture(url, True), await capture(url, False)
        assert len(fast) == len(slow) > 40
        for column in ("kind", "subject", "size", "mode", "reply"):
            assert fast[column].tolist() == slow[column].tolist(), column
        # Ids differ between runs; the shape of every row must not.
        sizes = [[len(p) for p in ek.as_bytes(f["payload"])] for f in (fast, slow)]
        assert sizes[0] == sizes[1]
        for frame in (fast, slow):
            assert frame["event_id"].notna().all()
            bare = frame[frame["mode"] == "bare"]
            assert len(bare) == 2 and bare["payload"].eq(b"\xffbare").all()

    async def test_other_subscriptions_still_reach_nats_py(self, bus):
        await bus.tap()  # routes '>' to the recorder...

        async def responder(msg):
            await msg.respond(b"pong")

        await bus.nc.subscribe("svc.ping", cb=responder)
        # ...but request/reply inboxes and plain subscriptions keep working.
        reply = await bus.nc.request("svc.ping", b"ping", timeout=2)
        assert reply.data == b"pong"
