"""Conformance benchmark: every event of a large trace checked against an AsyncAPI document,
against a plain ``jsonschema`` loop over the same payloads in the same run.

    python bench/conformance.py [--events 1000000] [--reference-sample 0] [--seed 0]

A vectorised generator (numpy → Arrow, no Python object per event) builds a trace of
``--events`` published events: four channels, five message types (orders placed and
shipped, payments done or failed, stock reserved), CloudEvents headers plus an
``x-tenant`` header, payloads with realistic cardinality (order ids and amounts vary, stock
reservations repeat), about 1 % of events breaking their schema in one of six ways and
0.2 % on a subject no channel declares. It then times, in this process:

- ``trace.conformance(spec)`` — every event's channel, message, verdict and violations
  (payloads and headers), from the trace's ``events`` frame (derived before the clock
  starts; the time to derive it is printed apart);
- ``.summary()`` of that result;
- the reference: ``Draft202012Validator(schema).iter_errors(orjson.loads(p))`` for every
  payload with the schema of the message the generator meant (payloads only, no subject
  matching, no headers). ``--reference-sample N`` runs it on N payloads and scales up.

and prints both, their ratio, the invalid events each found (against the generator's
count), and the peak resident memory while checking (the high-water mark is reset first,
so the generation does not count).
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from jsonschema import Draft202012Validator
from orders import ORDER  # (this directory: the scripts run from here)

import evtkit as ek
from evtkit.schema import OBSERVATIONS, SCHEMA_VERSION, to_frame, with_missing

NS = 1_000_000_000
T0 = 1_900_000_000 * NS
RATE = 20_000  # events per second

_SHIPPED = {"type": "object", "required": ["order", "carrier", "tracking"], "properties": {
    "order": {"type": "integer", "minimum": 1},
    "carrier": {"type": "string", "enum": ["dhl", "ups", "post"]},
    "tracking": {"type": "string", "minLength": 8}}}
_DONE = {"type": "object", "required": ["order", "paid"], "properties": {
    "order": {"type": "integer"}, "paid": {"const": True}}}
_FAILED = {"type": "object", "required": ["order", "paid", "reason"], "properties": {
    "order": {"type": "integer"}, "paid": {"const": False}, "reason": {"type": "string"}}}
_RESERVED = {"type": "object", "required": ["sku", "qty"], "properties": {
    "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"},
    "qty": {"type": "integer", "minimum": 1, "maximum": 100}}}
_TENANT = {"type": "object", "required": ["x-tenant"], "properties": {
    "x-tenant": {"type": "string", "pattern": "^[a-z]+$"}}}

SCHEMAS = {"OrderPlaced": ORDER, "OrderShipped": _SHIPPED, "PaymentDone": _DONE,
           "PaymentFailed": _FAILED, "StockReserved": _RESERVED}


def spec_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document the traffic is checked against."""
    def message(name: str, headers: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "contentType": "application/json",
                               "payload": SCHEMAS[name]}
        return {**out, "headers": _TENANT} if headers else out

    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Shop", "version": "1.0.0", "x-application": "shop"},
        "channels": {
            "orderPlaced": {"address": "orders.{orderId}.placed",
                            "messages": {"placed": message("OrderPlaced")}},
            "orderShipped": {"address": "orders.{orderId}.shipped",
                             "messages": {"shipped": message("OrderShipped")}},
            "paymentDone": {"address": "payments.done",
                            "messages": {"done": message("PaymentDone", False),
                                         "failed": message("PaymentFailed", False)}},
            "stockReserved": {"address": "inventory.{warehouse}.reserved",
                              "messages": {"reserved": message("StockReserved")}},
        },
        "operations": {
            "placeOrders": {"action": "send", "channel": {"$ref": "#/channels/orderPlaced"}},
            "shipOrders": {"action": "send", "x-application": "warehouse",
                           "channel": {"$ref": "#/channels/orderShipped"}},
            "reserveStock": {"action": "send", "x-application": "warehouse",
                             "channel": {"$ref": "#/channels/stockReserved"}},
            "pay": {"action": "send", "x-application": "billing",
                    "channel": {"$ref": "#/channels/paymentDone"}},
        },
    }


# -- the traffic ---------------------------------------------------------------------------------

