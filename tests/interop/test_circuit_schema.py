"""docs/circuit.schema.json: a valid JSON Schema that real circuit files meet and broken ones fail.

(tests/conftest.py also validates every circuit.json any test writes.)"""
from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from circuit_schema import circuit_validator


def test_the_schema_is_a_valid_draft_2020_12_schema():
    circuit_validator()  # check_schema raises on a malformed schema


def test_a_pruned_and_checked_circuit_validates(toy_circuit_run):
    run, _ = toy_circuit_run
    obj = json.loads((run / "circuits" / "toy" / "circuit.json").read_text())
    assert obj["checks"] and {"necessity", "sufficiency"} <= set(obj["checks"])
    circuit_validator().validate(obj)


@pytest.mark.parametrize("breaks", [
    lambda o: o.pop("schema_version"),
    lambda o: o.__setitem__("schema_version", 2),
    lambda o: o["model"].pop("d_mlp"),
    lambda o: o["nodes"][0].__setitem__("site", "mlp_hidden"),
    lambda o: o["nodes"][0].__setitem__("id", "no index"),
    lambda o: o["links"][0].pop("weight"),
    lambda o: o["links"][0].__setitem__("kind", "attention"),
    lambda o: o["metrics"].__setitem__("ablation", "noise"),
    lambda o: o["metrics"]["calibration"].__setitem__("scale", -1.0),
    lambda o: o["checks"]["necessity"].__setitem__("verdict", "maybe"),
    lambda o: o.__setitem__("details", {"blocks.0.mlp.hook_post:0": {"snippets": [{"tokens": "x"}]}}),
])
def test_broken_circuits_fail(toy_circuit_run, breaks):
    run, _ = toy_circuit_run
    obj = copy.deepcopy(json.loads((run / "circuits" / "toy" / "circuit.json").read_text()))
    breaks(obj)
    with pytest.raises(jsonschema.ValidationError):
        circuit_validator().validate(obj)
