# policyd — the front door. Thin over CMake (csrc/) and go (everything else).
#
#   make run          build and serve the bundled example on 127.0.0.1:8000
#   make test         every test: C++ (ctest, incl. ONNX conformance), Go (-race, cgocheck2,
#                     CGO_ENABLED=0), ONNX Runtime reference comparisons over HTTP
#   make bench-engine engine latency/throughput beside onnxruntime-node, same machine, same run
#   make bench-clients the client libraries: the Python HTTP client beside raw http.client loops, LocalPolicy
#                     beside PyTorch and the engine; build/bench-clients.md
#   make bench-quant  issue 15's int8 (mlp-large quantize_dynamic) and Einsum attention targets,
#                     beside onnxruntime-node, outputs checked against it; build/bench-quant.md
#   make fuzz-native  the C ABI fuzz target against an ASan/UBSan build of the library (FUZZTIME=60s)
#   make check-monitoring  promtool check/test of the Prometheus rules, dashboard and GPU collector tests
#   make bench        the benchmark suite: policyd beside the peers over HTTP (and gRPC, with ghz from
#                     make tools beside our generator), report in build/bench/
#                     (BENCH_QUICK=1 for ~4 min, BENCH_SAVE_BASELINE=1 to save this hardware's baseline)
#                     then a short soak (BENCH_SOAK=3m; BENCH_SOAK=0 skips it)
#   make bench-soak   memory over time: 16 connections over three models for SOAK (default 30m), RSS
#                     slope after the first 5 minutes, failed requests; report in build/bench/soak-*/
#   make bench-memory peak RSS for a refused 15 MiB JSON body and the cnn-atari batch-32 body
#   make deps         Debian packages the build and the tests need (idempotent; root), the CUDA
#                     toolkit included (CUDA_DEPS=0 skips it; the cuda plugin is then not built);
#                     make deps-build is what make build/run install (CPU only), make deps-test the rest
#   make gpu-bundle   build/gpu-bundle/: what bench/gpu-check.sh needs on a GPU machine that has
#                     only the CUDA toolkit, CMake, ninja and Python (docs/gpu.md)
#   make proto        regenerate api/inference/*.pb.go and the Python client's policyd/_proto from the
#                     .proto files (protoc + protoc-gen-go + protoc-gen-go-grpc + grpc_python_plugin;
#                     TestGeneratedCodeFresh and clients/python's test_generated_code_fresh fail when stale)
#   make test-python  the Python client's pytest suite against bin/policyd (PYTHON=/usr/bin/python3)
#   make tools        tools/bin/grpcurl and tools/bin/ghz (pinned in tools/<name>/go.mod) for the gRPC e2e
#                     test, the docs and make bench's gRPC rows
#   make engines      engine caches of $(REPOSITORY) for each local GPU architecture (MODEL=, SIGN_KEY=)
#   make check-deploy validate docker/ and deploy/: Dockerfiles, compose, Kubernetes, KServe, systemd
#   make docker       build the CPU image policyd:cpu (needs a Docker engine with BuildKit)
#   make docker-gpu   build the GPU image policyd:gpu (needs a Docker engine; runs with the NVIDIA Container Toolkit)

SHELL      := /bin/bash
GO         ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BUILD_DIR  ?= build
ADDR       ?= 127.0.0.1:8000
REPOSITORY ?= examples/repository
JOBS       ?= $(shell nproc)
export GOTOOLCHAIN := local

# What building and serving on the CPU needs (make build, make run) ...
# (ocl-icd-opencl-dev: Debian's oneDNN CMake config looks for OpenCL; libdnnl-dev only recommends it.)
BUILD_PACKAGES := cmake ninja-build g++ pkg-config libonnx-dev libprotobuf-dev protobuf-compiler libdnnl-dev \
                  ocl-icd-opencl-dev
# ... and what the tests add (make test): GoogleTest, the ONNX backend test data, nlohmann/json for
# the reference checker, promtool, Node.js for the ONNX Runtime references, and the CUDA toolkit.
TEST_PACKAGES  := libonnx-testdata libgtest-dev libgmock-dev nlohmann-json3-dev prometheus \
                  protoc-gen-go protoc-gen-go-grpc \
                  python3 python3-numpy python3-pytest python3-grpcio python3-protobuf python3-setuptools \
                  python3-venv python3-onnx protobuf-compiler-grpc
