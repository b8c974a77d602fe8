# The two commands: `make demo` (set up + run the demo evaluation) and `make test`.
# Both create/refresh the virtual environment in .venv through constraints.txt, which keeps
# torch on the local CPU build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bifocal-installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/bifocal demo

test: $(STAMP)
	-sh scripts/setup-chromium.sh  # browser tests skip (fail under CI) without it
	$(BIN)/ruff check .
	$(BIN)/mypy
	-bash scripts/setup-label-studio.sh  # Label Studio in its own venv (.cache/label-studio), once
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/retrieval_scoring.py
	$(BIN)/python benchmarks/flow_overhead.py
	$(BIN)/python benchmarks/caption_metrics.py
	$(BIN)/python benchmarks/bootstrap.py
	$(BIN)/python benchmarks/robustness.py
	$(BIN)/python benchmarks/gpu_throughput.py --device auto --model tiny --images 256 --batch-size 32
	$(BIN)/python benchmarks/engines.py

clean:
	rm -rf .bifocal reports mlflow.db mlartifacts
