# The Go toolchain and GOMLX's SIMD kernels need these on every build:
# - GOTOOLCHAIN: gomlx v0.28 needs Go 1.27; the machine's Go is older and set
#   to GOTOOLCHAIN=local, so name the toolchain (the Go proxy serves it).
# - GOEXPERIMENT=simd: the pure-Go backend's AVX2/AVX-512 kernels (4-9x faster per
#   the toolchain notes).
export GOTOOLCHAIN := go1.27.4
export GOEXPERIMENT := simd
export GOFLAGS := -buildvcs=false

GO ?= go
BIN := bin/l2gflow
# The commit `l2gflow version` prints ("-dirty" with uncommitted changes).
COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null)
DIRTY := $(if $(COMMIT),$(shell git diff --quiet HEAD -- 2>/dev/null || echo -dirty))
LDFLAGS := -X main.commit=$(COMMIT)$(DIRTY)
DEMO_OUT ?= demo-out

.PHONY: bench-against fork-check build worker worker-arm64 test test-short test-cpus test-upstream fmt-check vet unit demo bench bench-compare fuzz clean flex-template study study-quick

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/l2gflow

# The linux/amd64 binary Dataflow workers run (label stages itself when it
# is that binary; otherwise pass it with --worker_binary).
worker:
	GOOS=linux GOARCH=amd64 CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/l2gflow-linux-amd64 ./cmd/l2gflow

# The linux/arm64 worker binary, for Dataflow's Tau T2A machine types:
# pass it with --worker_binary (the SIMD kernels are amd64-only; arm64
# runs the backend's portable paths).
worker-arm64:
	GOOS=linux GOARCH=arm64 CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/l2gflow-linux-arm64 ./cmd/l2gflow

# The Dataflow Flex Template of the labeling job (flex/): the launcher
# image and the template file. Needs Docker and gcloud, and:
#   IMAGE=<region>-docker.pkg.dev/<project>/<repo>/l2gflow
#   TEMPLATE=gs://<bucket>/templates/l2gflow-label.json
flex-template: worker
	@command -v docker >/dev/null || { echo "flex-template: needs docker (and gcloud); see flex/Dockerfile"; exit 1; }
	@test -n "$(IMAGE)" -a -n "$(TEMPLATE)" || { echo "flex-template: set IMAGE=... and TEMPLATE=gs://..."; exit 1; }
	docker build -f flex/Dockerfile -t $(IMAGE) .
	docker push $(IMAGE)
	gcloud dataflow flex-template build $(TEMPLATE) --image $(IMAGE) --sdk-language GO --metadata-file flex/metadata.json

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null | grep -v '^third_party/' || find . -name '*.go' -not -path './third_party/*')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# The launcher test (cmd/l2gflow) runs the binary make worker builds.
unit: worker
	L2GFLOW_WORKER_BINARY=$(CURDIR)/bin/l2gflow-linux-amd64 $(GO) test -count=1 -timeout 60m ./...
	cd third_party/compute && $(GO) test -count=1 ./internal/gobackend/...

test: fmt-check vet fork-check unit test-cpus test-upstream

# The fork is pristine upstream plus third_party/compute-patches (FORK.md).
fork-check:
	third_party/forkpatches.sh check

# The model on upstream compute v0.1.14 (go.mod without the replace
# directive, in a temporary -modfile): its Go backend lacks the batch
# normalisation ops, so training takes the element-wise batch norm; its
# losses are checked against the fork's (model/testdata/train_losses.json).
test-upstream:
	dir=$$(mktemp -d) && sed '/^replace github.com\/gomlx\/compute /d' go.mod > $$dir/upstream.mod && \
	cp go.sum $$dir/upstream.sum && \
	L2GFLOW_EXPECT_BATCHNORM_OPS=false GOFLAGS="$(GOFLAGS) -mod=mod" $(GO) test -modfile=$$dir/upstream.mod -count=1 \
		-run 'TestTrainingLossesMatchForkBatchNorm|TestBatchNorm' ./model/; \
	status=$$?; rm -rf $$dir; exit $$status

# The backend's tests and the model's tests (which compare the networks
# with references) on the kernel sets other CPUs run: AVX-512 switched off
# (the AVX2 kernels: Dataflow's E2 and N1 workers may lack AVX-512) and a
# build without the SIMD experiment (portable Go, as on arm64); and go vet
# for arm64 (Tau T2A workers).
test-cpus:
	cd third_party/compute && GODEBUG=cpu.avx512f=off $(GO) test -count=1 ./internal/gobackend/...
	GODEBUG=cpu.avx512f=off $(GO) test -count=1 ./model/
	cd third_party/compute && GOEXPERIMENT= $(GO) test -count=1 ./internal/gobackend/...
	GOEXPERIMENT= $(GO) test -count=1 ./model/
	GOARCH=arm64 $(GO) vet ./...

# The quick check while working: every test but the end-to-end ones that
# train, build l2gflow or run whole jobs in processes of their own.
test-short: fmt-check vet
	$(GO) test -short -count=1 -timeout 20m ./...

demo: build
	./$(BIN) demo --out $(DEMO_OUT)

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 3x ./...

# l2gflow against its PyTorch reference on the pinned workloads (4 rounds,
# each workload on both sides back to back, 2 threads each side;
# bench/compare.py). Uses Debian's python3-torch (installed here if
# missing), never a python3 earlier on PATH.
ROUNDS ?= 4
# The label-quality study (hours on 2 cores; resumable: re-run to continue).
# Not part of make test. STUDY_ARGS adds flags, e.g. STUDY_ARGS="--arms cam,l2g".
STUDY_OUT ?= study-out
study: build
	./$(BIN) study --out $(STUDY_OUT) --report docs/quality.md $(STUDY_ARGS)

# The study's check of minutes (one seed, 300 images); reports to $(STUDY_OUT)-quick.
study-quick: build
	./$(BIN) study --quick --out $(STUDY_OUT)-quick --report $(STUDY_OUT)-quick/quality.md $(STUDY_ARGS)

# The labeling job's rate against the previous commit's (BASE), paired
# rounds of whole label processes on the same images; says whether the
# labels changed too.
BASE ?= HEAD~1
bench-against: build
	rm -rf bench-out/base-src && git worktree add --detach bench-out/base-src $(BASE)
	cd bench-out/base-src && $(GO) build -o $(CURDIR)/bin/l2gflow-base ./cmd/l2gflow; \
	status=$$?; cd $(CURDIR) && git worktree remove --force bench-out/base-src; exit $$status
	./$(BIN) bench --against bin/l2gflow-base --images $(or $(IMAGES),1000) --rounds $(or $(ROUNDS),4) --out bench-out/against

bench-compare: build
	@/usr/bin/python3 -c "import torch, torchvision" 2>/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch python3-torchvision >/dev/null; }
	$(GO) build -o bin/torchexport ./bench/torchexport
	/usr/bin/python3 bench/compare.py --l2gflow ./$(BIN) --torchexport bin/torchexport --rounds $(ROUNDS) --out docs/performance.md

# Each fuzz target for FUZZTIME (the seeds alone run in `make test`).
FUZZTIME ?= 20s
FUZZ_TARGETS := \
	./io/dataset:FuzzParseTagList ./io/dataset:FuzzParseManifest ./io/dataset:FuzzParseClasses \
	./io/imagefile:FuzzDecodeRGB ./io/imagefile:FuzzDecodeLabel \
	./io/artifact:FuzzDecode ./io/weights:FuzzParse

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

clean:
	rm -rf bin $(DEMO_OUT) $(STUDY_OUT)-quick