# The CUDA toolkit of Debian 12 (contrib/non-free): nvcc, cudart, cuBLAS/cuBLASLt (libcublaslt11),
# NVRTC (libnvrtc11.2) and their headers (nvidia-cuda-dev). The cuda plugin needs no GPU to build.
CUDA_DEPS    ?= 1
CUDA_PACKAGES := nvidia-cuda-toolkit nvidia-cuda-dev
NONFREE_SOURCES := /etc/apt/sources.list.d/debian-nonfree.sources
# -DPD_CUDA=AUTO|ON|OFF for CMake (AUTO: build the cuda plugin when the toolkit is found).
PD_CUDA      ?= AUTO
# -DPD_TENSORRT=AUTO|ON|OFF (AUTO: build the tensorrt plugin when TensorRT >= 10 and the CUDA toolkit
# are found); TENSORRT_ROOT=<dir> points CMake at a TensorRT outside the standard paths.
PD_TENSORRT  ?= AUTO
TENSORRT_ROOT ?=
# -DPD_BUILD_TESTS=AUTO|ON|OFF (AUTO: the C++ tests when GoogleTest and nlohmann/json are installed).
PD_BUILD_TESTS ?= AUTO
PROMTOOL   ?= promtool

.PHONY: all deps deps-build deps-test deps-cuda build native go run test test-native test-go test-python check-monitoring bench bench-engine bench-clients bench-quant refs \
        bench-soak bench-memory \
        gpu-bundle engines clean fuzz-native proto tools

all: build

# apt_install installs the Debian packages of $(1) that are missing (idempotent; root).
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "$@: installing $$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "$@: run as root (apt-get)"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

# Everything: what building needs, what the tests need, the CUDA toolkit (CUDA_DEPS=0 skips it).
deps: deps-build deps-test

# What make build and make run need: a C++ toolchain, CMake, ONNX, protobuf, oneDNN, and Go.
deps-build:
	$(call apt_install,$(BUILD_PACKAGES))
	@$(GO) version >/dev/null 2>&1 || { echo "deps: Go 1.26 is needed (expected at /usr/local/go)"; exit 1; }

# What make test adds.
deps-test: deps-build
	$(call apt_install,$(TEST_PACKAGES))
	@command -v node >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	@if [ "$(CUDA_DEPS)" = 1 ]; then $(MAKE) --no-print-directory deps-cuda; fi

