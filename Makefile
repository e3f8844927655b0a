# Everything a fresh machine with python3 and make needs: uv is bootstrapped from PyPI when missing.
SHELL := /bin/bash
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
RUN := $(UV) run --frozen

.PHONY: install postgresql demo screenshot test lint typecheck unit validate bench

$(CURDIR)/.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/python -m pip install --quiet --disable-pip-version-check uv

## --compile-bytecode: every Dagster process (code server, run worker, step) starts from compiled modules, even where
## PYTHONDONTWRITEBYTECODE keeps Python from caching them itself (about 2.3 s less per process start here).
install: $(UV)
	$(UV) sync --frozen --compile-bytecode --group deploy

## The main job on local defaults: sandbox API + local emulators + Dagster UI.
demo: install
	$(RUN) hatch-pipeline demo

## The README's pictures (docs/asset-graph.png, docs/bigquery-asset.png), taken from the demo with headless Chromium.
## Debian's chromium package is installed first when it is missing (apt-get: run as root, as on the project's machines).
screenshot: install
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	$(RUN) hatch-pipeline screenshot --output docs/asset-graph.png --asset-output docs/bigquery-asset.png

## PostgreSQL for the production-topology tests (hatch_pipeline_tests/e2e): Debian's package where it is missing
## (apt-get: run as root, as on the project's machines). The tests start a cluster of their own; no service is used.
postgresql:
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || (apt-get update && apt-get install -y postgresql)

## The test command (CI runs exactly this): lint, types, definitions, tests.
test: install postgresql lint typecheck validate unit

lint:
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck:
	$(RUN) mypy

validate:
	$(RUN) dagster definitions validate -w workspace.yaml

## Two or more pytest workers (one per core), each with its own emulators; a test file stays on one worker, in order
## (the end-to-end module shares one deployment across its tests). A single `pytest FILE` runs in one process.
unit:
	$(RUN) pytest -n auto --dist loadfile

## Reproducible measurements against baselines and peers run beside them (ratios, never asserts); a few minutes.
## The bench group (dlt, a peer measured beside ours) is installed here only: make test never needs it.
bench: $(UV)
	$(UV) sync --frozen --compile-bytecode --group deploy --group bench
	$(UV) run --frozen --group bench python -m benchmarks.parse_memory
	$(UV) run --frozen --group bench python -m benchmarks.range_calls
	$(UV) run --frozen --group bench python -m benchmarks.backfill_exports
	$(UV) run --frozen --group bench python -m benchmarks.ledger_senders
	$(UV) run --frozen --group bench python -m benchmarks.run_overhead
