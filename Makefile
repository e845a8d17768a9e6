# bundle: `make test` (`make check`, then the whole suite, real engine/registry/gpg), `make check`
# (ruff, mypy, import contracts: seconds), `make test-unit` (pure functions, no engine, seconds), `make demo` (the story end to end),
# `make bench` (build/verify/import against docker save|zstd and docker load),
# `make offline-kit [KIT_PYTHON=3.12] [KIT_PLATFORM=...]` (wheels + install.sh for the intranet, in dist/).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the suite mostly waits on health gates and rollouts: test files run in parallel workers, more
# than the cores, the slowest files first (tests/conftest.py; README)
TEST_WORKERS ?= 6

.PHONY: test check test-unit demo bench engine podman-engine venv clean offline-kit man cli-doc

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

engine:
	bash scripts/ensure-docker.sh

# the Podman tier of the suite (tests/test_podman.py): `podman system service` on its own socket
podman-engine:
	bash scripts/ensure-podman.sh >/dev/null

# lint, types (strict on bundlecore/, and every target kind against the kind protocol) and the
# import contracts of docs/architecture.md; configured in pyproject.toml
check: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: venv check engine podman-engine
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

demo: engine venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

bench: engine venv
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

offline-kit:
	KIT_PYTHON="$(KIT_PYTHON)" KIT_PLATFORM="$(KIT_PLATFORM)" PY="$(PY)" bash scripts/offline-kit.sh

man: venv
	$(BIN)/python scripts/gen-man.py

cli-doc: venv
	$(BIN)/python scripts/gen-cli-doc.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
