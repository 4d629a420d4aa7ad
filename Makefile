# Meridian: the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
BIN     := bin/meridian
# Fuzz seed corpora run as part of `go test`; FUZZTIME > 0 fuzzes for real.
FUZZTIME ?= 0
# Let's Encrypt's test ACME server, for the TLS tests (installed into bin/).
PEBBLE_VERSION := v2.10.1
PEBBLE_ENV = PEBBLE_BIN=$(CURDIR)/bin/pebble PEBBLE_TEST_DIR=$(CURDIR)/bin/pebble-test

.PHONY: all build run test vet race norace fuzz clean

all: build

# The version `meridian version` prints: the checkout's commit (or tag).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/meridian

## run: build and start one node on the embedded default (demo) configuration
run: build
	./$(BIN) serve

## test: vet, race-enabled tests of every package (fuzz seed corpora included),
## and edge's and node's tests once more without the race detector
test: vet race norace

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

race: bin/pebble
	$(PEBBLE_ENV) $(GO) test -race -count=1 -timeout 20m ./...

# The race build of edge makes socket reads and writes as ordinary system
# calls (edge/rawconn_race.go); this run covers the raw calls the binary makes,
# through the proxy's tests and the node's (TLS, ACME, drain, cluster).
norace: bin/pebble
	$(PEBBLE_ENV) $(GO) test -count=1 -timeout 10m ./edge/ ./node/

## bin/pebble: pebble and its test config and certificates (bin/pebble-test)
bin/pebble:
	GOBIN=$(CURDIR)/bin $(GO) install github.com/letsencrypt/pebble/v2/cmd/pebble@$(PEBBLE_VERSION)
	rm -rf bin/pebble-test
	cp -r "$$($(GO) env GOMODCACHE)/github.com/letsencrypt/pebble/v2@$(PEBBLE_VERSION)/test" bin/pebble-test
	chmod -R u+w bin/pebble-test

## fuzz: run each fuzz target for FUZZTIME (e.g. make fuzz FUZZTIME=30s)
fuzz:
	$(GO) test -run XXX -fuzz FuzzParse -fuzztime $(FUZZTIME) ./edge/config/
	$(GO) test -run XXX -fuzz FuzzMatch -fuzztime $(FUZZTIME) ./edge/router/

clean:
	rm -rf bin

include bench/Makefile.inc
