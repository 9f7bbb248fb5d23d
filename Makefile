# qx-regions build, test and local stack.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
BIN      := bin/qx-regions

.PHONY: build test lint demo clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/qx-regions

# Every test, unit and integration, against real Postgres and NATS servers
# that the tests start themselves.
test:
	$(GO) test -race -count=1 -timeout 15m ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go') $$(git ls-files --others --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The main job on defaults, no Docker: two local regions, replication both
# ways, sample events, verification.
demo: build
	$(BIN) demo

# Benchmarks against real Postgres and NATS servers (issue 4's performance
# goals), then one table of every figure (median and range over the runs),
# ending with the catch-up line. Compared figures are measured in the same
# run, so run nothing else meanwhile. BENCH_COUNT=1 for a quicker look.
.PHONY: bench
bench:
	@out=$$(mktemp); trap 'rm -f "$$out"' EXIT; \
	{ $(GO) test -run '^$$' -bench 'Stream_Backlog$$' -benchtime 1x -count $(or $(BENCH_COUNT),3) -timeout 10m ./cdc; \
	  $(GO) test -run '^$$' -bench 'Stream_LargeTransaction$$' -benchtime 1x -timeout 10m ./cdc; \
	  $(GO) test -run '^$$' -bench 'Replicator_' -benchtime 1x -count $(or $(BENCH_COUNT),3) -timeout 20m ./replication; \
	  $(GO) test -p 1 -run '^$$' -bench . -benchtime 200ms -timeout 5m ./resolver ./router; \
	} 2>&1 | tee "$$out"; \
	$(GO) run ./internal/benchtable < "$$out"

# The local stack of compose.yaml: two regions and a replicator each way
# (needs Docker with the compose plugin). down also removes the volumes.
.PHONY: up down
up:
	VERSION=$(VERSION) docker compose up -d --build

down:
	docker compose down -v

clean:
	rm -rf bin

# The fault suite's long versions (integration/, QX_SOAK=1): crashes,
# restarts, partitions, WAN latency and bad input over the real binary, about
# 10 minutes; ends with one summary table. Run from the package directory so
# the table prints on success too.
.PHONY: soak
soak:
	cd integration && QX_SOAK=1 $(GO) test -race -count=1 -timeout 60m -run '^TestFault_'
