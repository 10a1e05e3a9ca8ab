"""The published circuit.json schema (docs/circuit.schema.json) as a jsonschema validator."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

CIRCUIT_SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "circuit.schema.json"


@lru_cache(maxsize=1)
def circuit_validator():
    import jsonschema

    schema = json.loads(CIRCUIT_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(obj) -> list[str]:
    """``path: message`` for each way ``obj`` breaks the schema (empty when it is valid)."""
    errors = sorted(circuit_validator().iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:200]}" for e in errors]
