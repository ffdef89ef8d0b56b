# dicomnode — two commands on a fresh machine: `make serve` and `make test`.
SHELL        := /bin/bash
PYTHON       ?= $(shell command -v python3.11 || command -v python3)
VENV         := .venv
PY           := $(VENV)/bin/python
CONFIG       ?= config/dicomnode.yaml
APT_PACKAGES := dcmtk dicom3tools orthanc orthanc-dicomweb chromium iproute2 util-linux openssl docker-compose postgresql \
                rabbitmq-server
PYTEST_ARGS  ?=

.PHONY: deps venv serve test bench lint clean

## deps: Debian packages the node and its tests use (dcmtk, dicom3tools, Orthanc, PostgreSQL, RabbitMQ), if missing
deps:
	@missing=0; for b in storescu echoscu dciodvfy Orthanc ip unshare openssl docker-compose chromium; do \
	  command -v $$b >/dev/null || missing=1; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=1; \
	test -x /usr/lib/rabbitmq/bin/rabbitmq-server || missing=1; \
	if [ $$missing = 1 ]; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  SUDO=$$( [ $$(id -u) = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends $(APT_PACKAGES) >/dev/null; fi

## venv: the project's virtual environment (one pip resolve; torch pins per ENVIRONMENT.md)
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

## serve: run the node in the foreground with the demo config and the bundled demo models
serve: deps venv
	$(VENV)/bin/dicomnode serve --config $(CONFIG)

## test: lint (ruff, mypy --strict), then the whole suite inside a private network namespace
## (Orthanc binds all interfaces)
test: deps venv lint
	unshare -n bash -c 'ip link set lo up && $(PY) -m pytest -q $(PYTEST_ARGS)'

## bench: throughput benchmarks with references measured in the same run (not tests)
bench: deps venv
	unshare -n bash -c 'ip link set lo up && for b in ingest mri wsi scale; do $(PY) bench/$$b.py || exit 1; done'

## mutation: each planted bug of tests/mutation/entries/*.yaml, in a temporary copy, must fail its tests (MUTATION_ARGS="--only ID --jobs 2")
MUTATION_ARGS ?=
.PHONY: mutation
mutation: deps venv
	$(PY) tests/mutation/run.py $(MUTATION_ARGS)

## lint: ruff on the package and the tests, mypy --strict on the package
lint: venv
	$(VENV)/bin/ruff check dicomnode tests bench
	$(VENV)/bin/mypy --strict dicomnode

clean:
	rm -rf var .pytest_cache

-include docker/image.mk
-include tests/viewer/viewer.mk
