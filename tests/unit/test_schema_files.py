"""The shipped JSON Schemas are valid Draft 2020-12 schemas. Checked here once rather than at every
start of `bundle` (the meta-schema check cost ~0.2 s of each command's start-up)."""

import json
from importlib import resources

import jsonschema
import pytest

SCHEMAS = sorted(e.name for e in resources.files("bundlecore.schemas").iterdir() if e.name.endswith(".schema.json"))


def test_the_schemas_are_shipped():
    assert {"manifest.schema.json", "spec.schema.json", "run.schema.json"} <= set(SCHEMAS)


@pytest.mark.parametrize("name", SCHEMAS)
def test_each_shipped_schema_is_valid_against_the_meta_schema(name):
    schema = json.loads(resources.files("bundlecore.schemas").joinpath(name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"]


def test_a_broken_schema_would_be_caught_by_this_check():
    with pytest.raises(jsonschema.exceptions.SchemaError):
        jsonschema.Draft202012Validator.check_schema({"type": "no-such-type"})
