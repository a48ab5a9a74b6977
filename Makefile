# swift-reactor: build, run, test. `make run ARGS="--port 9000 --verbose"` passes flags.
SWIFT   ?= swift
ARGS    ?=
RELEASE := .build/release

.PHONY: build release release-static run test clean

build:
	$(SWIFT) build

release:
	$(SWIFT) build -c release

# The Swift runtime linked in: base RSS ~9.8 MiB instead of ~13 MiB (shared libraries).
release-static:
	$(SWIFT) build -c release --static-swift-stdlib --scratch-path .build-static

run: release
	$(RELEASE)/echo-server $(ARGS)

test:
	$(SWIFT) test

clean:
	rm -rf .build .build-static

# --- Benchmarks, in process (package-benchmark, in its own package: Benchmarks/) ---
# make bench [BENCH_ARGS='--filter "Flood.*"']; make bench-baseline; make bench-compare.
# Baselines live in Benchmarks/.benchmarkBaselines/<name>/ (gitignored); BENCH_BASELINE names one.
BENCH_BASELINE ?= main
BENCH_ARGS     ?= --no-progress

.PHONY: bench bench-baseline bench-compare

bench:
	cd Benchmarks && $(SWIFT) package benchmark $(BENCH_ARGS)

bench-baseline:
	cd Benchmarks && $(SWIFT) package --allow-writing-to-package-directory benchmark baseline update $(BENCH_BASELINE) $(BENCH_ARGS)

bench-compare:
	cd Benchmarks && $(SWIFT) package benchmark baseline compare $(BENCH_BASELINE) $(BENCH_ARGS)
