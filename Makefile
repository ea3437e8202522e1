# rewardloop: one verb set for laptops and CI.
# Everything runs from a project-local virtualenv that `make` builds on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export PYTHONHASHSEED ?= 0

.PHONY: run test coverage test-all protos protos-check lint fmt typecheck demo train-agent drive-agent bench bench-recommend bench-assign bench-experiments bench-agents bench-feedback fuzz soak clean

# Two `make` calls can find the venv missing or stale at once (CI steps, an editor's test
# runner, a terminal); two pips installing into one venv break each other. So the build runs
# under a lock in the venv directory, and the make that waited re-checks the stamp under the
# lock (a second make of the same rule) instead of installing again. The lock is Python's
# fcntl, not flock(1): Python is all a fresh machine is sure to have.
define run_locked_py
import fcntl, subprocess, sys
with open(sys.argv[1], "w") as lock:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"waiting for another make to finish {sys.argv[2]} ...", file=sys.stderr, flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
    sys.exit(subprocess.call(sys.argv[3:]))
endef

ifndef VENV_LOCKED
$(STAMP): export RUN_LOCKED = $(run_locked_py)
$(STAMP): pyproject.toml client/pyproject.toml
	@mkdir -p $(VENV)
	@$(PYTHON) -c "$$RUN_LOCKED" $(VENV)/.lock "building $(VENV)" \
		$(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) VENV_LOCKED=1 $(STAMP)
else
$(STAMP): pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ./client -e ".[dev]"
	touch $(STAMP)
endif

## run: serve on localhost:50051 (local Ray + embedded Redis unless REDIS_URL is set)
run: $(STAMP)
	$(PY) -m rewardloop.server

## test: unit + integration tests (real Redis, real Ray, real gRPC); slow ones excluded.
##   Prints the 30 slowest tests (where the suite's time goes).
# TEST_WORKERS test processes (pytest-xdist), each with its own Redis, Ray cluster and service; a test
# file stays in one process (its module fixtures start services of their own). On 2 cores two took
# 14.8 minutes where one took 18.5.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile --durations=30

## coverage: the same tests with line coverage of every process (Ray actors included); fails
##   below [tool.coverage.report] fail_under. Tracing makes them ~1.6x slower (35 vs 22 minutes on
##   2 cores), so it is a verb of its own and not what CI runs.
# Coverage data goes to a directory of this run's own: the files of concurrent runs would
# mix, and none stay in the tree.
coverage: $(STAMP)
	@covdir=$$(mktemp -d "$${TMPDIR:-/tmp}/rewardloop-coverage.XXXXXX") && trap 'rm -rf "$$covdir"' EXIT && \
	COVERAGE_FILE="$$covdir/.coverage" $(PY) -m pytest -m "not slow" --durations=30 --cov --cov-report=term

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

## train-agent: train an agent policy on the agent-session simulator; a progress bar, then a learning-curve PNG
##   and a resumable checkpoint in var/train-agent (options through TRAIN_ARGS, e.g. TRAIN_ARGS="--algorithm q_learning")
train-agent: $(STAMP)
	$(PY) -m rewardloop.demo.train_agent $(TRAIN_ARGS)

## drive-agent: simulated sessions through the running service's agent surface (`make run` first); the
##   return per 200 sessions and the versions that served them (options through DRIVE_ARGS)
drive-agent: $(STAMP)
	$(PY) -m rewardloop.demo.agent_driver $(DRIVE_ARGS)

## bench-assign: Assign across 50 experiments, in-process and through gRPC, next to dictionary baselines
bench-assign: $(STAMP)
	$(PY) bench/assign.py

## bench-experiments: sequential tests by simulation: A/A false positives under daily and continuous looks
##   (next to the naively peeked fixed test), power within 7 days, SRM alarms; the monitor's auto-stop:
##   minutes to stop injected guardrail regressions, false stops on A/A
bench-experiments: $(STAMP)
	$(PY) bench/experiments_sequential.py
	$(PY) bench/experiments_monitor.py

## bench-agents: DQN gradient steps/s next to a bare torch loop on the same network
bench-agents: $(STAMP)
	$(PY) bench/agents.py

## bench: Recommend and Feedback over gRPC next to in-process baselines
bench: bench-recommend bench-feedback

bench-recommend: $(STAMP)
	$(PY) bench/recommend.py

bench-feedback: $(STAMP)
	$(PY) bench/feedback.py

## fuzz: 50,000+ hostile requests across every RPC against the real stack (tests/fuzzing.py)
fuzz: $(STAMP)
	$(PY) bench/fuzz.py

## soak: 30 min of open-loop Recommend+Record at 0.7x the calibrated max: RSS, Redis memory, latency per 15 s, a PNG
##   (bench/soak.py with bench/soak.toml, horizons in minutes; options through SOAK_ARGS, a later --config wins,
##   e.g. make soak SOAK_ARGS="--minutes 120 --config my.toml")
soak: $(STAMP)
	$(PY) bench/soak.py --config bench/soak.toml $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache var