def _text(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _pick(rng: np.random.Generator, options: list[str], n: int) -> pa.Array:
    return pa.array(np.array(options, dtype=object)[rng.integers(0, len(options), n)],
                    pa.string())


def _join(*parts: Any) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _payloads(kind: str, n: int, rng: np.random.Generator) -> pa.Array:
    """``n`` JSON payloads of message ``kind`` (as text)."""
    order = _text(rng.integers(1, 5_000_000, n))
    sku = _join(_pick(rng, ["ABC", "DEF", "XYZ", "QRS"], n), "-",
                _text(rng.integers(1, 200, n)))
    if kind == "OrderPlaced":
        amount = _text(np.round(rng.uniform(1, 500, n), 2))
        return _join('{"order":', order, ',"amount":', amount, ',"currency":"',
                     _pick(rng, ["EUR", "USD", "GBP"], n), '","items":[{"sku":"', sku,
                     '","qty":', _text(rng.integers(1, 4, n)), "}]}")
    if kind == "OrderShipped":
        return _join('{"order":', order, ',"carrier":"', _pick(rng, ["dhl", "ups", "post"], n),
                     '","tracking":"TRK', _text(rng.integers(10**7, 10**8, n)), '"}')
    if kind == "PaymentDone":
        return _join('{"order":', order, ',"paid":true}')
    if kind == "PaymentFailed":
        return _join('{"order":', order, ',"paid":false,"reason":"',
                     _pick(rng, ["card declined", "insufficient funds"], n), '"}')
    if kind == "StockReserved":  # few skus and quantities: payloads repeat
        return _join('{"sku":"', sku, '","qty":', _text(rng.integers(1, 6, n)), "}")
    # "Legacy": on an undeclared subject.
    return _join('{"id":', order, ',"sync":true}')


# Ways an event breaks its message's payload schema: (text, what it becomes).
_BROKEN = {
    "OrderPlaced": [('{"order":', '{"order":-'), (',"currency":"', ',"curr":"'),
                    ('"sku":"', '"sku":"x')],
    "OrderShipped": [('"carrier":"', '"carrier":"fedex-')],
    "PaymentDone": [('"paid":true', '"paid":"yes"')],
    "StockReserved": [('"qty":', '"qty":-')],
}
KINDS = [  # message, share of events, subject, producer
    ("OrderPlaced", 0.35, "orders.{}.placed", "shop"),
    ("OrderShipped", 0.20, "orders.{}.shipped", "warehouse"),
    ("PaymentDone", 0.18, "payments.done", "billing"),
    ("PaymentFailed", 0.02, "payments.done", "billing"),
    ("StockReserved", 0.248, "inventory.{}.reserved", "warehouse"),
    ("Legacy", 0.002, "legacy.orders.sync", "legacy"),
]
BAD_SHARE = 0.01


def make_trace(n: int, seed: int = 0) -> tuple[ek.Trace, np.ndarray, int]:
    """The trace, the message each event was generated as (for the reference), and how many
    events the generator broke."""
    rng = np.random.default_rng(seed)
    shares = np.array([k[1] for k in KINDS])
    kind_of = rng.choice(len(KINDS), n, p=shares / shares.sum())
    payload = np.empty(n, dtype=object)
    subjects: list[pa.Array] = []
    producer = np.empty(n, dtype=object)
    broken = rng.random(n) < BAD_SHARE
    bad_tenant = np.zeros(n, bool)
    n_bad = 0
    for k, (name, _, pattern, who) in enumerate(KINDS):
        at = np.flatnonzero(kind_of == k)
        texts = _payloads(name, len(at), rng).to_numpy(zero_copy_only=False)
        ways = _BROKEN.get(name, [])
        bad = at[broken[at]] if ways else at[:0]
        n_bad += len(bad)
        if name in ("OrderPlaced", "OrderShipped", "StockReserved"):
            # Half of these events break the headers schema, half the payload's.
            in_header = bad[rng.random(len(bad)) < 0.5]
            bad_tenant[in_header] = True
            bad = np.setdiff1d(bad, in_header)
        for j, i in zip(np.searchsorted(at, bad).tolist(), bad.tolist(), strict=True):
            old, new = ways[i % len(ways)]
            texts[j] = texts[j].replace(old, new, 1)
        payload[at] = texts
        if "{}" in pattern:
            head, tail = pattern.split("{}")
            high = 5_000_000 if head.startswith("orders") else 9
            subjects.append(_join(head, _text(rng.integers(1, high, len(at))), tail))
        else:
            subjects.append(pa.array(np.full(len(at), pattern, dtype=object), pa.string()))
        producer[at] = who
    order = np.argsort(kind_of, kind="stable")  # events of each kind, in event order
    subject = pa.concat_arrays(subjects).take(pa.array(np.argsort(order)))
    ids = _join("evt-", _text(np.arange(n)))
    tenant = pa.array(np.where(bad_tenant, "ACME", "acme").astype(object), pa.string())
    source = pa.array(producer, pa.string())
    ctype = pa.array(np.array([k[0] for k in KINDS], dtype=object)[kind_of], pa.string())
    blocks = _join("NATS/1.0\r\nce-specversion: 1.0\r\nce-id: ", ids, "\r\nce-source: ",
                   source, "\r\nce-type: ", ctype, "\r\nx-tenant: ", tenant, "\r\n\r\n")
    payloads = pa.array(payload, pa.string()).cast(pa.binary())
    headers = pa.MapArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)),
                                      pa.array(np.full(n, "x-tenant", dtype=object),
                                               pa.string()), tenant)
    ts = T0 + np.arange(n, dtype=np.int64) * (NS // RATE)
    cols = {
        "seq": pa.array(np.arange(n, dtype=np.int64)),
        "kind": pa.array(np.full(n, "publish", dtype=object), pa.string()),
        "ts": pa.array(ts).cast(pa.timestamp("ns", tz="UTC")),
        "observer": source,
        "subject": subject,
        "size": pc.binary_length(payloads).cast(pa.int64()),
        "payload": payloads,
        "header_block": blocks.cast(pa.binary()),
        "headers": headers,
        "event_id": ids,
        "type": ctype,
        "source": source,
        "correlation_id": ids,
        "mode": pa.array(np.full(n, "binary", dtype=object), pa.string()),
        "id_synthetic": pa.array(np.zeros(n, bool)),
        "malformed": pa.array(np.zeros(n, np.int64)),
    }
    table = with_missing(pa.table(cols), OBSERVATIONS)
    meta = {"schema_version": SCHEMA_VERSION, "generator": "bench/conformance.py"}
    messages = np.array([k[0] for k in KINDS], dtype=object)[kind_of]
    return ek.Trace(to_frame(table, OBSERVATIONS), meta), messages, n_bad


# -- measuring -----------------------------------------------------------------------------------

def reset_peak() -> None:
    """Forget this process's resident-memory high-water mark (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_gb() -> float:
    """This process's resident-memory high-water mark since :func:`reset_peak`."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def reference(trace: ek.Trace, messages: np.ndarray, sample: int) -> tuple[float, int, int]:
    """The plain loop: seconds, payloads checked, invalid ones."""
    payloads = trace.observations["payload"]  # (publish rows: one per event, same order)
    validators = {name: Draft202012Validator(schema) for name, schema in SCHEMAS.items()}
    n = len(messages) if sample <= 0 else min(sample, len(messages))
    raw = payloads.iloc[:n].tolist()
    which = messages[:n].tolist()
    invalid = 0
    start = time.perf_counter()
    for p, name in zip(raw, which, strict=True):
        validator = validators.get(name)
        if validator is not None and any(True for _ in validator.iter_errors(orjson.loads(p))):
            invalid += 1
    return time.perf_counter() - start, n, invalid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--reference-sample", type=int, default=0,
                        help="payloads the jsonschema loop checks (0: all), scaled up")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = args.events

    start = time.perf_counter()
    trace, messages, n_bad = make_trace(n, args.seed)
    print(f"generated {n:,} events in {time.perf_counter() - start:.1f} s "
          f"({n_bad:,} broken by the generator)")
    start = time.perf_counter()
    _ = trace.events
    print(f"events frame derived in {time.perf_counter() - start:.1f} s")
    spec = ek.asyncapi.load(spec_document())
    gc.collect()

    reset_peak()
    start = time.perf_counter()
    result = trace.conformance(spec)
    checked = time.perf_counter() - start
    peak = peak_gb()
    start = time.perf_counter()
    summary = result.summary()
    summarised = time.perf_counter() - start
    valid = result.events["valid"]
    invalid = int(valid.eq(False).sum())
    print(f"trace.conformance(spec): {checked:.2f} s ({checked / n * 1e6:.2f} µs/event), "
          f"{invalid:,} invalid, {int(valid.isna().sum()):,} undeclared; "
          f"peak RSS while checking {peak:.2f} GB")
    print(f".summary(): {summarised:.2f} s, {len(summary)} findings")

    ref_s, ref_n, ref_invalid = reference(trace, messages, args.reference_sample)
    scaled = ref_s * n / ref_n
    note = "" if ref_n == n else f" (measured on {ref_n:,}, scaled up)"
    print(f"jsonschema loop (payloads only): {scaled:.2f} s{note} "
          f"({ref_s / ref_n * 1e6:.2f} µs/event), {ref_invalid:,} invalid payloads")
    print(f"ratio: trace.conformance is {scaled / checked:.1f}× faster than the jsonschema "
          f"loop; target ≤ 5 s per 1 M events: {'met' if checked / n * 1e6 <= 5 else 'missed'}")


if __name__ == "__main__":
    main()
