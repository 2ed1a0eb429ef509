#!/usr/bin/env bash
# Build the Go registry interop client (main.go here) into <repo>/.cache/bin/registry-go-client,
# only when its sources changed: a stamp next to the binary holds a hash of go.mod, go.sum,
# main.go and the Go version, and an equal stamp skips the compiler entirely (a warm `go build`
# of this cgo module still costs seconds on 2 cores; the hash costs milliseconds).
#
# Called by scripts/tools (so `make tools` and CI build it) and by
# tests/integration/test_registry_go_client.py (so the test never runs a stale binary).
#
# Why cgo: confluent-kafka-go's serde package imports its kafka package, which links the
# librdkafka static library bundled in the module (no system librdkafka needed, but gcc is).
# Cold: ~35 MiB from the Go module proxy (the module zip with librdkafka is ~34 MiB), ~25 s.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "${HERE}/../../.." && pwd)"
BIN="${REPO}/.cache/bin"
EXE="${BIN}/registry-go-client"
STAMP="${BIN}/.registry-go-client.sha256"

log() { printf '%s\n' "$*" >&2; }

command -v go >/dev/null 2>&1 || { log "registry-go-client: 'go' not found on PATH"; exit 1; }
# Same rules as scripts/tools: never fetch another toolchain. -mod=readonly rather than
# scripts/tools' -mod=mod: this module's go.sum is committed, so a missing checksum must fail the
# build instead of quietly rewriting a tracked file in CI.
export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=1
export GIT_TERMINAL_PROMPT=0

want="$(cd "${HERE}" && { cat go.mod go.sum main.go; go version; } | sha256sum | cut -d' ' -f1)"
if [[ -x "${EXE}" && "$(cat "${STAMP}" 2>/dev/null)" == "${want}" ]]; then
    log "==> registry-go-client up to date (${EXE})"
    exit 0
fi
log "==> building registry-go-client (confluent-kafka-go; cold: ~35 MiB download, ~25 s)"
start=${SECONDS}
mkdir -p "${BIN}"
(cd "${HERE}" && go build -trimpath -o "${EXE}.tmp" .)
mv "${EXE}.tmp" "${EXE}"
printf '%s\n' "${want}" > "${STAMP}"
log "==> registry-go-client ready in $((SECONDS - start))s (${EXE})"
