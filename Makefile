# motcua — the two commands a newcomer needs: `make run` and `make test`.

CARGO        ?= cargo
PYTHON       ?= python3
CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
BIN          := $(CARGO_TARGET_DIR)/debug/motcua
OUTPUT       ?= ./data
PERIOD       ?= 2024-Q3

# Demo secrets only: a real deployment sets its own (see README, "Environment").
export MOTCUA_SOURCE_TOKEN ?= demo-token
export MOTCUA_PII_KEY      ?= demo-pii-key-not-for-production

.PHONY: build run status test test-deps bench bench-provinces fmt clean

build:
	$(CARGO) build --bin motcua

## make run: build, start the demo source on a free port, run 2024-Q3 into ./data, print the figures.
run: build
	@set -e; tmp=$$(mktemp -d); \
	$(BIN) demo-source --port 0 --ready-file $$tmp/url > $$tmp/demo.log 2>&1 & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; rm -rf $$tmp' EXIT INT TERM; \
	for i in $$(seq 600); do [ -s $$tmp/url ] && break; kill -0 $$pid 2>/dev/null || { cat $$tmp/demo.log; exit 1; }; sleep 0.1; done; \
	echo "demo source at $$(cat $$tmp/url)"; \
	$(BIN) run --pipeline pipelines/demo.toml --source-url "$$(cat $$tmp/url)" --output $(OUTPUT) --period $(PERIOD)

## make status: the runs, cursor, lock and published periods of ./data.
status: build
	$(BIN) status --output $(OUTPUT)

## make test: install what the tests need, then run every test (Rust, then the real readers).
test: test-deps
	$(CARGO) test --all-targets
	$(CARGO) check --lib --features gcp,azure
	PATH="$$HOME/.cargo/bin:$$PATH" MOTCUA_BIN=$(BIN) $(PYTHON) -m pytest -q tests/readers

## test-deps: DuckDB, pyarrow, pytest, moto_server, pyspark, sqlglot (pip; pyspark is a 456 MB
## download, about 1 min to install once); Java 17+ for Spark; Chromium (Debian); s3s-fs (crates.io, ~3 min once).
test-deps:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	@java -version >/dev/null 2>&1 || { echo "Spark needs Java 17 or later: install it (apt-get install openjdk-17-jre-headless) and put java on PATH"; exit 1; }
	@command -v chromium >/dev/null || { echo "installing chromium (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null || \
	  { echo "could not install chromium: run 'apt-get install chromium' as root"; exit 1; }; }
	@command -v s3s-fs >/dev/null || { echo "installing s3s-fs 0.14.1 (cargo install, about 3 minutes)"; \
	  CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)/s3s-fs $(CARGO) install s3s-fs --version 0.14.1 --features binary --locked --quiet; }

## make bench: release build, then pull, nightly run, KPI step (beside the DuckDB command line)
## and replay on demo provinces of SIZES records (default one and ten million: 6 to 40 minutes,
## 25 GB of temp disk). BENCH_OUT=file also writes the table there.
SIZES ?= 1000000,10000000
BENCH_OUT ?=
bench:
	$(CARGO) build --release --bin motcua
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/bench/requirements.txt
	$(PYTHON) tests/bench/bench.py --bin $(CARGO_TARGET_DIR)/release/motcua --sizes $(SIZES) $(if $(BENCH_OUT),--out $(BENCH_OUT))

## make bench-provinces: three demo provinces of SCALE (default 1.0, 240 k records each) in one root:
## each job's time and memory, the national roll-up and `motcua sql` on Spark local (a few minutes).
SCALE ?= 1.0
bench-provinces:
	$(CARGO) build --release --bin motcua
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/bench/requirements.txt -r tests/requirements.txt
	$(PYTHON) tests/bench/provinces.py --bin $(CARGO_TARGET_DIR)/release/motcua --scale $(SCALE)

fmt:
	$(CARGO) fmt --all

clean:
	rm -rf $(OUTPUT)
