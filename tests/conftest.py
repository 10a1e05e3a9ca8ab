"""Every circuit file a test writes is checked against the published JSON Schema.

``docs/circuit.schema.json`` documents ``circuit.json`` for other tools; wrapping the one
writer every circuit goes through (``sparsecircuits.io.atomic_write_json``: prune, check,
node details) keeps the schema and the files from drifting apart.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from circuit_schema import schema_errors


@pytest.fixture(autouse=True, scope="session")
def _circuit_files_match_schema():
    import sparsecircuits.io as sio

    original = sio.atomic_write_json

    def checked(path, obj, *args, **kwargs):
        result = original(path, obj, *args, **kwargs)
        if Path(path).name == "circuit.json":
            errors = schema_errors(json.loads(Path(path).read_text()))
            assert not errors, f"{path} does not match docs/circuit.schema.json: " + "; ".join(errors[:5])
        return result

    sio.atomic_write_json = checked
    yield
    sio.atomic_write_json = original
