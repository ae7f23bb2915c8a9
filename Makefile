# Two commands on a fresh machine with Python 3.11:
#   make run    create .venv, install, train on the bundled sample
#   make test   same set-up, then the whole test suite (.ci/run calls this after its smoke)
# Another Python, venv or set of extras, as .ci/run's 3.12/3.13 smoke does (the torch extra
# installs nothing on 3.12+, see pyproject.toml; test-unit runs tests/unit alone):
#   make run test-unit PYTHON=$(pyenv prefix 3.12)/bin/python3.12 VENV=/tmp/venv-3.12 EXTRAS=dev
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
EXTRAS ?= dev,torch
comma  := ,
BIN    := $(VENV)/bin
# Named after the extras, so that a venv set up with fewer of them is completed, not taken as done.
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: install run test test-fast test-unit bench data clean server mlflow-server deploy worker

install: $(STAMP)

# pip 26 resolves this project in half the time of Python 3.11's own pip 23 (which spent 88 s
# weighing the indexes' 170k files); packages are byte-compiled afterwards on every core rather
# than by pip on one, leaving out their own test suites, which nothing here imports. Files some
# packages keep for newer Pythons do not compile (torch, whenever): compileall's status is ignored.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (about two minutes the first time)..."
	@$(BIN)/python -m pip install -qq --disable-pip-version-check 'pip==26.3'
	@$(BIN)/python -m pip install -qq --disable-pip-version-check --no-compile -e '.[$(EXTRAS)]'
	@$(BIN)/python -m compileall -qq -j 0 -x '/tests?/' "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" || true
	@touch $(STAMP)

run: install
	@$(BIN)/mlpipe train --config conf/churn.yaml

# One test worker per core (at most 4); a worker that runs out of tests takes some from another.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)
test: install
	@$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test-fast: install
	@$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow"

# The unit tests alone (tests/unit: no servers, no subprocess pipelines): the 3.12/3.13 smoke.
test-unit: install
	@$(BIN)/python -m pytest -q -rs -n $(TEST_WORKERS) --dist worksteal tests/unit

# Ratio benchmarks (not part of `make test`): prints their tables, writes benchmarks/RESULTS.md.
bench: install
	@$(BIN)/python benchmarks/run_all.py

data: install
	@$(BIN)/python data/generate_churn.py

# Day 2: a local Prefect server with the UI, an MLflow server, the deployments and a worker.
# The server leaves a marker (URL, PID) in .mlpipe/ so that this project's commands, and only
# they, reuse it (mlpipe/cli/project_server.py); the worker stops once its server has gone.
server: install
	@$(BIN)/python -m mlpipe.cli.project_server --host 127.0.0.1 --port 4200

# MLflow's job runner (seven processes of ~240 MB, for GenAI jobs) is off: the pipelines submit none.
mlflow-server: install
	@mkdir -p .mlpipe
	@MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --backend-store-uri sqlite:///.mlpipe/mlflow.db \
	  --artifacts-destination .mlpipe/mlartifacts --host 127.0.0.1 --port 5000 --workers 1

deploy: install
	@$(BIN)/mlpipe deploy

worker: install
	@$(BIN)/python -m mlpipe.cli.worker --pool mlpipe-process

clean:
	rm -rf .mlpipe data/.cache .pytest_cache
