# The two commands of the README: `make demo` and `make test`.  Both build what
# they need from scratch on a fresh machine (Python 3.11+, PyPI reachable).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
AGENT_VENV := .venv-agent
# The Datadog APM test agent pins older OpenTelemetry protos: its own virtualenv.
AGENT_VERSION := 1.69.1

.PHONY: install demo test lint typecheck pytest bench clean

install: $(VENV)/.installed $(AGENT_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,datadog,local]'
	touch $@

$(AGENT_VENV)/.installed:
	$(PYTHON) -m venv $(AGENT_VENV)
	$(AGENT_VENV)/bin/python -m pip install -q --disable-pip-version-check 'ddapm-test-agent==$(AGENT_VERSION)'
	touch $@

demo: install
	$(BIN)/dsqltrace demo $(ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy

pytest: install
	DDAPM_TEST_AGENT=$(CURDIR)/$(AGENT_VENV)/bin/ddapm-test-agent $(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: install
	$(BIN)/python -m bench.coldstart $(ARGS)

clean:
	rm -rf $(VENV) $(AGENT_VENV) .bench build *.egg-info
