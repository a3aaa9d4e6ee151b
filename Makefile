# Each target sets itself up on a fresh machine: a .venv with runarchive[dev].
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench bench-manifest bench-adapters bench-compliance soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@command -v zstd >/dev/null || { echo "installing the zstd CLI (used by a format test)"; \
	  (apt-get update -qq && apt-get install -y -qq zstd) >/dev/null; }
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/runarchive demo

test: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy src
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy src

bench: $(STAMP)
	$(BIN)/python bench/bench_core.py

bench-manifest: $(STAMP)
	$(BIN)/python bench/bench_manifest.py

bench-adapters: $(STAMP)
	$(BIN)/python bench/bench_adapters.py

bench-compliance: $(STAMP)
	$(BIN)/python bench/bench_compliance.py

# Opt-in, about 2 minutes: 3 processes x 8 concurrent runs against SeaweedFS; fails on
# a lost or duplicated record or on memory / file-descriptor growth.
soak: $(STAMP)
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) .runarchive .pytest_cache .mypy_cache .ruff_cache
