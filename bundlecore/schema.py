"""Loading the JSON Schemas shipped in schemas/ and turning the first violation into one line."""

from __future__ import annotations

import functools
import json
from importlib import resources

import jsonschema


@functools.cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(resources.files("bundlecore.schemas").joinpath(name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def first_error(name: str, instance) -> str | None:
    """None if `instance` is valid, else 'at <path>: <message>' for the most relevant error."""
    errors = sorted(validator(name).iter_errors(instance), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return None
    err = jsonschema.exceptions.best_match(errors)
    where = ".".join(str(p) for p in err.absolute_path) or "top level"
    return f"at {where}: {err.message}"
