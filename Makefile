# The two commands of the README. Both create .venv in the repo root when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench bench-compare clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.examples: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[examples]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	@# the console's browser tests drive Debian's chromium (Playwright cannot download one here)
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y --no-install-recommends chromium \
	    || { apt-get update && apt-get install -y --no-install-recommends chromium; }; \
	  else echo "chromium is missing: run 'sudo apt-get install -y --no-install-recommends chromium'" \
	    "(the console's browser tests skip without it, and fail under CI)"; fi; \
	fi
	touch $@ $(VENV)/.examples

run: $(VENV)/.examples  ## install, then serve examples/ on SQLite + ./.freight/
	$(BIN)/freight serve examples/

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests examples bench
	$(BIN)/mypy

test: $(VENV)/.dev lint  ## install dev extras, lint, type-check, run every test
	$(BIN)/pytest -n 2 --dist loadgroup -q

bench: $(VENV)/.examples  ## B1 + B2 + B3 (bench/README.md), 3 rounds, JSON lines
	$(BIN)/python bench/bench.py --rounds 3

# every workload of bench/README.md, BASE (default: where this branch left main) against
# this checkout, in one sitting: make bench-compare BASE=REV [ROUNDS=2] [QUICK=1] [ONLY=B1,B2]
bench-compare: $(VENV)/.dev
	$(BIN)/python bench/compare.py --rounds $(or $(ROUNDS),2) $(if $(BASE),--base $(BASE)) \
	  $(if $(QUICK),--quick) $(if $(ONLY),--only $(ONLY)) $(if $(OUT),--out $(OUT))

clean:
	rm -rf $(VENV) .freight .pytest_cache .mypy_cache .ruff_cache
