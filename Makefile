# ism — the two commands a newcomer needs: `make demo` and `make test`. Both build the venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The venv is keyed by a hash of the dependency pins: a changed pin rebuilds it from scratch.
DEPS_KEY := $(shell $(PYTHON) ci/deps_key.py 2>/dev/null || echo unknown)
DEPS_STAMP := $(VENV)/.deps-$(DEPS_KEY)
PYTEST := $(BIN)/python -m pytest
CONFIG ?= config/config.yaml

.PHONY: venv install demo report slurm-profile test test-fast test-slow test-slurm lint format clean

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

# The default study end to end through the workflow (the same DAG `dvc repro` and the cluster run).
demo: install
	"$(BIN)/snakemake" --profile profiles/local --configfile $(CONFIG)
	@echo "report: results/report.md, plot: results/fid_vs_steps.png, grids: results/<run>/samples/*.png"

# The Snakemake report of a finished study (CONFIG): FID plot and table, every sample grid, training curves, study.
report: install
	"$(BIN)/snakemake" --report results/report.html --configfile $(CONFIG)

# Install profiles/slurm as the user profile `slurm` (then: snakemake --profile slurm). Cluster settings only:
# PARTITION (GPU jobs), CPU_PARTITION, ACCOUNT, STATUS_COMMAND (squeue without slurmdbd), INIT_SECONDS (first
# status check); job sizes are the study's (pipeline.resources).
slurm-profile: install
	"$(BIN)/python" profiles/install.py $(if $(PARTITION),--partition '$(PARTITION)') \
	  $(if $(CPU_PARTITION),--cpu-partition '$(CPU_PARTITION)') $(if $(ACCOUNT),--account '$(ACCOUNT)') \
	  $(if $(STATUS_COMMAND),--status-command '$(STATUS_COMMAND)') $(if $(INIT_SECONDS),--init-seconds '$(INIT_SECONDS)')

lint: install
	"$(BIN)/ruff" check src tests benchmarks profiles
	"$(BIN)/ruff" format --check src tests benchmarks profiles
	"$(BIN)/snakefmt" --check Snakefile workflow
	cd "$(CURDIR)" && PATH="$(abspath $(BIN)):$$PATH" snakemake --lint

format: install
	"$(BIN)/ruff" format src tests benchmarks profiles
	"$(BIN)/ruff" check --fix src tests benchmarks profiles
	"$(BIN)/snakefmt" Snakefile workflow

test-fast: install
	$(PYTEST)

test-slow: install
	$(PYTEST) -m slow

# A real single-node SLURM cluster on localhost (tests/slurm/cluster.sh installs and starts it, then stops it).
# Where none can run (not root, no apt-get/dpkg) the tier skips with one line; ISM_SLURM_REQUIRED=1 (.ci/run)
# makes that a failure.
test-slurm: install
	$(PYTEST) -m slurm -rs tests/slurm

# What .ci/run calls: lint, the default suite, the slow tier, then the SLURM tier.
test: lint test-fast test-slow test-slurm

clean:
	rm -rf results models data/latents work logs .snakemake .pytest_cache
