# Set-up on a fresh machine is two commands: `make serve` and `make test`.
# torch==2.13.0 is pinned in the same pip call so pip takes the CPU wheel instead of a
# multi-GB CUDA build (sentence-transformers, used for the embedding example, pulls torch in).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
REPO ?= examples/model_repository
TORCH_PIN ?= torch==2.13.0
HTTP_PORT ?= 8000

.PHONY: serve test install install-test lint typecheck bench-kernels bench-server clean \
	device-check device-wheels

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q "$(TORCH_PIN)" -e ".[serve]"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q "$(TORCH_PIN)" -e ".[test]"
	touch $@ $(VENV)/.installed-serve

install: $(VENV)/.installed-serve
install-test: $(VENV)/.installed-test

serve: install
	$(BIN)/accelserve prepare-examples $(REPO)
	$(BIN)/accelserve serve --model-repository $(REPO) --http-port $(HTTP_PORT)

test: install-test
	$(BIN)/python -m pytest -q

lint: install-test
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

bench-kernels: install-test
	$(BIN)/python -m benchmarks.kernels.run

bench-server: install-test
	$(BIN)/python -m benchmarks.server.bench_simple

# On a leased accelerator (no .venv there): the image's python3; see docs/device-check.md.
# DRY_RUN=1 runs it on the CPU (tests/e2e/test_device_check_dry_run.py does, in `make test`).
device-check:
	python3 scripts/device_check.py

device-wheels:
	bash scripts/device-wheels.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
