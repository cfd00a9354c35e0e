# Two commands on a fresh machine with Python 3.11 and pip: `make run` and `make test`.
# Both create .venv on first use and install the locked dependency set (constraints.txt).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Every tool keeps its state in ./.udon (gitignored), never in the home directory.
export UDON_HOME := $(CURDIR)/.udon
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test install dashboard clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --no-cache-dir -c constraints.txt -e '.[kubeflow,server]'
	# animal-mnist declares tensorflow, pandas and scikit-learn it never imports: install it alone.
	$(BIN)/pip install --no-cache-dir --no-deps -c constraints.txt animal-mnist==0.4
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/udon run --config zenml.yaml

dashboard: $(STAMP)
	$(BIN)/udon dashboard

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf .udon .pytest_cache
