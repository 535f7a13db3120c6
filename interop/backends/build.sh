#!/usr/bin/env bash
# Builds the real backends the interop suite tests towerscope against, from their Go modules
# (the Go module proxy; nothing of their code is in this repository):
#
#   jaeger          Jaeger v2 (github.com/jaegertracing/jaeger v1.75.0, cmd/jaeger)
#   prometheus      Prometheus 3.16 and promtool (github.com/prometheus/prometheus v0.316.0,
#   promtool        built with -tags remove_all_sd: file, HTTP and static discovery only; the API
#                   without the web UI's assets, which the tests do not use)
#   oci-conformance the OCI distribution-spec conformance suite
#                   (github.com/opencontainers/distribution-spec/conformance, a program)
#
# One Go module per backend (jaeger/, prometheus/, conformance/: go.mod and go.sum pinned and
# committed): in one module Go's minimal version selection would lift Jaeger's OpenTelemetry
# Collector libraries (v1.45) to Prometheus's (v1.69), a combination Jaeger v1.75 was never
# built with.
#
# Everything goes into one cache directory, reused between runs: the module cache, the build
# cache and the binaries. A binary is rebuilt only when its module's go.mod or go.sum, the
# build flags or the Go version change. Prints `NAME=PATH` lines for the binaries (the
# environment variables the interop scripts read) on stdout, progress on stderr.
#
#   interop/backends/build.sh [--print-only]
#
# Environment:
#   TOWERSCOPE_BACKENDS_CACHE  the cache directory (default ~/.cache/towerscope-backends)
#   GOMODCACHE, GOCACHE        default to mod/ and build/ under the cache directory
#
# Needs Go 1.26 (Prometheus 3.16 needs 1.26.7 or later) and the Go module proxy. Cold (empty
# cache), on a 2-core machine: downloading the modules about 2 min, Jaeger about 7 min,
# Prometheus and promtool about 3 min, the conformance suite under a minute; warm, a few
# seconds.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${TOWERSCOPE_BACKENDS_CACHE:-$HOME/.cache/towerscope-backends}
export GOMODCACHE=${GOMODCACHE:-$cache/mod}
export GOCACHE=${GOCACHE:-$cache/build}
# The module files are the lock: nothing is resolved anew, no other Go is downloaded.
export GOFLAGS=-mod=readonly
export GOTOOLCHAIN=local
bin=$cache/bin
mkdir -p "$bin"

print_only=false
[ "${1:-}" = --print-only ] && print_only=true

command -v go > /dev/null || { echo "build.sh: no go on PATH (Go 1.26 is needed)" >&2; exit 1; }
go_version=$(go env GOVERSION)

# build NAME MODULE_DIR FLAGS... -- PACKAGES...: builds into $bin unless the stamp is current.
build() {
  local name=$1 dir=$here/$2; shift 2
  local flags=() packages=()
  while [ "$1" != -- ]; do flags+=("$1"); shift; done
  shift
  packages=("$@")
  local stamp
  stamp=$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -c1-16)-$(echo "$go_version ${flags[*]} ${packages[*]}" | sha256sum | cut -c1-16)
  if [ -f "$bin/$name.stamp" ] && [ "$(cat "$bin/$name.stamp")" = "$stamp" ] && [ -x "$bin/$name" ]; then
    echo "build.sh: $name is current ($bin/$name)" >&2
    return
  fi
  $print_only && { echo "build.sh: $name is not built" >&2; return 1; }
  echo "build.sh: building $name ($go_version) ..." >&2
  local started=$SECONDS out
  out=$(mktemp -d "$bin/.$name.XXXXXX")
  (cd "$dir" && go mod download && go build -ldflags='-s -w' "${flags[@]}" -o "$out/" "${packages[@]}") >&2 \
    || { rm -rf "$out"; echo "build.sh: building $name failed" >&2; return 1; }
  for f in "$out"/*; do mv -f "$f" "$bin/"; done
  rmdir "$out"
  # A package's binary is named after its last path element.
  [ -x "$bin/$name" ] || { echo "build.sh: $name: no binary $bin/$name" >&2; return 1; }
  echo "$stamp" > "$bin/$name.stamp"
  echo "build.sh: built $name in $((SECONDS - started)) s" >&2
}

build jaeger jaeger -- github.com/jaegertracing/jaeger/cmd/jaeger
build prometheus prometheus -tags remove_all_sd -- \
  github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool
build conformance conformance -- github.com/opencontainers/distribution-spec/conformance

echo "JAEGER=$bin/jaeger"
echo "PROMETHEUS3=$bin/prometheus"
echo "PROMTOOL3=$bin/promtool"
echo "OCI_CONFORMANCE=$bin/conformance"
# Prometheus' metrics.proto (github.com/prometheus/client_model at the version Prometheus 3.16
# requires), which tools/proto-gen checks src/metrics/proto against. Downloaded here rather than
# assumed present: a cache kept between runs may hold the binaries without the module sources.
proto_dir=$(cd "$here/prometheus" && go mod download -json github.com/prometheus/client_model \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -f "$proto_dir/io/prometheus/client/metrics.proto" ] \
  || { echo "build.sh: no metrics.proto under '$proto_dir'" >&2; exit 1; }
echo "PROMETHEUS_METRICS_PROTO=$proto_dir/io/prometheus/client/metrics.proto"
