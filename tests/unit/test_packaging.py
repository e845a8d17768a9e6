"""A wheel ships every package of the source tree: a subpackage missing from pyproject.toml works
in the editable checkout and fails only after an offline install on the intranet."""

import pathlib
import tomllib

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_every_python_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts)
             for top in ("bundlecore", "bundler", "importer") for p in (REPO / top).rglob("__init__.py")}
    assert found <= listed, f"missing from pyproject.toml packages: {sorted(found - listed)}"