# Idempotent: enables bookworm's contrib/non-free components only when the toolkit has no
# install candidate, then installs what is missing.
deps-cuda:
	@missing=$$(for p in $(CUDA_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "deps-cuda: run as root (apt-get), or CUDA_DEPS=0"; exit 1; fi; \
	  if ! apt-cache policy nvidia-cuda-toolkit 2>/dev/null | grep -q 'Candidate: [0-9]'; then \
	    if [ ! -f $(NONFREE_SOURCES) ]; then \
	      echo "deps-cuda: enabling Debian contrib/non-free in $(NONFREE_SOURCES)"; \
	      printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: contrib non-free non-free-firmware\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' > $(NONFREE_SOURCES); \
	    fi; \
	    apt-get update -qq; \
	  fi; \
	  echo "deps-cuda: installing $$missing (about 3 GB)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Configured on every build (a second when nothing changed), so that a toolkit or GoogleTest that
# make deps-test installed since is found.
native: deps-build
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release -DPD_CUDA=$(PD_CUDA) -DPD_TENSORRT=$(PD_TENSORRT) \
	  -DPD_BUILD_TESTS=$(PD_BUILD_TESTS) $(if $(TENSORRT_ROOT),-DTENSORRT_ROOT=$(TENSORRT_ROOT)) >/dev/null
	cmake --build $(BUILD_DIR) -j $(JOBS)
	@mkdir -p lib
	@cp -u $(BUILD_DIR)/lib/libpolicyd.so $(BUILD_DIR)/lib/libpolicyd_backend_cpu.so lib/
	@if [ -f $(BUILD_DIR)/lib/libpolicyd_backend_cuda.so ]; then cp -u $(BUILD_DIR)/lib/libpolicyd_backend_cuda.so lib/; fi
	@if [ -f $(BUILD_DIR)/lib/libpolicyd_backend_tensorrt.so ]; then cp -u $(BUILD_DIR)/lib/libpolicyd_backend_tensorrt.so lib/; fi

go: native
	@mkdir -p bin
	$(GO) build -o bin/policyd ./cmd/policyd
	$(GO) build -o bin/policyctl ./cmd/policyctl

build: go

run: build
	bin/policyd --repository $(REPOSITORY) --addr $(ADDR)

# Engine caches of every model of $(REPOSITORY) (or MODEL=name[@version]) for each local GPU
# architecture, stored in the artifacts (docs/gpu.md). SIGN_KEY=file re-signs signed versions.
# Without a usable GPU it says there is nothing to build.
engines: go
	bin/policyctl engines build --repository $(REPOSITORY) $(if $(MODEL),--model $(MODEL)) $(if $(SIGN_KEY),--sign-key $(SIGN_KEY))

test: deps-test
	$(MAKE) --no-print-directory PD_BUILD_TESTS=ON build test-native test-go test-python check-monitoring check-deploy

# The Python client's tests (clients/python/tests) against bin/policyd and bin/policyctl: the Debian
# interpreter, which has python3-numpy, -pytest, -grpcio, -protobuf and -onnx (make deps-test).
PYTHON ?= /usr/bin/python3
test-python: go
	$(PYTHON) -m pytest -q clients/python/tests

test-native: native
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

# The C ABI fuzz target (bridge FuzzContextRunShapes) for FUZZTIME against the library built with
# ASan and UBSan in $(ASAN_BUILD_DIR)/ (-DPD_SANITIZE=address,undefined): the test binary runs with
# that build's libpolicyd first on the library path and libasan preloaded, so a finding stops the
# run with the sanitizer's report; a crasher is saved under bridge/testdata/fuzz/. Its seeds run
# in every go test.
ASAN_BUILD_DIR ?= build-asan
FUZZTIME       ?= 60s
fuzz-native:
	cmake -S . -B $(ASAN_BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPD_SANITIZE=address,undefined \
	  -DPD_BUILD_TESTS=OFF -DPD_CUDA=OFF -DPD_TENSORRT=OFF
	cmake --build $(ASAN_BUILD_DIR) -j $(JOBS) --target policyd policyd_backend_cpu
	@test -f lib/libpolicyd.so || { echo "fuzz-native: lib/libpolicyd.so missing: make native first"; exit 1; }
	$(GO) test -run '^$$' -fuzz '^FuzzContextRunShapes$$' -fuzztime $(FUZZTIME) -timeout 0 -parallel $(JOBS) \
	  -exec "env LD_LIBRARY_PATH=$(CURDIR)/$(ASAN_BUILD_DIR)/lib LD_PRELOAD=$$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1" \
	  ./bridge

test-go: go tools
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...
	GOEXPERIMENT=cgocheck2 $(GO) test -count=1 ./bridge/...
	CGO_ENABLED=0 $(GO) build ./...
	CGO_ENABLED=0 $(GO) test -count=1 ./bridge/... ./server/... ./engines/...

# Prometheus rules (promtool from the Debian package prometheus), the Grafana dashboard's queries
# and the GPU collector; docs/observability.md.
check-monitoring:
	@command -v $(PROMTOOL) >/dev/null || { echo "check-monitoring: $(PROMTOOL) not found; make deps installs it (Debian package prometheus)"; exit 1; }
	$(PROMTOOL) check rules monitoring/prometheus/policyd.rules.yml
	cd monitoring/prometheus && $(PROMTOOL) test rules policyd.rules.test.yml
	$(GO) test -count=1 ./monitoring/ ./gpu/
	CGO_ENABLED=0 $(GO) test -count=1 ./monitoring/ ./gpu/

.PHONY: check-deploy docker docker-gpu

# Docker images, compose, Kubernetes/KServe manifests and the systemd unit, validated offline
# without Docker or kubectl (docs/deployment.md#how-the-files-are-checked): promtool checks the
# compose Prometheus config; package deploy's Go tests do the rest.
check-deploy:
	@command -v $(PROMTOOL) >/dev/null || { echo "check-deploy: $(PROMTOOL) not found; make deps installs it (Debian package prometheus)"; exit 1; }
	$(PROMTOOL) check config --syntax-only docker/prometheus/prometheus.yml
	$(GO) test -count=1 ./deploy/

DOCKER     ?= docker
IMAGE      ?= policyd
# The images build everything from the sources inside Docker; they need a Docker engine with
# BuildKit (Docker 23+), not make deps.
docker:
	@$(DOCKER) info >/dev/null 2>&1 || { echo "docker: no Docker engine answers ($(DOCKER) info failed); make docker needs one"; exit 1; }
	DOCKER_BUILDKIT=1 $(DOCKER) build -f docker/Dockerfile -t $(IMAGE):cpu .

docker-gpu:
	@$(DOCKER) info >/dev/null 2>&1 || { echo "docker-gpu: no Docker engine answers ($(DOCKER) info failed); make docker-gpu needs one"; exit 1; }
	DOCKER_BUILDKIT=1 $(DOCKER) build -f docker/Dockerfile.gpu -t $(IMAGE):gpu .

bench-engine: build
	bash bench/engine/run.sh

# Debian's torch and onnx for bench/clients/python_local.py (the peers' torch model).
BENCH_CLIENTS_PACKAGES := python3-numpy python3-torch python3-onnx
bench-clients: build
	$(call apt_install,$(BENCH_CLIENTS_PACKAGES))
	bash bench/clients/run.sh

bench-quant: build
	BUILD_DIR=$(BUILD_DIR) bash bench/engine/quant.sh

# SOAK is make bench-soak's length, BENCH_SOAK the short soak at the end of make bench (0: none);
# SOAK_ARGS more policyctl bench soak flags (-warmup, -c, -models, -env KEY=VALUE).
SOAK       ?= 30m
BENCH_SOAK ?= 3m
SOAK_ARGS  ?=

bench: build
	bash bench/run.sh $(BENCH_ARGS)
	@if [ "$(BENCH_SOAK)" != 0 ]; then bash bench/soak/run.sh soak -d $(BENCH_SOAK) $(SOAK_ARGS); fi

bench-soak: build
	bash bench/soak/run.sh soak -d $(SOAK) $(SOAK_ARGS)

bench-memory: build
	bash bench/soak/run.sh memory

# What shadow evaluation costs the primary (docs/rollout.md, What the primary pays): mlp-med b1,
# 16 connections, shadow at 100 % against none, alternated (ROUNDS, N).
.PHONY: bench-shadow
bench-shadow: build
	bash bench/shadow/run.sh

# The C++ build dependencies a CUDA-13-only GPU machine lacks (ONNX + protobuf headers, libraries
# and protoc's generated headers; nlohmann/json), for bench/gpu-check.sh. Under 64 MiB with the tree.
gpu-bundle:
	bash bench/gpu/make-bundle.sh $(BUILD_DIR)/gpu-bundle

# ONNX Runtime references: the served models' (testdata/reference, make_refs.js) and the
# generated ONNX node tests of opsets 18+ (testdata/onnx-cases: pd_onnx_cases writes the models
# and inputs, make_cases.js the outputs).
refs:
	cd tools/reference && npm ci --ignore-scripts --no-audit --no-fund && node make_refs.js
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release -DPD_BUILD_TESTS=ON >/dev/null
	cmake --build $(BUILD_DIR) -j $(JOBS) --target pd_onnx_cases
	rm -rf testdata/onnx-cases
	$(BUILD_DIR)/csrc/tests/pd_onnx_cases --out testdata/onnx-cases
	cd tools/reference && node make_cases.js

# onnxruntime-node under tools/reference, as make refs installs it: the tests of policyctl's
# --golden-from onnxruntime run with it (offline they skip, saying so).
.PHONY: ort-node
test-go: ort-node
ort-node:
	@test -f tools/reference/node_modules/onnxruntime-node/package.json || \
	  (cd tools/reference && npm ci --ignore-scripts --no-audit --no-fund) || \
	  echo "ort-node: npm ci failed (offline?): the --golden-from onnxruntime tests will skip"

clean:
	rm -rf $(BUILD_DIR) lib bin

# The KServe v2 gRPC service and Triton's model configuration (api/inference/*.proto, written from
# the published files) into Go. The .proto files keep the official text (no go_package option):
# the Go import path is given here with M options.
PROTO_DIR := api/inference
PROTO_GO_PKG := github.com/policyd/policyd/api/inference
proto:
	$(call apt_install,protobuf-compiler protoc-gen-go protoc-gen-go-grpc protobuf-compiler-grpc)
	protoc -I $(PROTO_DIR) \
	  --go_out=$(PROTO_DIR) --go_opt=paths=source_relative \
	  --go_opt=Mgrpc_service.proto=$(PROTO_GO_PKG) --go_opt=Mmodel_config.proto=$(PROTO_GO_PKG) \
	  --go-grpc_out=$(PROTO_DIR) --go-grpc_opt=paths=source_relative \
	  --go-grpc_opt=Mgrpc_service.proto=$(PROTO_GO_PKG) --go-grpc_opt=Mmodel_config.proto=$(PROTO_GO_PKG) \
	  $(PROTO_DIR)/grpc_service.proto $(PROTO_DIR)/model_config.proto
	sh clients/python/scripts/gen_proto.sh

# Command-line tools the tests and docs use, built from their Go modules pinned in tools/<name>/go.mod
# into tools/bin/ (gitignored).
# ghz is make bench's independent gRPC load generator (the suite's gRPC rows).
tools: tools/bin/grpcurl tools/bin/ghz
tools/bin/grpcurl: tools/grpcurl/go.mod
	@mkdir -p tools/bin
	cd tools/grpcurl && $(GO) build -o ../bin/grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl
tools/bin/ghz: tools/ghz/go.mod
	@mkdir -p tools/bin
	cd tools/ghz && $(GO) build -o ../bin/ghz github.com/bojand/ghz/cmd/ghz
