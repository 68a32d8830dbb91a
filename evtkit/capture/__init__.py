"""Capture: everything that talks to NATS and appends observation rows.

The bus (:mod:`.bus`) owns the connection and hands each feature one narrow object, the
:class:`~evtkit.capture.router.Router`, to attach its subscriptions and be closed with the bus.
The contract features fulfil is written in :mod:`.contract`. Nothing here builds frames:
rows become the ``observations`` frame in :mod:`evtkit.observation`, beside the schema.
"""
