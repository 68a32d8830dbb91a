"""The order payload schema the conformance and guard benchmarks check events against
(imported by ``bench/conformance.py`` and ``bench/guard.py``, which run as scripts from
this directory)."""

ORDER = {"type": "object", "required": ["order", "amount", "currency"], "properties": {
    "order": {"type": "integer", "minimum": 1},
    "amount": {"type": "number", "minimum": 0},
    "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
    "items": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["sku", "qty"], "properties": {
            "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"},
            "qty": {"type": "integer", "minimum": 1}}}}}}
