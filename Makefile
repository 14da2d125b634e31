# hf_vssl developer commands. Everything runs inside a project virtual environment (.venv).
VENV        ?= .venv
PY          := $(VENV)/bin/python
TORCH_SPEC  ?= torch==2.13.0
STAMP       := $(VENV)/.hf_vssl-installed
# transformers' shared model tests ship only in its source distribution; fetched once per version.
TF_TESTS    := .cache/transformers-tests

.PHONY: install test demo style lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(STAMP)

$(TF_TESTS)/.stamp: $(STAMP)
	$(PY) tests/fetch_transformers_tests.py $(TF_TESTS)
	touch $@

# One pytest worker per core (pytest-xdist), each test file on one worker so that its module fixtures are built once;
# one thread per worker, since the workers already fill the cores.
PYTEST_WORKERS ?= auto

test: $(STAMP) $(TF_TESTS)/.stamp
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

demo: $(STAMP)
	$(PY) -m hf_vssl.demo

style: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) benchmarks/data_throughput.py
	$(PY) benchmarks/batch_transfer.py
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
