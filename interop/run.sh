#!/usr/bin/env bash
# Interop suite: the example service as a real process, checked by real peers (curl, promtool).
# Run from the crate root after `cargo build --examples`; .ci/run does both. With PROMETHEUS3 and
# PROMTOOL3 (Prometheus 3.16, from interop/backends/build.sh), the promtool and Prometheus checks
# run with Debian's 2.42 and again with 3.16.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  exec 9>&- 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
fail() { echo "interop: FAIL: $*" >&2; exit 1; }
promtools=(promtool)
[ -n "${PROMTOOL3:-}" ] && promtools+=("$PROMTOOL3")

app_port=$(free_port)
metrics_port=$(free_port)
cat > "$work/config.yml" <<YAML
metric:
  port: $metrics_port
  namespace: harbor
  subsystem: core
request_id:
  header: X-Request-ID
YAML

passed=0
ok() { passed=$((passed + 1)); echo "interop: ok: $*"; }

# An invalid configuration stops the service before it binds anything, with the field named.
printf 'metric: { path: metrics }\n' > "$work/bad.yml"
if TOWERSCOPE_CONFIG="$work/bad.yml" target/debug/examples/axum_basic 2> "$work/bad.err"; then
  fail "the example started with an invalid configuration"
fi
grep -q "metric.path: must start with '/'" "$work/bad.err" || fail "no field in the error: $(cat "$work/bad.err")"
printf 'trace:\n  enabled: true\n  jaeger: { agent_host: 127.0.0.1 }\n  otel: { endpoint: "127.0.0.1:4318" }\n' > "$work/bad2.yml"
if TOWERSCOPE_CONFIG="$work/bad2.yml" target/debug/examples/axum_basic 2> "$work/bad2.err"; then
  fail "the example started with two exporters"
fi
grep -q "trace: set exactly one exporter: trace.jaeger or trace.otel, not both" "$work/bad2.err" \
  || fail "no exporter error: $(cat "$work/bad2.err")"
ok "invalid configuration is refused with its field"

TOWERSCOPE_CONFIG="$work/config.yml" APP_ADDR="127.0.0.1:$app_port" \
  target/debug/examples/axum_basic > "$work/app.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
  curl -fsS "http://127.0.0.1:$metrics_port/metrics" > /dev/null 2>&1 && break
  sleep 0.05
done
app="http://127.0.0.1:$app_port"
metrics="http://127.0.0.1:$metrics_port/metrics"

# Request ids: a valid one is echoed, a hostile one is replaced by a UUID.
hdr=$(curl -fsS -D - -o /dev/null -H 'X-Request-ID: interop-1' "$app/users/42")
grep -qi '^x-request-id: interop-1' <<<"$hdr" || fail "valid id not echoed: $hdr"
hdr=$(curl -fsS -D - -o /dev/null -H 'X-Request-ID: {"json":' "$app/users/current")
grep -qiE '^x-request-id: [0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}' <<<"$hdr" \
  || fail "hostile id not replaced: $hdr"
ok "x-request-id echoed and replaced"

curl -s -o /dev/null "$app/no/such/path" || true
curl -s -o /dev/null -X BREW "$app/users/42" || true

curl -fsS "$metrics" > "$work/all.txt"
for tool in "${promtools[@]}"; do
  "$tool" check metrics < "$work/all.txt" || fail "$tool rejected /metrics"
done
ok "promtool check metrics (${#promtools[@]} versions) accepts /metrics"

grep -q '^harbor_core_http_request_total{method="GET",code="200",operation="getUser"} 1$' "$work/all.txt" \
  || fail "getUser total missing: $(cat "$work/all.txt")"
grep -q '^harbor_core_http_request_total{method="GET",code="200",operation="getCurrentUser"} 1$' "$work/all.txt" \
  || fail "literal route beat by the parameter route"
grep -q '^harbor_core_http_request_total{method="GET",code="404",operation="unknown"} 1$' "$work/all.txt" \
  || fail "unknown path not labelled unknown"
grep -q '^harbor_core_http_request_total{method="_OTHER",code="405",operation="getUser"} 1$' "$work/all.txt" \
  || fail "hostile method not folded into _OTHER"
ok "totals by operation, method and code"

