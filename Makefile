# Two entry points for a new machine: `make demo` and `make test`. Both create .venv (Python 3.11) when it is
# missing and install the project with every extra first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
SHARED_DATA := $(abspath ../shared/data)
STAMP := $(VENV)/.tsbench-installed

export NM_DISABLE_ANALYTICS := 1
# Tests and the demo read real datasets from ../shared/data when it exists (never committed here).
ifneq ($(wildcard $(SHARED_DATA)),)
export TSBENCH_DATA_DIR ?= $(SHARED_DATA)
endif

.PHONY: install demo test faults lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip<25"
	# the CPU build of torch first (a bare `torch` may pull a multi-GB CUDA build)
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[sparse,dask,openvino,dev]"
	@touch $@

demo: install
	$(VENV)/bin/tsbench run specs/quickstart.json

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(VENV)/bin/pytest -q

# the fault figures of docs/reliability.md (long: kept out of `make test`)
faults: install
	$(VENV)/bin/pytest -q -m long tests/faults

bench: install
	$(VENV)/bin/pytest benchmarks --benchmark-only -q

clean:
	rm -rf $(VENV) tsbench-results .pytest_cache
