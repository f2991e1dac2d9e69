# Set-up and everyday commands. `make demo` and `make test` build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR := demo-output

.PHONY: demo test venv clean benchmark

venv: $(STAMP)

# torch is pinned here (the CPU wheel of this machine); the package metadata keeps a range.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,viz,slicer,train]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m shmoareg.demo --output-dir $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q

benchmark: $(STAMP)
	$(BIN)/python benchmarks/bench_register.py

clean:
	rm -rf $(VENV) $(DEMO_DIR)
