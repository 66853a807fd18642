# The two commands of the README: `make demo` and `make test`.  Both build what
# they need from scratch on a fresh machine (Python 3.11+, PyPI reachable).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
AGENT_VENV := .venv-agent
# The Datadog APM test agent pins older OpenTelemetry protos: its own virtualenv.
AGENT_VERSION := 1.69.1

.PHONY: install postgres-binaries demo test lint typecheck pytest bench compare delivery snapstart httpbench reliability synth asset clean
# jsii (under aws-cdk-lib) warns at length about the machine's Node.js version.
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 18,20

install: postgres-binaries $(VENV)/.installed $(AGENT_VENV)/.installed

# The embedded PostgreSQL needs the server binaries (initdb, pg_ctl, postgres).
postgres-binaries:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
		|| [ -n "$$DSQLTRACE_PG_BIN" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing PostgreSQL server binaries (apt-get install postgresql)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	elif [ "$$(uname)" = Darwin ] && ls /opt/homebrew/opt/postgresql@*/bin/initdb /usr/local/opt/postgresql@*/bin/initdb >/dev/null 2>&1; then :; \
	elif ls /usr/pgsql-*/bin/initdb >/dev/null 2>&1; then :; \
	else printf '%s\n' "PostgreSQL server binaries are missing. Install them with one of:" \
		"  Debian/Ubuntu: sudo apt-get install postgresql" \
		"  Fedora/RHEL:   sudo dnf install postgresql-server" \
		"  macOS:         brew install postgresql@16" \
		"or set DSQLTRACE_PG_BIN to the folder that holds initdb and pg_ctl."; exit 1; fi

$(VENV)/.installed: pyproject.toml
	@echo "installing $(VENV): the toolkit, the local stack, the test and CDK tools (a few minutes)"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	@# setuptools warns about every editable install of a flat layout; this one is on purpose.
	@PYTHONWARNINGS="ignore:Editable installation" \
		$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,datadog,local,infra,load]'
	@touch $@
	@echo "$(VENV) ready ($$(du -sh $(VENV) | cut -f1))"

$(AGENT_VENV)/.installed:
	@echo "installing $(AGENT_VENV): Datadog's APM test agent $(AGENT_VERSION), in its own virtualenv"
	@$(PYTHON) -m venv $(AGENT_VENV)
	@$(AGENT_VENV)/bin/python -m pip install -q --disable-pip-version-check 'ddapm-test-agent==$(AGENT_VERSION)'
	@touch $@
	@echo "$(AGENT_VENV) ready ($$(du -sh $(AGENT_VENV) | cut -f1))"

# `make demo USERS=100 DURATION=60` (or ARGS="--users 100 ...") passes options to `dsqltrace demo`.
DEMO_ARGS := $(if $(USERS),--users $(USERS)) $(if $(DURATION),--duration $(DURATION)) \
	$(if $(MIX),--mix $(MIX)) $(if $(OUT),--out $(OUT)) $(ARGS)

demo: install
	$(BIN)/dsqltrace demo $(DEMO_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy

pytest: install
	DDAPM_TEST_AGENT=$(CURDIR)/$(AGENT_VENV)/bin/ddapm-test-agent $(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: install
	$(BIN)/python -m bench.coldstart $(ARGS)

# This toolkit against stock OpenTelemetry, AwsLambdaInstrumentor, datadog-lambda and Powertools.
compare: install
	$(BIN)/python -m bench.compare $(ARGS)

# What each delivery mode costs the caller and the bill, through the emulator (1769 and 256 MB).
delivery: install
	$(BIN)/python -m bench.delivery $(ARGS)

# SnapStart in the emulator: first response after a restore against an ordinary cold start.
snapstart: install
	$(BIN)/python -m bench.snapstart $(ARGS)

# CPU per request of the local servers' HTTP layer (llhttp) against the parser it replaced.
httpbench: install
	$(BIN)/python -m bench.httpserver $(ARGS) | tee bench/results/httpserver.txt

# The reliability figures of docs/reliability.md: fault, fuzz and secret suites, tabulated.
reliability: install
	$(BIN)/python -m bench.reliability

asset: $(VENV)/.installed
	$(BIN)/python -m infra.asset $(ARGS)

# Synthesize the CloudFormation template offline into cdk.out/ (no AWS account needed).
synth: $(VENV)/.installed
	$(BIN)/python -m infra.asset
	$(BIN)/python -m infra.app
	@echo "template: cdk.out/DsqlTodoApi.template.json"

clean:
	rm -rf $(VENV) $(AGENT_VENV) .bench build cdk.out *.egg-info
