#!/usr/bin/env bash
# The OCI distribution-spec conformance suite (built by interop/backends/build.sh) against the
# example registry: pull, push, content discovery and content management, every API and data
# switch on that can apply to the registry (see README, "Tested against the backends operators
# run"). Fails unless the suite reports no failure and no error. Run from the crate root after
# `cargo build --examples --all-features`; REGISTRY_DEMO overrides the registry binary,
# OCI_CONFORMANCE the suite's (default: what build.sh built).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${REGISTRY_DEMO:-target/debug/examples/registry_demo}
suite=${OCI_CONFORMANCE:-$HOME/.cache/towerscope-backends/bin/conformance}
[ -x "$bin" ] || { echo "conformance_e2e: no registry at $bin" >&2; exit 1; }
[ -x "$suite" ] || { echo "conformance_e2e: no suite at $suite (run interop/backends/build.sh)" >&2; exit 1; }

work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

port=$(free_port)
printf 'listen: 127.0.0.1:%s\nmetric: { port: %s }\n' "$port" "$(free_port)" > "$work/registry.yml"
"$bin" --config "$work/registry.yml" > "$work/registry.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
  curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/registry.log" >&2; exit 1; }
  sleep 0.05
done

# The suite's documented variables: the registry, then every switch the registry supports.
export OCI_REGISTRY="127.0.0.1:$port" OCI_TLS=disabled OCI_VERSION=1.1 \
  OCI_REPO1=conformance/repo1 OCI_REPO2=conformance/repo2 OCI_RESULTS_DIR="$work/results" \
  OCI_LOG=warn
# The four workflows of the suite's earlier releases.
export OCI_API_PULL=true OCI_API_PUSH=true OCI_API_TAGS_LIST=true OCI_API_REFERRER=true \
  OCI_API_BLOBS_DELETE=true OCI_API_MANIFESTS_DELETE=true OCI_API_TAGS_DELETE=true
# Off by default in the suite, supported here.
export OCI_API_BLOBS_UPLOAD_CANCEL=true OCI_API_MANIFESTS_TAG_PARAM=true
# OCI_DATA_SPARSE stays off: the registry refuses a manifest whose blobs it does not hold (README).

started=$SECONDS
set +e
"$suite" > "$work/suite.out" 2>&1
code=$?
set -e
summary=$(sed -n '/^OCI Conformance Result/,/^  Total/p' "$work/suite.out")
echo "$summary"
fails=$(awk '/^  FAIL\.+:/ {print $2}' <<< "$summary")
errors=$(awk '/^  Error\.+:/ {print $2}' <<< "$summary")
if [ "$code" != 0 ] || [ "${fails:-x}" != 0 ] || [ "${errors:-x}" != 0 ]; then
  grep 'failed test' "$work/suite.out" | head -40 >&2
  sed -n '/^API conformance/,$p' "$work/suite.out" >&2
  echo "--- registry log:" >&2; tail -20 "$work/registry.log" >&2
  echo "conformance_e2e: FAIL (exit $code)"
  exit 1
fi
sed -n '/^API conformance/,/^\*\*\*\|^$/p' "$work/suite.out" | grep -v '^$' || true
echo "conformance_e2e: passed in $((SECONDS - started)) s: $(tr -s ' .' ' ' <<< "$summary" | tr '\n' ';')"