curl -fsS "$metrics?comp=core" > "$work/core.txt"
for tool in "${promtools[@]}"; do
  "$tool" check metrics < "$work/core.txt" || fail "$tool rejected ?comp=core"
done
grep -q 'harbor_core_http_inflight_requests' "$work/core.txt" || fail "?comp=core lacks the HTTP families"
code=$(curl -s -o /dev/null -w '%{http_code}' "$metrics?comp=nosuch")
[ "$code" = 404 ] || fail "unknown component answered $code"
ok "?comp= selection"

# Our dashboard, scrape config and alert rules against the running example through a real
# Prometheus: every expression evaluates, the HTTP panels and Harbor's own "Core Metrics" queries
# return data. (The families of the other components are checked by the registry demo's run.)
( for _ in $(seq 1 400); do curl -s -o /dev/null "$app/users/$RANDOM"; curl -s -o /dev/null "$app/nope"; sleep 0.05; done ) &
traffic=$!
panels='^(Request rate|Error ratio|Requests by status|Latency p\d+ by (operation|method) \(summary|Mean latency|In-flight)'
METRICS_URL="$metrics" HARBOR_DASHBOARD=1 REQUIRE_DATA="$panels" \
  bash interop/prometheus_e2e.sh || fail "dashboard/alerts check against Prometheus"
if [ -n "${PROMETHEUS3:-}" ]; then
  METRICS_URL="$metrics" HARBOR_DASHBOARD=1 REQUIRE_DATA="$panels" PROMETHEUS="$PROMETHEUS3" \
    PROMTOOL="$PROMTOOL3" bash interop/prometheus_e2e.sh || fail "dashboard/alerts check against Prometheus 3"
fi
kill "$traffic" 2>/dev/null; wait "$traffic" 2>/dev/null || true
ok "dashboard, alerts and Harbor's core-metric queries evaluated by Prometheus${PROMETHEUS3:+ 2.42 and 3.16}"

# Tracing: the example exports its server spans over OTLP/HTTP to a sink that decodes them with
# the official protobuf definitions; the trace continues the caller's traceparent.
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
mkfifo "$work/sink.in"
python3 interop/otlp_sink.py < "$work/sink.in" > "$work/sink.out" &
sink_pid=$!
exec 9> "$work/sink.in"
for _ in $(seq 1 200); do grep -q READY "$work/sink.out" 2>/dev/null && break; sleep 0.05; done
sink_http=$(sed -n 's/.*http=\([0-9]*\).*/\1/p' "$work/sink.out" | head -1)
[ -n "$sink_http" ] || fail "the OTLP sink did not start"
cat >> "$work/config.yml" <<YAML
trace:
  enabled: true
  service_name: interop-example
  otel: { endpoint: "127.0.0.1:$sink_http", url_path: /v1/traces, compression: true, insecure: true }
YAML
TOWERSCOPE_CONFIG="$work/config.yml" APP_ADDR="127.0.0.1:$app_port" \
  target/debug/examples/axum_basic > "$work/app2.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
  curl -fsS "http://127.0.0.1:$metrics_port/metrics" > /dev/null 2>&1 && break
  sleep 0.05
done
curl -fsS -o /dev/null -H 'traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' \
  -H 'X-Request-ID: interop-trace-1' "$app/users/7"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""
for _ in $(seq 1 200); do grep -q '"transport"' "$work/sink.out" && break; sleep 0.05; done
exec 9>&-; wait "$sink_pid" 2>/dev/null || true
python3 - "$work/sink.out" <<'PY' || fail "the exported span is not what was sent: $(cat "$work/sink.out")"
import json, sys
spans = [s for line in open(sys.argv[1]) if line.startswith("{") for s in json.loads(line)["spans"]]
server = [s for s in spans if s["name"] == "GET /users/{id}"]
assert server, spans
s = server[0]
assert s["trace_id"] == "0af7651916cd43dd8448eb211c80319c", s
assert s["parent_span_id"] == "b7ad6b7169203331", s
assert s["attributes"]["request_id"] == "interop-trace-1", s
assert s["attributes"]["operation"] == "getUser", s
PY
grep -q "spans: 1 exported, 0 lost" "$work/app2.log" || fail "no shutdown report: $(cat "$work/app2.log")"
ok "server span exported over OTLP/HTTP (gzip), parent and request id kept"

echo "interop: $passed passed, 0 failed"
