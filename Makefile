# zhgpt: `make run` runs the quickstart, `make test` runs the suite. Both create .venv when it is missing.
# While editing: `make test-fast` (the unit tests, under 2 minutes on 2 cores) and `make lint` (ruff).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/quickstart.yaml
# The CPU build of torch first, so that pip never resolves a multi-GB CUDA build on a CPU machine.
# On a GPU machine: make install TORCH_SPEC=torch (or install your CUDA torch into .venv first).
TORCH_SPEC ?= torch==2.13.0

.PHONY: install run ablate test test-fast lint ui bench clean-work

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	# Pin whatever torch is now in the venv, so resolving the project can never swap it for another build.
	$(BIN)/python -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/torch-pin.txt
	$(BIN)/python -m pip install -q -e ".[test]" -c $(VENV)/torch-pin.txt
	touch $(STAMP)

install: $(STAMP)

# The quickstart crawls Debian's Chinese docs from a local server: fetch them, serve them on 127.0.0.1, run, and
# stop the server however the run ends (the trap fires on success, failure and Ctrl-C).
run: $(STAMP)
	bash scripts/fetch_sample_site.sh data/sample-site
	trap '$(BIN)/python scripts/serve_sample_site.py stop' EXIT INT TERM; \
	$(BIN)/python scripts/serve_sample_site.py start && $(BIN)/zhgpt run $(CONFIG)

# The data ablation of the README (configs/ablation.yaml): the reference sets cut from the sample site, then one
# pipeline run per variant of the quality stage, and a second seed of the baseline for the noise.
ABLATE_VARY ?= quality=null,{keep_fraction: 0.7},{keep_fraction: 0.5}
ablate: $(STAMP)
	bash scripts/fetch_sample_site.sh data/sample-site
	$(BIN)/python scripts/reference_sets.py configs/ablation.yaml
	trap '$(BIN)/python scripts/serve_sample_site.py stop' EXIT INT TERM; \
	$(BIN)/python scripts/serve_sample_site.py start && \
	$(BIN)/zhgpt ablate configs/ablation.yaml --vary '$(ABLATE_VARY)' --noise-seed 7

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

# Leaves out what pyproject.toml marks slow (Ray Train fits, servers, pipeline subprocesses, big stage runs), the
# users of the session's end-to-end run, and the multi-node / S3 tests.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not e2e and not cluster" --durations=5 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/python -m ruff check .

ui: $(STAMP)
	$(BIN)/zhgpt ui $(CONFIG)

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done
