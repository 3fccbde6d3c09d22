# kok — Kube-on-Kube. `make help` lists the targets.
SHELL := /bin/bash
export CGO_ENABLED := 0
export GOFLAGS := -buildvcs=false
export GOTOOLCHAIN := local
KOK_CACHE_DIR ?= /var/cache/kok
export KOK_CACHE_DIR
GO_LDFLAGS := -s -w
BIN := bin
CONTROLLER_GEN ?= go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.19.0
HELM_VERSION := v3.19.0
# Test tools are built from the Go module proxy into the cache CI keeps.
HELM := $(KOK_CACHE_DIR)/tools/helm-$(HELM_VERSION)/helm
export KOK_HELM := $(HELM)
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(KOK_CACHE_DIR)/tools/golangci-lint-$(GOLANGCI_LINT_VERSION)/golangci-lint

.PHONY: help build up down status test test-deps unit envtest e2e bench conformance fmt vet lint generate assets tools clean

help: ## Show targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## Build kok, kok-manager, kok-agent, kok-pause and kok-cni (static) into bin/
	go build -trimpath -ldflags '$(GO_LDFLAGS)' -o $(BIN)/kok ./cmd/kok
	go build -trimpath -ldflags '$(GO_LDFLAGS)' -o $(BIN)/kok-manager ./cmd/kok-manager
	go build -trimpath -ldflags '$(GO_LDFLAGS)' -o $(BIN)/kok-pause ./cmd/kok-pause
	go build -trimpath -ldflags '$(GO_LDFLAGS)' -o $(BIN)/kok-agent ./cmd/kok-agent
	go build -trimpath -ldflags '$(GO_LDFLAGS)' -o $(BIN)/kok-cni ./cmd/kok-cni

up: build ## Set up this machine and bring up the local meta cluster
	$(BIN)/kok up

down: build ## Stop the local meta cluster
	$(BIN)/kok down

status: build ## Show the local meta cluster
	$(BIN)/kok status

assets: build ## Build every pinned Kubernetes/etcd version (envtest and e2e need them)
	$(BIN)/kok build --all
	$(BIN)/kok envtest-assets > /dev/null

tools: $(HELM) $(GOLANGCI_LINT) ## Build test tools (helm, golangci-lint) into the cache

$(HELM):
	GOBIN=$(dir $(HELM)) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

$(GOLANGCI_LINT):
	GOBIN=$(dir $(GOLANGCI_LINT)) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

generate: ## Regenerate deepcopy code, apply configurations and CRD/RBAC manifests from the API types
	$(CONTROLLER_GEN) object applyconfiguration paths=./api/...
	$(CONTROLLER_GEN) crd:allowDangerousTypes=false rbac:roleName=kok-manager paths=./api/... paths=./internal/... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	rm -f charts/kok/crds/*.yaml charts/kok/files/catalog/*.yaml charts/kok/files/components/*.yaml charts/kok/files/addons/*.yaml
	cp config/crd/bases/*.yaml charts/kok/crds/
	cp config/rbac/role.yaml charts/kok/files/role.yaml
	cp config/catalog/kubernetesversion-*.yaml charts/kok/files/catalog/
	mkdir -p charts/kok/files/components && cp config/components/*-*.yaml charts/kok/files/components/
	mkdir -p charts/kok/files/addons && cp config/addons/*-*.yaml charts/kok/files/addons/

fmt: ## gofmt
	gofmt -w $$(git ls-files '*.go')

vet: ## go vet
	go vet ./...

lint: $(GOLANGCI_LINT) ## golangci-lint (.golangci.yml), test files behind the envtest and e2e tags included
	@$(GOLANGCI_LINT) run ./...

unit: ## Unit tests (no cluster)
	go test ./... -count=1

envtest: assets tools ## Controller tests against a real kube-apiserver + etcd
	KUBEBUILDER_ASSETS=$$($(BIN)/kok envtest-assets) go test -tags envtest ./... -count=1

e2e: build assets tools ## End-to-end tests on a real local meta cluster (root)
	go test -tags e2e -p 1 ./internal/local/hosts/ ./test/e2e/... -count=1 -v -timeout 60m

# Prometheus (Debian's) runs kok's alert rules and dashboard in the e2e
# tests; policy-rc.d keeps its service from starting.
test-deps: ## Install the Debian packages the tests use beyond kok up's (prometheus)
	@command -v prometheus >/dev/null || { p=/usr/sbin/policy-rc.d; made=; \
		if [ ! -e $$p ]; then printf '#!/bin/sh\nexit 101\n' >$$p && chmod +x $$p && made=1; fi; \
		apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null; \
		rc=$$?; if [ -n "$$made" ]; then rm -f $$p; fi; exit $$rc; }

test: vet build assets tools test-deps ## Everything: unit + envtest + e2e
	KUBEBUILDER_ASSETS=$$($(BIN)/kok envtest-assets) go test -tags envtest ./... -count=1
	go test -tags e2e -p 1 ./internal/local/hosts/ ./test/e2e/... -count=1 -v -timeout 60m

bench: build assets ## Benchmarks; results under bench/results/ (COLD=1 adds a cold kok up, ONLY=platform|clusters|etcd|machines|addons|fleet picks one)
	go run ./bench -out bench/results $(if $(COLD),-cold) $(if $(ONLY),-only $(ONLY))

conformance: build assets ## Kubernetes' e2e conformance suite on a business cluster → bench/results/conformance.md (FOCUS=regexp, SKIP=regexp, PROCS=n)
	@dpkg -s gcc make libc6-dev netcat-openbsd curl bind9-dnsutils >/dev/null 2>&1 || (apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc make libc6-dev netcat-openbsd curl bind9-dnsutils)
	go run ./bench -out bench/results -only conformance $(if $(FOCUS),-conformance-focus '$(FOCUS)') $(if $(SKIP),-conformance-skip '$(SKIP)') $(if $(PROCS),-conformance-procs $(PROCS))

clean: ## Remove bin/
	rm -rf $(BIN)
