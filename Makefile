# ism — the two commands a newcomer needs: `make demo` and `make test`. Both build the venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The venv is keyed by a hash of the dependency pins: a changed pin rebuilds it from scratch.
DEPS_KEY := $(shell $(PYTHON) ci/deps_key.py 2>/dev/null || echo unknown)
DEPS_STAMP := $(VENV)/.deps-$(DEPS_KEY)
PYTEST := $(BIN)/python -m pytest
CONFIG ?= config/config.yaml

.PHONY: venv install demo test test-fast test-slow lint format clean

$(DEPS_STAMP):
	rm -rf "$(VENV)"
	$(PYTHON) -m venv "$(VENV)"
	"$(BIN)/pip" install --quiet --upgrade pip setuptools wheel
	"$(BIN)/pip" install --quiet -e '.[dev]'
	touch "$@"

# The package itself is (re)installed every time: a cached venv may come from another clone of the repo.
install: $(DEPS_STAMP)
	"$(BIN)/pip" install --quiet --no-deps --no-build-isolation -e .

venv: install

DEMO_RUNS ?= fm sm ism

demo: install
	@for run in $(DEMO_RUNS); do \
	  "$(BIN)/ism" train --config $(CONFIG) --run $$run --live-dir results/$$run/train_log && \
	  "$(BIN)/ism" -q sample --checkpoint results/$$run/model.pt --steps 1 2 4 8 16 32 64 128 || exit 1; \
	  for samples in results/$$run/samples/*.npz; do \
	    name=$$(basename "$$samples" .npz); \
	    "$(BIN)/ism" -q evaluate --samples "$$samples" --config $(CONFIG) --out "results/$$run/metrics/$$name.json" || exit 1; \
	  done; \
	done
	"$(BIN)/ism" -q evaluate --floor --config $(CONFIG) --out results/floor.json
	"$(BIN)/ism" -q report --runs $(DEMO_RUNS) --floor results/floor.json --out-dir results
	@echo "report: results/report.md, plot: results/fid_vs_steps.png, grids: results/<run>/samples/*.png"

lint: install
	"$(BIN)/ruff" check src tests benchmarks
	"$(BIN)/ruff" format --check src tests benchmarks

format: install
	"$(BIN)/ruff" format src tests benchmarks
	"$(BIN)/ruff" check --fix src tests benchmarks

test-fast: install
	$(PYTEST)

test-slow: install
	$(PYTEST) -m slow

# What .ci/run calls: lint, the default suite, then the slow tier.
test: lint test-fast test-slow

clean:
	rm -rf results work .pytest_cache
