# Two commands on a fresh machine with Python 3.11 and pip: `make run` and `make test`.
# Both create .venv on first use and install the locked dependency set (constraints.txt).
# Then, to look at what a run made: make models, make lineage V=1, make mlflow-ui, make dashboard.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= zenml.yaml

# Every tool keeps its state in ./.udon (gitignored), never in the home directory.
export UDON_HOME := $(CURDIR)/.udon
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# `udon` switches the tools' telemetry off itself; `mlflow ui` is not udon.
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: run test install models lineage mlflow-ui dashboard clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --no-cache-dir -c constraints.txt -e '.[kubeflow,server]'
	# animal-mnist declares tensorflow, pandas and scikit-learn it never imports: install it alone.
	$(BIN)/pip install --no-cache-dir --no-deps -c constraints.txt animal-mnist==0.4
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/udon run --config $(CONFIG)

models: $(STAMP)
	$(BIN)/udon models

lineage: $(STAMP)
	$(if $(V),,$(error name the version: make lineage V=1))
	$(BIN)/udon lineage $(V)

mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri "$$($(BIN)/udon models --tracking-uri)" --host 127.0.0.1 --port 5000

dashboard: $(STAMP)
	$(BIN)/udon dashboard

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf .udon .pytest_cache
