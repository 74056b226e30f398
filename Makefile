# kvdb — see README.md.
GO ?= go
FUZZTIME ?= 30s

.PHONY: all build run test vet fmt-check fuzz bench perf perf-masters soak clean

all: build

# kvdb --version names the commit it was built from whenever git can read
# this checkout (a machine's GOFLAGS may say -buildvcs=false).
BUILDVCS := $(shell git status --porcelain >/dev/null 2>&1 && echo true || echo false)

build:
	$(GO) build -buildvcs=$(BUILDVCS) -o kvdb ./cmd/kvdb

# One master and 3 volumes on 127.0.0.1, data under ./data. It holds the
# terminal until Ctrl-C: run make test in another one.
run: build
	./kvdb dev

# Static checks, then every test with the race detector.
test: fmt-check vet
	$(GO) test -race -count=1 -timeout 20m ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

# Each fuzz target for FUZZTIME (go test -fuzz takes one target at a time).
fuzz:
	@set -e; for pkg in ./node ./node/client ./node/s3 ./store; do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# README's Performance table, measured in one run (a few minutes; run it on a
# quiet machine; needs curl, jq and wrk).
perf: build
	bench/perf.sh

# What several masters cost: one master against three (Raft), and bench
# --retries through a SIGKILL of the leader. Needs curl and jq.
perf-masters: build
	bench/masters.sh

# Verified mixed load (DURATION, default 10m) with two volumes SIGKILLed and
# restarted; samples goroutines, fds and RSS. Needs curl and jq.
soak: build
	bench/soak.sh

clean:
	rm -rf kvdb data
