#!/usr/bin/env bash
# Build the Go shop client (main.go here) into <repo>/.cache/bin/shop-go-client from Go stubs
# generated afresh from proto/ with proto/buf.gen.go.yaml, the template the README tells users to
# run: so the client exercises exactly what a Go team would get, never stale stubs.
#
# The stubs go to ./gen (gitignored), the root of the module github.com/meshkit/meshkit/gen/go,
# whose go.mod this script writes (buf writes none); go.mod here replaces that module with ./gen.
# A stamp next to the binary holds a hash of this module's files, every .proto, the template, and
# the Go and buf versions; an equal stamp skips generation and the compiler entirely.
#
# Called by scripts/tools (so `make tools` and CI build it) and by tests/e2e/test_go_client.py
# (so the test never runs a stale binary). Needs buf, protoc-gen-go and protoc-gen-go-grpc in
# <repo>/.cache/bin (`scripts/tools go`). Cold: grpc and protobuf from the Go module proxy, ~30 s.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "${HERE}/../../.." && pwd)"
BIN="${REPO}/.cache/bin"
EXE="${BIN}/shop-go-client"
STAMP="${BIN}/.shop-go-client.sha256"
GEN_MODULE="github.com/meshkit/meshkit/gen/go"

log() { printf '%s\n' "$*" >&2; }

command -v go >/dev/null 2>&1 || { log "shop-go-client: 'go' not found on PATH"; exit 1; }
for tool in buf protoc-gen-go protoc-gen-go-grpc; do
    [[ -x "${BIN}/${tool}" ]] || { log "shop-go-client: ${BIN}/${tool} is missing; run scripts/tools go"; exit 1; }
done
# As registry-go: never fetch another toolchain; go.sum is committed, so a missing checksum fails
# the build instead of rewriting a tracked file in CI.
export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0
export GIT_TERMINAL_PROMPT=0
export PATH="${BIN}:${PATH}"

want="$(
    cd "${REPO}"
    {
        cat "${HERE}/go.mod" "${HERE}/go.sum" "${HERE}/main.go" "${HERE}/build.sh" \
            proto/buf.gen.go.yaml proto/buf.yaml
        find proto -name '*.proto' | LC_ALL=C sort | xargs cat
        go version
        buf --version
    } | sha256sum | cut -d' ' -f1
)"
if [[ -x "${EXE}" && "$(cat "${STAMP}" 2>/dev/null)" == "${want}" ]]; then
    log "==> shop-go-client up to date (${EXE})"
    exit 0
fi
log "==> generating Go stubs (proto/buf.gen.go.yaml) and building shop-go-client"
start=${SECONDS}
out="$(mktemp -d)"
trap 'rm -rf "${out}"' EXIT
# buf's -o is prepended to the template's out (gen/go), so this is the template as users run it.
(cd "${REPO}" && buf generate --template proto/buf.gen.go.yaml -o "${out}")
# The versions every generated file needs at run time; main.go's go.mod pins the same ones.
cat > "${out}/gen/go/go.mod" <<MOD
module ${GEN_MODULE}

go 1.26.0

require (
	google.golang.org/genproto/googleapis/api v0.0.0-20261110000943-09e21b237f2c
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)
MOD
rm -rf "${HERE}/gen"
mv "${out}/gen/go" "${HERE}/gen"
mkdir -p "${BIN}"
(cd "${HERE}" && go build -trimpath -o "${EXE}.tmp" .)
mv "${EXE}.tmp" "${EXE}"
printf '%s\n' "${want}" > "${STAMP}"
log "==> shop-go-client ready in $((SECONDS - start))s (${EXE})"
