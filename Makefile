# swift-reactor: build, run, test. `make run ARGS="--port 9000 --verbose"` passes flags.
SWIFT   ?= swift
ARGS    ?=
RELEASE := .build/release

.PHONY: build release run test clean

build:
	$(SWIFT) build

release:
	$(SWIFT) build -c release

run: release
	$(RELEASE)/echo-server $(ARGS)

test:
	$(SWIFT) test

clean:
	rm -rf .build
