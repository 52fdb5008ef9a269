# Set-up on a fresh machine is two commands: `make serve` and `make test`.
# torch==2.13.0 is pinned in the same pip call so pip takes the CPU wheel instead of a
# multi-GB CUDA build (sentence-transformers, used for the embedding example, pulls torch in).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
REPO ?= examples/model_repository
TORCH_PIN ?= torch==2.13.0
HTTP_PORT ?= 8000

.PHONY: serve test install install-test lint typecheck bench-kernels bench-server clean

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
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench-kernels: install-test
	$(BIN)/python -m benchmarks.kernels.run

bench-server: install-test
	$(BIN)/python -m benchmarks.server.bench_simple

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
