# swift-reactor: build, run, test. `make run ARGS="--port 9000 --verbose"` passes flags.
SWIFT   ?= swift
ARGS    ?=
RELEASE := .build/release

.PHONY: build release release-static run test test-sanitize clean

build:
	$(SWIFT) build

release:
	$(SWIFT) build -c release

# The Swift runtime linked in: base RSS ~9.8-10.0 MiB instead of ~13 MiB (shared libraries).
release-static:
	$(SWIFT) build -c release --static-swift-stdlib --scratch-path .build-static

run: release
	$(RELEASE)/echo-server $(ARGS)

# One test at a time (about 85 s): in parallel, the socket-heavy tests took
# the kernel's TCP memory and CPU from the echo-server process tests, whose
# bounds (8 MiB absorbed by a stalled reader, fds settling) then failed now and then.
test:
	$(SWIFT) test --no-parallel

# The Reactor and room tests under ThreadSanitizer, then AddressSanitizer, each in a
# build folder of its own; any report fails the run. (Leak detection off:
# loops are never freed, on purpose; see EventLoop.init.)
test-sanitize:
	TSAN_OPTIONS=halt_on_error=1 $(SWIFT) test --no-parallel --sanitize=thread --scratch-path .build-tsan --filter "ReactorTests|RoomServerTests|ReactorAsyncTests"
	ASAN_OPTIONS=detect_leaks=0 $(SWIFT) test --no-parallel --sanitize=address --scratch-path .build-asan --filter "ReactorTests|RoomServerTests|ReactorAsyncTests"

clean:
	rm -rf .build .build-static .build-tsan .build-asan Benchmarks/.build

# The DocC catalogs of Reactor and ReactorAsync (swift-docc-plugin), any warning an error:
# .build/docs/Reactor.doccarchive and .build/docs/ReactorAsync.doccarchive.
.PHONY: docs

docs:
	$(SWIFT) package --disable-sandbox generate-documentation --target Reactor --target ReactorAsync \
		--warnings-as-errors --output-path .build/docs

# --- Performance, end to end in separate processes (harness/, entry perf/perf.py; Python 3 stdlib) ---
# make perf [PEERS=1] [LOOPS=2] [PERF_DURATION=10] [PERF_REPEAT=3] [VERSUS=old/echo-server]; make perf-baseline;
# make perf-instr [PEERS=1]; make profile; make peers. See README "Performance".
PYTHON            ?= python3
PERF_DURATION     ?= 5
PERF_WARMUP       ?= 1
PERF_PORT         ?= 17777
PERF_CONNS        ?= 1 100 1000
PERF_STREAM_CONNS ?= 10
PERF_IDLE         ?= 1000
PERF_THREADS      ?= 2
PERF_REPEAT       ?= 1
PERF_CLIENT_FLAGS ?=
# Each round as one send: every server then sees 1 recv + 1 send per round, and
# the count repeats to 1%; INSTR_CLIENT_FLAGS= sends the 10 messages one by one.
INSTR_CLIENT_FLAGS ?= --coalesce
LOOPS             ?= 1
PEERS             ?= 0
INSTR_DURATION    ?= 3
INSTR_WARMUP      ?= 2
INSTR_CONNS       ?= 10
PROFILE_DURATION  ?= 10
PROFILE_CONNS     ?= 100

PERF_COMMON = --server $(RELEASE)/echo-server --client $(RELEASE)/dummy-client \
	--port $(PERF_PORT) --loops $(LOOPS) --threads $(PERF_THREADS) \
	$(if $(filter 1 yes true,$(PEERS)),--peers) $(if $(VERSUS),--versus $(VERSUS))

.PHONY: perf perf-rooms perf-baseline perf-instr profile peers

perf: release
	$(PYTHON) perf/perf.py run $(PERF_COMMON) --duration $(PERF_DURATION) --warmup $(PERF_WARMUP) \
		--conns $(PERF_CONNS) --stream-conns $(PERF_STREAM_CONNS) --idle $(PERF_IDLE) --repeat $(PERF_REPEAT) \
		'--client-flags=$(PERF_CLIENT_FLAGS)'
	$(MAKE) --no-print-directory perf-rooms

# The three room loads of ../shared/protocols/room.md (dummy-client room), beside
# roomref and nio-room with PEERS=1; part of `make perf`.
perf-rooms: release
	$(PYTHON) perf/perf.py rooms $(PERF_COMMON) --duration $(PERF_DURATION) --warmup $(PERF_WARMUP)

perf-baseline:
	$(PYTHON) perf/perf.py baseline

perf-instr: release
	$(PYTHON) perf/perf.py instr $(PERF_COMMON) --duration $(INSTR_DURATION) --warmup $(INSTR_WARMUP) \
		--connections $(INSTR_CONNS) '--client-flags=$(INSTR_CLIENT_FLAGS)'
	$(PYTHON) perf/perf.py instr-rooms $(PERF_COMMON) --duration $(INSTR_DURATION) --warmup $(INSTR_WARMUP)

