# rewardloop: one verb set for laptops and CI.
# Everything runs from a project-local virtualenv that `make` builds on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export PYTHONHASHSEED ?= 0

.PHONY: run test test-all protos protos-check lint fmt typecheck demo bench bench-recommend bench-feedback clean

$(STAMP): pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ./client -e ".[dev]"
	touch $(STAMP)

## run: serve on localhost:50051 (local Ray + embedded Redis unless REDIS_URL is set)
run: $(STAMP)
	$(PY) -m rewardloop.server

## test: unit + integration tests (real Redis, real Ray, real gRPC); slow ones excluded
test: $(STAMP)
	$(PY) -m pytest -m "not slow"

## test-all: everything, slow tests included
test-all: $(STAMP)
	$(PY) -m pytest

## protos: regenerate the Python stubs from protos/
protos: $(STAMP)
	$(PY) protos/generate.py

## protos-check: fail if the committed stubs differ from what `make protos` generates
protos-check: $(STAMP)
	$(PY) protos/generate.py --check

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

fmt: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

typecheck: $(STAMP)
	$(PY) -m mypy

## demo: simulated users drive the running stack; learned CTR vs uniform random
demo: $(STAMP)
	$(PY) -m rewardloop.demo

## bench: Recommend and Feedback over gRPC next to in-process baselines
bench: bench-recommend bench-feedback

bench-recommend: $(STAMP)
	$(PY) bench/recommend.py

bench-feedback: $(STAMP)
	$(PY) bench/feedback.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache var
