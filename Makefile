# Every target sets itself up on a fresh machine: a virtualenv under .venv with torch and claimbench.
#
# torch: `torch==2.13.0` resolves to the local CPU wheel on the development machines and to the
# CUDA build from PyPI on a Linux GPU box. For another CUDA version:
#   make verify TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
JOBS ?= 2
BIN = $(VENV)/bin
# Threads per pytest worker: the cores shared out among the JOBS workers. Left to itself every
# worker's torch takes all cores, and the oversubscribed thread pools made make unit 3.7 minutes
# instead of 1.3 on the 2-core machine (measured side by side).
THREADS ?= $(shell n=$$(( $$(nproc) / $(JOBS) )); [ $$n -ge 1 ] && echo $$n || echo 1)
PYTEST_N = OMP_NUM_THREADS=$(THREADS) $(BIN)/python -m pytest -n $(JOBS)

.PHONY: setup unit golden golden-update e2e claims test smoke verify plan benchmark clean-cache gpu-check

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# The behaviour suite (tests/golden/): every path training can take, a few float64 steps each,
# against committed results, with its line coverage of the training code. It pins the training
# identity that every cache key holds (claimbench/train/semantics.py). Also part of make test.
# Two numbers: the strict coverage (every line of the training code, nothing excluded), then the
# counted one, which must be at least 95%: it leaves out what pyproject.toml's
# [tool.coverage.report] declares (refusals, log calls, CUDA-only code), each for its reason.
golden: setup
	$(BIN)/python -m coverage erase
	$(BIN)/python -m coverage run --include="$$($(BIN)/python -m tests.golden.training_files)" \
		-m pytest -q -p no:xdist tests/golden
	@echo "strict coverage of the training code (nothing excluded):"
	@$(BIN)/python -m coverage report --rcfile=/dev/null --precision=1 | tail -n 1
	@echo "counted coverage (pyproject.toml's exclusions left out; at least 95%):"
	$(BIN)/python -m coverage report --sort=cover --precision=1 --fail-under=95

# Regenerate tests/golden/expected.json; says which training identity to raise when training's
# behaviour changed.
golden-update: setup
	$(BIN)/python -m tests.golden.update

# Every test that is not end to end: the tier to run while you work (about a minute).
unit: setup
	$(PYTEST_N) tests -m "not slow" --ignore=tests/golden --durations=25

# The end-to-end tests (marked slow): real processes killed and resumed, the plug-in example
# verified and retrained, archives and caches round-tripped through the commands.
# --dist loadfile: a module's tests share module-scoped fixtures that train (a verify of a broken
# plug-in kit, a verify from outside the repository); one worker per module builds each once.
# (xdist_group marks would be finer, but pytest-xdist 3.8 cannot apply them under pytest 9.)
e2e: setup
	$(PYTEST_N) --dist loadfile tests -m slow --ignore=tests/golden --durations=25

# The claims that gate CI at the smoke tier: trains what the cache lacks once, planned (largest
# groups first, no worker waiting on another's run), then checks. A run that fails to train is not
# a reason to stop here: pytest reports its claim with the reason. A claim kept out of the gate
# (gate: false, with its measured reason) could only be an xfail here, so it is skipped with that
# reason and its runs (a third of the tier's training) are left to make smoke, which trains,
# checks and reports every claim.
claims: setup
	-$(BIN)/claimbench train --tier smoke --gated-only -j $(JOBS)
	$(PYTEST_N) claims --tier smoke --gated-only --durations=10

# What CI runs, one stage after the other so a failure says which: unit, the behaviour suite,
# end to end, then the claims.
test: setup
	$(MAKE) unit
	$(MAKE) golden
	$(MAKE) e2e
	$(MAKE) claims

# The smoke tier end to end: validate, plan, train, pytest, reports/smoke/.
smoke: setup
	$(BIN)/claimbench verify --tier smoke -j $(JOBS)

# The paper-scale tier (needs a CUDA GPU; without one it runs the smoke tier and says so).
verify: setup
	$(BIN)/claimbench verify --tier full -j 1

# Minutes: the fast training path (stacked groups, fused kernels, CUDA graphs, resume) against
# the plain loop for every kind of full-tier group on this machine -> reports/gpu-check.md.
gpu-check: setup
	$(BIN)/claimbench gpu-check

plan: setup
	$(BIN)/claimbench plan --tier full

clean-cache:
	rm -rf .cache/runs
