"""Loading the JSON Schemas shipped in schemas/ and turning the first violation into one line.

The schemas reference each other (run.schema.json holds the run settings both the spec and the
manifest use), so every validator resolves `$ref`s against one registry of the shipped files;
nothing is ever fetched."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import jsonschema
from referencing import Registry, Resource

# Schemas of what the tool writes (not read from a signer): a line of the importer's audit log.
AUDIT_EVENT = "audit-event.schema.json"


CLI_DIR = "cli"  # schemas/cli/: the `--json` documents (common.schema.json + one per command)


@functools.cache
def _registry() -> Registry:
    resources_ = []
    root = resources.files("bundlecore.schemas")
    for entry in [*root.iterdir(), *root.joinpath(CLI_DIR).iterdir()]:
        if entry.name.endswith(".schema.json"):
            schema = json.loads(entry.read_text())  # each is valid against the meta-schema: a unit test
            resources_.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources_)


def cli_schema_name(verb: str) -> str:
    """The schema of `bundle VERB --json`'s document, for `validator`/`first_error`."""
    return f"{CLI_DIR}/{verb}.schema.json"


def load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(resources.files("bundlecore.schemas").joinpath(name).read_text())
    return schema


@functools.cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load(name), registry=_registry(), format_checker=jsonschema.FormatChecker())


def first_error(name: str, instance: object) -> str | None:
    """None if `instance` is valid, else 'at <path>: <message>' for the most relevant error."""
    errors = sorted(validator(name).iter_errors(instance), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return None
    err = jsonschema.exceptions.best_match(errors)
    where = ".".join(str(p) for p in err.absolute_path) or "top level"
    if err.validator == "pattern" and isinstance(err.schema, dict) and err.schema.get("description"):
        # The pattern itself helps nobody; its description says what is expected.
        return f"at {where}: {err.instance!r} is not {err.schema['description']}"
    if err.validator == "not" and isinstance(err.schema, dict) and err.schema.get("description"):
        # A refused value or key: the schema's description says why it is not allowed there.
        return f"at {where}: {err.instance!r} is not allowed ({err.schema['description']})"
    return f"at {where}: {err.message}"


def bounds(definition: str) -> tuple[int, int]:
    """(minimum, maximum) of an integer definition in run.schema.json: limits a duration written
    as text ('10m') must meet too, kept in the schema alone."""
    d = json.loads(resources.files("bundlecore.schemas").joinpath("run.schema.json").read_text())["$defs"][definition]
    return d["minimum"], d["maximum"]
