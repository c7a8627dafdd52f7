# StreamSense: `make demo` sets everything up and runs the demo; `make test` runs every test tier.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip --disable-pip-version-check
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-unit lint schemas eval bench bench-gpu bench-gpu-bundle soak clean down chaos-repeat lock

# Idempotent: the venv is rebuilt only when pyproject.toml changes; the Kafka jars and Triton's
# runtime are provisioned once into .streamsense/ (their stamps make later runs instant).
setup: $(STAMP)
	@deploy/local/system-deps.sh
	@$(VENV)/bin/streamsense setup
	@# Trains the BERT models only when ~/.cache/streamsense lacks them (minutes, with progress).
	@HF_HUB_OFFLINE=1 $(PY) -m models.bert.export triton_repo >/dev/null

$(STAMP): pyproject.toml deploy/locks/dev.txt deploy/locks/triton.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# Exact versions, each verified by its hash (deploy/locks/, written by `make lock`), then
	@# this project itself on top of them.
	$(PIP) install -q --require-hashes -r deploy/locks/dev.txt
	$(PIP) install -q --no-deps -e .
	@# The Triton server binary only: pytriton's own Python API pins numpy<2, which we do not use.
	$(PIP) install -q --no-deps --require-hashes -r deploy/locks/triton.txt
	@touch $@

# Re-resolve the locks to the newest versions pyproject.toml allows (x86-64 Linux, Python 3.11),
# with the hash of every file: dev.txt for make setup, worker.txt for the worker image.
LOCK := $(VENV)/bin/uv pip compile --generate-hashes --python-version 3.11 --no-annotate -q --custom-compile-command 'make lock'
lock:
	@test -x $(VENV)/bin/uv || $(PIP) install -q 'uv>=0.5,<1'
	$(LOCK) pyproject.toml --extra dev --extra train --python-platform x86_64-manylinux_2_28 -o deploy/locks/dev.txt
	$(LOCK) pyproject.toml --python-platform x86_64-manylinux_2_28 -o deploy/locks/worker.txt
	echo 'nvidia-pytriton==0.7.0' | $(LOCK) - --no-deps --python-platform x86_64-manylinux_2_35 -o deploy/locks/triton.txt

demo: setup
	$(VENV)/bin/streamsense demo

test: setup
	$(VENV)/bin/ruff check streams models tests deploy
	$(VENV)/bin/pytest

test-unit: setup
	$(VENV)/bin/pytest tests/unit streams models

lint: setup
	$(VENV)/bin/ruff check streams models tests deploy

eval: setup
	HF_HUB_OFFLINE=1 $(PY) -m models.bert.evaluate

schemas: setup
	$(VENV)/bin/streamsense schemas

down:
	@test -x $(VENV)/bin/streamsense && $(VENV)/bin/streamsense down || true

clean: down
	rm -rf .streamsense $(VENV)

# Benchmarks; each writes its section of BENCHMARKS.md.
bench: setup
	$(PY) -m models.sequential.evaluate --write BENCHMARKS.md
	$(PY) -m models.online.evaluate --write BENCHMARKS.md
	$(PY) -m streams.bench --write BENCHMARKS.md

# The GPU benchmark (deploy/gpu/bench.py): the bundle is a self-contained folder to copy to a GPU
# machine and run there offline (`python3 .gpu-bundle/bench.py run`); bench-gpu runs it here.
bench-gpu-bundle: setup
	$(PY) -m deploy.gpu.bundle --out .gpu-bundle $(if $(NO_ONNX),,--onnx)

bench-gpu: bench-gpu-bundle
	$(PY) .gpu-bundle/bench.py run --json .gpu-bundle/results.json

# The chaos kill scenario RUNS times in a row on one stack (both guarantees), e.g. RUNS=20.
RUNS ?= 20
chaos-repeat: setup
	STREAMSENSE_CHAOS_RUNS=$(RUNS) STREAMSENSE_CHAOS_FULL=1 $(VENV)/bin/pytest tests/chaos -k two_workers

# One worker's memory over per-key state for 100k click users and 100k entities (~10 minutes).
soak: setup
	$(PY) -m streams.bench --only soak --write BENCHMARKS.md