profile: release
	$(PYTHON) perf/perf.py profile $(PERF_COMMON) --duration $(PROFILE_DURATION) --connections $(PROFILE_CONNS) \
		'--client-flags=$(PERF_CLIENT_FLAGS)'

peers:
	$(PYTHON) perf/perf.py peers

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

# --- Fault injection and soak (harness/, entries scripts/*.py; Python 3 stdlib; 127.0.0.1 only) ---
# make faults [FAULTS_ARGS="--quick --only storm,resets"]: the faults only the full-size release
# build shows (a 10,000-connect storm, 10,000 resets); every other fault is a Swift test (make test).
# Each scenario against its own fresh server; a table; exit 0 only if every row passes. Logs: .build/faults/.
# make soak [DURATION=600] [SOAK_ARGS=...]: mixed load for DURATION s, RSS and fds sampled
# every second into .build/soak/; fails on RSS drift, fd leaks or a wrong echo.
DURATION    ?= 600
FAULTS_ARGS ?=
SOAK_ARGS   ?=

.PHONY: faults soak

faults: release
	$(PYTHON) scripts/faults.py --server $(RELEASE)/echo-server --client $(RELEASE)/dummy-client $(FAULTS_ARGS)

soak: release
	$(PYTHON) scripts/soak.py --server $(RELEASE)/echo-server --client $(RELEASE)/dummy-client \
		--duration $(DURATION) $(SOAK_ARGS)

# --- Past one machine, simulated on loopback (harness/scale_demo.py; README "Past one machine") ---
# make scale-demo [SCALE_ARGS=--quick]: HAProxy (apt-get installs it when missing) in mode tcp,
# leastconn, send-proxy-v2, checks every 200 ms, in front of 3 echo-servers --proxy-protocol as
# hosts 127.0.0.2-4; 2 dummy-clients, their histograms merged; direct vs 1 vs 3 servers, the PROXY
# header on vs off, one server SIGKILLed mid-run. One table; ~2 min (--quick ~30 s). Logs: .build/scale-demo/.
SCALE_ARGS ?=

.PHONY: scale-demo

scale-demo: release
	$(PYTHON) scripts/scale_demo.py --server $(RELEASE)/echo-server --client $(RELEASE)/dummy-client $(SCALE_ARGS)

# make upgrade-under-load [UPGRADE_ARGS=--quick]: SIGUSR2 to an echo-server (--loops 2
# --shutdown-timeout 20) 40% into a dummy-client flood of 1,000 connections that each close after 20 rounds
# (--quick: 200, 4 s); the successor must accept within 100 ms, the old one exit within the shutdown timeout,
# the client see 0 connect failures, resets, lost or wrong bytes. One table; exit 0 only if every target is
# met; ~30 s (--quick ~15 s). Logs: .build/upgrade/.
UPGRADE_ARGS ?=

.PHONY: upgrade-under-load

upgrade-under-load: release
	$(PYTHON) scripts/upgrade_under_load.py --server $(RELEASE)/echo-server --client $(RELEASE)/dummy-client $(UPGRADE_ARGS)

# --- HdrHistogram interop (Python's hdrhistogram, pip install --user'd if it can be; not in make test) ---
# make hdr-interop [HDR_SCRATCH=.build]: hdrh reads a dummy-client --histogram-out log and writes one
# dummy-client merge reads; counts and percentiles must agree. "skipped" (exit 0) if hdrh cannot be installed.
HDR_SCRATCH ?= .build

.PHONY: hdr-interop

hdr-interop:
	$(SWIFT) build --scratch-path $(HDR_SCRATCH)
	$(PYTHON) scripts/hdr_interop.py --bin $(HDR_SCRATCH)/debug

# --- Fuzzing (libFuzzer; Fuzz/ is a package of its own, built with --sanitize=fuzzer) ---
# make fuzz [FUZZ_SECONDS=600]: the PROXY header parser for FUZZ_SECONDS, from the corpus kept
# in Fuzz/Corpus/ProxyHeader; inputs that reach new code are merged back there (commit them).
# A crash stops it, with the input in .build-fuzz/crash-*; `make test` replays the corpus.
FUZZ_SECONDS ?= 600
FUZZER       := .build-fuzz/release/ProxyHeaderFuzzer

.PHONY: fuzz

fuzz:
	cd Fuzz && $(SWIFT) build -c release --sanitize=fuzzer --scratch-path ../.build-fuzz
	mkdir -p .build-fuzz/corpus
	$(FUZZER) -max_total_time=$(FUZZ_SECONDS) -max_len=4200 -print_final_stats=1 \
		-artifact_prefix=.build-fuzz/ .build-fuzz/corpus Fuzz/Corpus/ProxyHeader
	$(FUZZER) -merge=1 Fuzz/Corpus/ProxyHeader .build-fuzz/corpus
