# Each target sets itself up on a fresh machine: a .venv with runarchive, its langgraph
# and otel extras, and the dev dependency group (PEP 735; test and lint tooling).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: bench-startup demo setup-test tools test test-fast test-cluster test-chaos lint lint-infra typecheck check bench bench-manifest bench-fleet bench-adapters bench-compliance bench-viewer bench-telemetry bench-peers bench-trust bench-wal bench-scale soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=25.1'
	$(BIN)/python -m pip install --quiet -e '.[langgraph,otel]' --group dev
	touch $(STAMP)

# The Debian tools the tests call: the zstd CLI (format recipes) and chromium (the
# viewer's browser tests). Checked every time (cheap), installed only when missing.
tools:
	@missing="$$(for t in zstd chromium; do command -v $$t >/dev/null || echo $$t; done)"; \
	if [ -n "$$missing" ]; then echo "installing from Debian:" $$missing; \
	  (apt-get update -qq && apt-get install -y -qq $$missing) >/dev/null; fi

# Everything `make test` needs. The three parts run side by side: 61 s on a fresh machine,
# chromium's download included (the two venvs alone took 85 s one after the other).
setup-test:
	@mkdir -p $(VENV)  # both venvs create it otherwise, racing
	@$(MAKE) --no-print-directory -j3 --output-sync=target $(STAMP) $(CHECKOV_STAMP) tools

# checkov lives in its own venv inside .venv: in the project's venv it would downgrade
# urllib3 (2.x -> 1.26), packaging, networkx and pytest. Pinned: new checks must not
# break `make test` unannounced. cfn-lint is in the test dependency group (moto[server]
# needs it too).
CHECKOV_VENV  := $(VENV)/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
CHECKOV_PIN   := checkov==3.2.459
INFRA_AWS     := infra/aws/runarchive-bucket.yaml

$(CHECKOV_STAMP): Makefile
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet '$(CHECKOV_PIN)'
	touch $(CHECKOV_STAMP)

demo: $(STAMP)
	$(BIN)/runarchive demo

test: setup-test
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy src
	$(BIN)/cfn-lint infra/aws/*.yaml
	$(CHECKOV_VENV)/bin/checkov -f $(INFRA_AWS) --quiet --compact --skip-download
	$(BIN)/python -m pytest -q -n 2

# The inner loop, under a minute on 2 cores: no SeaweedFS (-m real_server) and no test
# marked slow; `make test` runs everything.
test-fast: $(STAMP) tools
	$(BIN)/python -m pytest -q -n 2 -m "not real_server and not slow"

# Opt-in, about 1 minute: the multi-node SeaweedFS of infra/local (2 volume servers, 2
# S3 gateways), two writer processes, one volume server SIGKILLed mid-run.
test-cluster: $(STAMP)
	$(BIN)/python -m pytest -q -s tests/cluster

# Opt-in, about 15 minutes (~4.5 s per history on 2 cores): CHAOS_HISTORIES (200) chaos histories from CHAOS_SEED (1):
# 2-4 host processes on shared runs and LangGraph threads, SeaweedFS behind the fault
# proxy, SIGKILLs; prints the counts table (acked / in the bucket / stranded / lost).
# `make test` runs 20 of them (tests/trust/test_chaos.py). Replay one history, keeping its
# journals, logs and caches: CHAOS_SEED=<seed> CHAOS_HISTORIES=1 CHAOS_KEEP=1 make test-chaos
CHAOS_HISTORIES ?= 200
CHAOS_SEED ?= 1
test-chaos: $(STAMP)
	$(BIN)/python tests/support/chaos.py --histories $(CHAOS_HISTORIES) --seed $(CHAOS_SEED)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

# The CloudFormation template: cfn-lint, then checkov (skips are in the template, each
# with its reason). tests/store/test_infra_aws.py deploys it into moto.
lint-infra: $(STAMP) $(CHECKOV_STAMP)
	$(BIN)/cfn-lint infra/aws/*.yaml
	$(CHECKOV_VENV)/bin/checkov -f $(INFRA_AWS) --quiet --compact --skip-download

typecheck: $(STAMP)
	$(BIN)/mypy src

bench: $(STAMP)
	$(BIN)/python bench/bench_core.py

bench-manifest: $(STAMP)
	$(BIN)/python bench/bench_manifest.py

# Manifest format 2 at fleet scale (issue 13): finish() at 1k vs 1M runs, a simulated
# hour of 1,000 hosts, and (ARGS=--seaweed) a real SeaweedFS run; ~3-5 min.
bench-fleet: $(STAMP)
	$(BIN)/python bench/scale_fleet.py $(ARGS)

# Head-to-head vs the LangGraph S3 checkpointers on PyPI, each installed into its own
# bench-only venv under .venv/peers/<name> (never the project's); ~10 min, --quick ~1 min.
bench-peers: $(STAMP)
	$(BIN)/python bench/bench_peers.py $(ARGS)

# Issue 13's table: a long live run (20,000 flushes on file://, 2,000 on SeaweedFS),
# the manifest at 1,000,000 runs and a simulated fleet of 1,000 hosts, and streaming
# restore memory; about 15 minutes. Scripts' arguments: SCALE_RUN_ARGS, SCALE_FLEET_ARGS,
# SCALE_RESTORE_ARGS (e.g. SCALE_RUN_ARGS="--flushes 100000").
bench-scale: $(STAMP)
	$(BIN)/python bench/bench_scale.py

# `runarchive --help` and `import runarchive` against `python -c pass`, as whole processes
# (ratios; about 30 s).
bench-startup: $(STAMP)
	$(BIN)/python bench/bench_startup.py $(ARGS)

bench-adapters: $(STAMP)
	$(BIN)/python bench/bench_adapters.py

bench-compliance: $(STAMP)
	$(BIN)/python bench/bench_compliance.py

bench-viewer: $(STAMP) tools
	$(BIN)/python bench/bench_viewer.py

# Append p50 with telemetry off / opentelemetry-api only / the SDK recording (~15 s).
bench-telemetry: $(STAMP)
	$(BIN)/python bench/bench_telemetry.py

# What the trust rules cost (claim, revalidation, non-owner reads, read-back), ~1 min.
bench-trust: $(STAMP)
	$(BIN)/python bench/bench_trust.py $(ARGS)

# Opt-in, ~12 min on 2 idle cores: one run streams 1,000,000 small events (ARGS=20000
# for a short run); peak WAL size, database size, events/s, append p50 last/first.
bench-wal: $(STAMP)
	$(BIN)/python bench/bench_wal.py $(ARGS)

# Opt-in, about 2 minutes: 3 processes x 8 concurrent runs against SeaweedFS; fails on
# a lost or duplicated record or on memory / file-descriptor growth.
soak: $(STAMP)
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) .runarchive .pytest_cache .mypy_cache .ruff_cache
