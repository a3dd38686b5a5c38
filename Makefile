# `make help` lists the targets. Every target runs from the repository root.
PY ?= python
SWEEP ?=

.PHONY: help install lock test-latest run test test-fast test-slow records lint bench grid-table plots report slurm-up slurm-down clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

install: ## Install the project with test extras at the locked versions (requirements/lock.txt)
	$(PY) -m pip install -c requirements/lock.txt -e '.[test]'

LOCK_ARGS = --quiet --extra test --extra interp --strip-extras --allow-unsafe --no-emit-index-url \
	--no-emit-find-links -c requirements/constraints.in -o requirements/lock.txt pyproject.toml

lock: ## Re-pin requirements/lock.txt to the newest versions pyproject.toml allows (pip-tools)
	$(PY) -m pip install --quiet pip-tools
	$(PY) -m piptools compile --upgrade $(LOCK_ARGS)
	$(PY) scripts/check_lock.py

test-latest: ## The default suite under the newest allowed versions, in a temporary venv (no lock)
	scripts/test-latest.sh

records: ## Regenerate tests/fixtures/records (only after a change that alters run records on purpose)
	$(PY) tests/fixtures/make_records.py

run: ## Run the small default experiment (groks in well under a minute on 2 cores)
	$(PY) launch.py

test: ## Run the whole test suite, default then slow (what CI runs)
	$(PY) -m pytest -q
	$(PY) -m pytest -q -m slow

test-fast: ## Run the default suite (the tests not marked slow; ~5 min on 2 cores)
	$(PY) -m pytest -q

test-slow: ## Run the slow end-to-end tests (seed claims, sweeps, SLURM; ~15 min on 2 cores)
	$(PY) -m pytest -q -m slow

lint: ## ruff (style, unused names, import order) and the import layers (pyproject.toml)
	$(PY) -m ruff check grok analysis hydra_plugins launch.py bench tests scripts
	$(PY) scripts/check_layers.py

slurm-up: ## Start a single-node SLURM here (root; installs Debian packages if missing)
	scripts/slurm-local.sh up

slurm-down: ## Stop it
	scripts/slurm-local.sh down

bench: ## Step time (token tables vs every position), cost of the measures, packs vs single runs, boundary search vs grid (~15 min)
	$(PY) bench/step_time.py
	$(PY) bench/measures_cost.py
	$(PY) bench/packed.py --sizes 1,2,4,8 --fracs 0.3,0.9 --check
	$(PY) bench/boundary.py --coarse 5,3

grid-table: ## Grok/no-grok table of the latest sweep, or of SWEEP="dir [dir...]"
	$(PY) -m analysis grid $(SWEEP)

plots: ## PNG curves (losses, accuracies, measures) of every run of the latest sweep or SWEEP=...
	$(PY) -m analysis plots $(SWEEP)

report: ## One self-contained HTML page (grid, curves, spectra, measures) of the latest sweep or SWEEP=...
	$(PY) -m analysis report $(SWEEP)

clean: ## Remove outputs/ (all local run records!)
	rm -rf outputs
