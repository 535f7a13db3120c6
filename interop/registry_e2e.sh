#!/usr/bin/env bash
# End-to-end test of the example registry with a real client (skopeo): push an image built by
# hand as an OCI layout, inspect it, pull it back, list it through the core API, run GC as a
# job, and check the metrics. Run from the crate root after `cargo build --example
# registry_demo`; REGISTRY_DEMO overrides the binary (default target/debug/examples/registry_demo).
# With PROMETHEUS3 and PROMTOOL3 (Prometheus 3.16, from interop/backends/build.sh), every check
# through promtool or prometheus_e2e.sh runs with Debian's Prometheus 2.42 and again with 3.16.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${REGISTRY_DEMO:-target/debug/examples/registry_demo}
[ -x "$bin" ] || { echo "registry_e2e: no binary at $bin (build it, or set REGISTRY_DEMO)" >&2; exit 1; }
command -v skopeo > /dev/null || { echo "registry_e2e: skopeo is not installed" >&2; exit 1; }

work=$(mktemp -d)
pid=""
prom_pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ -n "$prom_pid" ]; then kill "$prom_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
ok() { passed=$((passed + 1)); echo "registry_e2e: ok: $*"; }
fail() {
  echo "registry_e2e: FAIL: $*" >&2
  [ -f "$work/app.log" ] && { echo "--- registry log:" >&2; tail -n 30 "$work/app.log" >&2; }
  echo "registry_e2e: $passed passed, 1 failed"
  exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
promtools=(promtool)
[ -n "${PROMTOOL3:-}" ] && promtools+=("$PROMTOOL3")
# prometheus_e2e LOG: interop/prometheus_e2e.sh (with the caller's environment) against Debian's
# Prometheus, then against PROMETHEUS3 when set (its output in LOG with -3 before .log); the
# last line of each joined. Fails with the failing run's output at the end of LOG.
prometheus_e2e() {
  local log=$1 summary
  bash interop/prometheus_e2e.sh > "$log" 2>&1 || return 1
  summary="2.42: $(tail -1 "$log" | sed 's/^prometheus_e2e: //')"
  if [ -n "${PROMETHEUS3:-}" ]; then
    PROMETHEUS="$PROMETHEUS3" PROMTOOL="$PROMTOOL3" bash interop/prometheus_e2e.sh > "${log%.log}-3.log" 2>&1 \
      || { cat "${log%.log}-3.log" >> "$log"; return 1; }
    summary="$summary; 3.16: $(tail -1 "${log%.log}-3.log" | sed 's/^prometheus_e2e: //')"
  fi
  echo "$summary" >> "$log"
}

api_port=$(free_port)
metrics_port=$(free_port)

# --- Invalid configurations are refused before anything is bound.
printf 'listen: 127.0.0.1:%s\ntrace:\n  enabled: true\n  jaeger: { agent_host: 127.0.0.1 }\n  otel: { endpoint: "127.0.0.1:4318" }\n' \
  "$api_port" > "$work/bad.yml"
if "$bin" --config "$work/bad.yml" > /dev/null 2> "$work/bad.err"; then
  fail "started with two trace exporters"
fi
grep -q "trace: set exactly one exporter: trace.jaeger or trace.otel, not both" "$work/bad.err" \
  || fail "no SDK validation message: $(cat "$work/bad.err")"
ok "invalid trace config exits non-zero with the SDK's message"

printf 'listen: 127.0.0.1:%s\nupstream: 127.0.0.1:1\n' "$api_port" > "$work/upstream.yml"
if "$bin" --config "$work/upstream.yml" > /dev/null 2> "$work/upstream.err"; then
  fail "started with an upstream that is not a URL"
fi
grep -q "upstream: .* is not an http:// or https:// URL" "$work/upstream.err" \
  || fail "no upstream message: $(cat "$work/upstream.err")"
ok "an upstream that is not an http(s) URL is refused"

# --- Start the registry.
cat > "$work/config.yml" <<YAML
listen: 127.0.0.1:$api_port
database: sqlite://$work/registry.db
storage: $work/blobs
metric:
  port: $metrics_port
YAML
"$bin" --config "$work/config.yml" > "$work/app.log" 2>&1 &
pid=$!
api="http://127.0.0.1:$api_port"
metrics="http://127.0.0.1:$metrics_port/metrics"
for _ in $(seq 1 200); do
  curl -fsS "$api/v2/" > /dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || fail "the registry exited"
  sleep 0.05
done
grep -q "registry (OCI distribution) on http://127.0.0.1:$api_port/v2/" "$work/app.log" \
  || fail "listen address not printed: $(cat "$work/app.log")"
grep -q "metrics on http://127.0.0.1:$metrics_port/metrics" "$work/app.log" || fail "metrics address not printed"
ok "started, addresses printed"

hdr=$(curl -fsS -D - -o "$work/base.json" "$api/v2/")
grep -qi '^docker-distribution-api-version: registry/2.0' <<<"$hdr" || fail "no API version header: $hdr"
[ "$(cat "$work/base.json")" = "{}" ] || fail "base body: $(cat "$work/base.json")"
ok "GET /v2/ answers {} with Docker-Distribution-API-Version"

# --- A tiny OCI image layout, built by hand.
python3 - "$work/layout" <<'PY'
import hashlib, io, json, os, sys, tarfile, gzip
root = sys.argv[1]
blobs = os.path.join(root, "blobs", "sha256")
os.makedirs(blobs)
def put(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return "sha256:" + d, len(data)
tar_buf = io.BytesIO()
with tarfile.open(fileobj=tar_buf, mode="w") as tar:
    content = b"hello from towerscope\n"
    info = tarfile.TarInfo("hello.txt"); info.size = len(content); info.mtime = 0
    tar.addfile(info, io.BytesIO(content))
diff_id = "sha256:" + hashlib.sha256(tar_buf.getvalue()).hexdigest()
layer, layer_size = put(gzip.compress(tar_buf.getvalue(), mtime=0))
config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Cmd": ["/hello.txt"]},
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
}).encode()
config_digest, config_size = put(config)
manifest = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}],
}).encode()
manifest_digest, manifest_size = put(manifest)
with open(os.path.join(root, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
        "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}, f)
with open(os.path.join(root, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
with open(os.path.join(root, "..", "layer.digest"), "w") as f:
    f.write(layer)
with open(os.path.join(root, "..", "manifest.digest"), "w") as f:
    f.write(manifest_digest)
PY
layer_digest=$(cat "$work/layer.digest")
manifest_digest=$(cat "$work/manifest.digest")

skopeo copy --quiet --dest-tls-verify=false "oci:$work/layout:v1" "docker://127.0.0.1:$api_port/library/hello:v1" \
  > "$work/push.log" 2>&1 || fail "skopeo push: $(cat "$work/push.log")"
ok "skopeo copy oci: -> registry"

skopeo inspect --tls-verify=false "docker://127.0.0.1:$api_port/library/hello:v1" > "$work/inspect.json" 2>&1 \
  || fail "skopeo inspect: $(cat "$work/inspect.json")"
python3 - "$work/inspect.json" "$manifest_digest" "$layer_digest" <<'PY' || fail "inspect: $(cat "$work/inspect.json")"
import json, sys
info = json.load(open(sys.argv[1]))
assert info["Digest"] == sys.argv[2], info["Digest"]
assert info["Layers"] == [sys.argv[3]], info["Layers"]
assert info["Os"] == "linux" and info["Architecture"] == "amd64"
PY
ok "skopeo inspect shows the manifest digest and the layer"

skopeo copy --quiet --src-tls-verify=false "docker://127.0.0.1:$api_port/library/hello:v1" "dir:$work/pulled" \
  > "$work/pull.log" 2>&1 || fail "skopeo pull: $(cat "$work/pull.log")"
pulled=$(sha256sum "$work/pulled/${layer_digest#sha256:}" | cut -d' ' -f1)
[ "sha256:$pulled" = "$layer_digest" ] || fail "pulled layer digest sha256:$pulled != $layer_digest"
ok "skopeo copy registry -> dir: the layer's digest is intact"

curl -fsS "$api/v2/_catalog" | grep -q '"library/hello"' || fail "catalog"
curl -fsS "$api/v2/library/hello/tags/list" | grep -q '"v1"' || fail "tags list"
ok "catalog and tags list"

# --- Registry errors and both upload flows.
code=$(curl -s -o "$work/err.json" -w '%{http_code}' "$api/v2/library/hello/manifests/nope")
[ "$code" = 404 ] && grep -q '"MANIFEST_UNKNOWN"' "$work/err.json" || fail "unknown manifest: $code $(cat "$work/err.json")"
code=$(curl -s -o "$work/err.json" -w '%{http_code}' "$api/v2/library/hello/blobs/sha256:$(printf '0%.0s' $(seq 64))")
[ "$code" = 404 ] && grep -q '"BLOB_UNKNOWN"' "$work/err.json" || fail "unknown blob: $code"
code=$(curl -s -o "$work/err.json" -w '%{http_code}' "$api/v2/library/missing/tags/list")
[ "$code" = 404 ] && grep -q '"NAME_UNKNOWN"' "$work/err.json" || fail "unknown name: $code"
ok "MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_UNKNOWN"

orphan1="orphan blob one"
orphan1_digest="sha256:$(printf '%s' "$orphan1" | sha256sum | cut -d' ' -f1)"
code=$(curl -s -o "$work/err.json" -w '%{http_code}' -X POST --data-binary "$orphan1" \
  "$api/v2/library/scratch/blobs/uploads/?digest=sha256:$(printf '1%.0s' $(seq 64))")
[ "$code" = 400 ] && grep -q '"DIGEST_INVALID"' "$work/err.json" || fail "wrong digest accepted: $code"
hdr=$(curl -fsS -D - -o /dev/null -X POST --data-binary "$orphan1" "$api/v2/library/scratch/blobs/uploads/?digest=$orphan1_digest")
grep -q '^HTTP/1.1 201' <<<"$hdr" || fail "monolithic upload: $hdr"
ok "monolithic upload: DIGEST_INVALID on mismatch, 201 on match"

hdr=$(curl -fsS -D - -o /dev/null -X POST "$api/v2/library/scratch/blobs/uploads/")
grep -q '^HTTP/1.1 202' <<<"$hdr" || fail "upload start: $hdr"
grep -qi '^docker-upload-uuid: ' <<<"$hdr" || fail "no upload uuid: $hdr"
location=$(grep -i '^location: ' <<<"$hdr" | cut -d' ' -f2 | tr -d '\r')
hdr=$(curl -fsS -D - -o /dev/null -X PATCH --data-binary "orphan " "$api$location")
grep -qi '^range: 0-6' <<<"$hdr" || fail "PATCH range: $hdr"
location=$(grep -i '^location: ' <<<"$hdr" | cut -d' ' -f2 | tr -d '\r')
orphan2_digest="sha256:$(printf 'orphan blob two' | sha256sum | cut -d' ' -f1)"
hdr=$(curl -fsS -D - -o /dev/null -X PUT --data-binary "blob two" "$api$location?digest=$orphan2_digest")
grep -q '^HTTP/1.1 201' <<<"$hdr" || fail "upload finish: $hdr"
curl -fsS "$api/v2/library/scratch/blobs/$orphan2_digest" | grep -qx 'orphan blob two' || fail "chunked blob content"
hdr=$(curl -fsS -D "$work/range.hdr" -o "$work/range.body" -H 'Range: bytes=7-10' "$api/v2/library/scratch/blobs/$orphan2_digest")
grep -q '^HTTP/1.1 206' "$work/range.hdr" && grep -qi '^content-range: bytes 7-10/15' "$work/range.hdr" \
  && [ "$(cat "$work/range.body")" = "blob" ] || fail "range request: $(cat "$work/range.hdr")"
ok "chunked upload: 202 + Location + Range, PUT ?digest= 201, content intact, Range GET 206"

# --- Core API.
curl -fsS "$api/api/v2.0/health" | python3 -c 'import json,sys; h=json.load(sys.stdin); assert h["status"]=="healthy" and h["components"], h' \
  || fail "health"
curl -fsS "$api/api/v2.0/systeminfo" | grep -q harbor_version || fail "systeminfo"
curl -fsS "$api/api/v2.0/projects/library/repositories" > "$work/repos.json"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert [x["name"] for x in r]==["library/hello"] and r[0]["artifact_count"]==1, r' \
  "$work/repos.json" || fail "repositories: $(cat "$work/repos.json")"
curl -fsS "$api/api/v2.0/projects/library/repositories/hello/artifacts" > "$work/artifacts.json"
python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); assert a[0]["digest"]==sys.argv[2] and [t["name"] for t in a[0]["tags"]]==["v1"], a' \
  "$work/artifacts.json" "$manifest_digest" || fail "artifacts: $(cat "$work/artifacts.json")"
curl -fsS "$api/api/v2.0/projects/library/repositories/hello/artifacts/v1/tags" | grep -q '"name":"v1"' || fail "tags of artifact"
ok "health, systeminfo, repositories and artifacts of library"

code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  -d '{"project_name":"demo","metadata":{"public":"true"}}' "$api/api/v2.0/projects")
[ "$code" = 201 ] || fail "create project: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{"project_name":"demo"}' "$api/api/v2.0/projects")
[ "$code" = 409 ] || fail "duplicate project: $code"
curl -fsS "$api/api/v2.0/projects/demo" | grep -q '"public":"true"' || fail "get project"
curl -fsS "$api/api/v2.0/projects" | grep -q '"name":"demo"' || fail "list projects"
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$api/api/v2.0/projects/demo")
[ "$code" = 200 ] || fail "delete project: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$api/api/v2.0/projects/demo")
[ "$code" = 404 ] || fail "deleted project still there: $code"
ok "projects: create (201, 409), get, list, delete"

# Members: the creator (admin, projectAdmin) and the users added (Harbor's createProjectMember).
curl -fsS -o /dev/null -X POST -d '{"project_name":"team"}' "$api/api/v2.0/projects" || fail "create project team"
hdr=$(curl -fsS -D - -o /dev/null -X POST -d '{"role_id":2,"member_user":{"username":"alice"}}' \
  "$api/api/v2.0/projects/team/members") || fail "add member"
grep -qiE '^location: /api/v2.0/projects/[0-9]+/members/[0-9]+' <<<"$hdr" || fail "add member: $hdr"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{"role_id":2,"member_user":{"username":"alice"}}' \
  "$api/api/v2.0/projects/team/members")
[ "$code" = 409 ] || fail "duplicate member: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{"role_id":9,"member_user":{"username":"bob"}}' \
  "$api/api/v2.0/projects/team/members")
[ "$code" = 400 ] || fail "member with an unknown role: $code"
curl -fsS -o /dev/null -X POST -d '{"role_id":3,"member_user":{"username":"bob"}}' "$api/api/v2.0/projects/team/members" \
  || fail "add bob"
members=$(curl -fsS "$api/api/v2.0/projects/team/members")
python3 -c 'import json,sys; m=json.loads(sys.argv[1]); assert [(x["entity_name"], x["role_name"]) for x in m] == [("admin","projectAdmin"),("alice","developer"),("bob","guest")], m' \
  "$members" || fail "members: $members"
bob=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])[2]["id"])' "$members")
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$api/api/v2.0/projects/team/members/$bob")
[ "$code" = 200 ] || fail "delete member: $code"
ok "project members: the creator is projectAdmin; add (201 + Location, 409, 400), list, delete"

# Operations of the document that the demo does not implement are answered, and labelled.
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -d '{}' "$api/api/v2.0/projects/library")
[ "$code" = 405 ] || fail "unimplemented method: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$api/api/v2.0/repositories")
[ "$code" = 404 ] || fail "unknown core path: $code"

# --- Garbage collection as a job.
hdr=$(curl -fsS -D - -o /dev/null -X POST -H 'Content-Type: application/json' \
  -d '{"schedule":{"type":"Manual"}}' "$api/api/v2.0/system/gc/schedule")
grep -q '^HTTP/1.1 201' <<<"$hdr" || fail "GC schedule: $hdr"
status=""
for _ in $(seq 1 100); do
  status=$(curl -fsS "$api/api/v2.0/system/gc" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["job_status"])')
  [ "$status" = Success ] && break
  sleep 0.1
done
[ "$status" = Success ] || fail "GC status: $status"
curl -fsS "$api/api/v2.0/system/gc" | grep -q '"deleted_blobs":2' || fail "GC did not delete the two orphans: $(curl -s "$api/api/v2.0/system/gc")"
code=$(curl -s -o /dev/null -w '%{http_code}' "$api/v2/library/scratch/blobs/$orphan1_digest")
[ "$code" = 404 ] || fail "orphan blob still served: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$api/v2/library/hello/blobs/$layer_digest")
[ "$code" = 200 ] || fail "referenced layer collected: $code"
ok "GC job: 201, Success in /system/gc, orphans deleted, referenced layer kept"

# A periodic schedule (Harbor's Hourly: cron 0 0 * * * *), replaced, then removed.
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{"schedule":{"type":"Hourly"}}' "$api/api/v2.0/system/gc/schedule")
[ "$code" = 201 ] || fail "GC schedule Hourly: $code"
curl -fsS "$api/api/v2.0/system/gc/schedule" | python3 -c 'import json,sys,datetime
s = json.load(sys.stdin)["schedule"]
assert s["type"] == "Hourly" and s["cron"] == "0 0 * * * *", s
t = datetime.datetime.strptime(s["next_scheduled_time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
now = datetime.datetime.now(datetime.timezone.utc)
assert t.minute == 0 and t.second == 0 and datetime.timedelta(0) < t - now <= datetime.timedelta(hours=1), (t, now)' \
  || fail "GC schedule: $(curl -s "$api/api/v2.0/system/gc/schedule")"
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -d '{"schedule":{"type":"Weekly"}}' "$api/api/v2.0/system/gc/schedule")
[ "$code" = 200 ] || fail "GC schedule update to Weekly: $code"
curl -fsS "$api/api/v2.0/system/gc/schedule" | grep -q '"type":"Weekly"' || fail "GC schedule not Weekly"
curl -fsS "$metrics?comp=jobservice" | grep -qE '^task_scheduled_total 1$' || fail "one schedule: $(curl -s "$metrics?comp=jobservice")"
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -d '{"schedule":{"type":"Custom","cron":"0 0 5 * * *"}}' "$api/api/v2.0/system/gc/schedule")
[ "$code" = 501 ] || fail "GC cron schedule: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -d '{"schedule":{"type":"None"}}' "$api/api/v2.0/system/gc/schedule")
[ "$code" = 200 ] || fail "GC schedule None: $code"
curl -fsS "$api/api/v2.0/system/gc/schedule" | grep -q '"type":"None"' || fail "GC schedule not removed"
curl -fsS "$metrics?comp=jobservice" > "$work/jobservice.txt"
has_in() { grep -qE "$2" "$1" || fail "metric missing in $(basename "$1"): $2"; }
has_in "$work/jobservice.txt" '^task_scheduled_total 0$'
has_in "$work/jobservice.txt" '^task_queue_size\{type="GARBAGE_COLLECTION"\} 0$'
has_in "$work/jobservice.txt" '^task_queue_latency\{type="GARBAGE_COLLECTION"\} 0$'
has_in "$work/jobservice.txt" '^task_concurrency\{type="GARBAGE_COLLECTION",pool="gc"\} 0$'
ok "GC schedule: Hourly (next run on the hour), PUT Weekly, Custom 501, None; task_scheduled_total 1 then 0; queue gauges at rest"

# --- Metrics.
curl -fsS "$metrics" > "$work/metrics.txt"
has() { grep -qE "$1" "$work/metrics.txt" || fail "metric missing: $1"; }
has '^http_request_total\{method="GET",code="200",operation="listRepositories"\} 1$'
has '^http_request_total\{method="GET",code="200",operation="getHealth"\} 1$'
has '^http_request_total\{method="POST",code="201",operation="createGCSchedule"\} 2$'
has '^http_request_total\{method="PUT",code="405",operation="updateProject"\} 1$'
has '^http_request_total\{method="GET",code="404",operation="unknown"\} 1$'
has '^http_request_total\{method="PUT",code="201",operation="manifest"\} '
has '^http_request_total\{method="PATCH",code="202",operation="blob_upload_chunk"\} '
has '^task_total\{type="GARBAGE_COLLECTION",status="success"\} 1$'
has '^db_transaction_total\{operation="putManifest",outcome="commit"\} '
has '^build_info\{version="[^"]+",app="registry_demo"\} 1$'
has '^process_open_fds '
ok "metrics: operationIds from the OpenAPI document, registry handlers, task, db, build info"

# --- Distribution's metric names under ?comp=registry, Harbor-exporter gauges from the
# database at scrape time under ?comp=exporter, and promtool on the whole output.
curl -fsS "$metrics?comp=registry" > "$work/registry.txt"
has_in "$work/registry.txt" '^# HELP registry_http_requests_total .+'
has_in "$work/registry.txt" '^registry_http_requests_total\{code="201",handler="manifest",method="PUT"\} [1-9]'
has_in "$work/registry.txt" '^registry_http_requests_total\{code="200",handler="manifest",method="GET"\} [1-9]'
has_in "$work/registry.txt" '^registry_http_requests_total\{code="202",handler="blob_upload_chunk",method="PATCH"\} [1-9]'
has_in "$work/registry.txt" '^registry_http_requests_total\{code="400",handler="blob_upload",method="POST"\} 1$'
has_in "$work/registry.txt" '^registry_http_requests_total\{code="404",handler="manifest",method="GET"\} [1-9]'
has_in "$work/registry.txt" '^registry_http_requests_total\{code="206",handler="blob",method="GET"\} [1-9]'
has_in "$work/registry.txt" '^registry_http_request_duration_seconds_count\{handler="manifest",method="PUT"\} [1-9]'
has_in "$work/registry.txt" '^# TYPE registry_http_request_duration_seconds histogram$'
has_in "$work/registry.txt" '^# TYPE registry_http_request_size_bytes histogram$'
has_in "$work/registry.txt" '^# TYPE registry_http_response_size_bytes histogram$'
has_in "$work/registry.txt" '^registry_http_request_duration_seconds_bucket\{handler="manifest",method="PUT",le="10"\} [1-9]'
has_in "$work/registry.txt" '^registry_http_in_flight_requests\{handler="blob"\} 0$'
has_in "$work/registry.txt" '^registry_http_request_size_bytes_sum\{handler="manifest"\} [1-9]'
has_in "$work/registry.txt" '^registry_http_response_size_bytes_sum\{handler="blob"\} [1-9]'
! grep -qE '^(http_request_total|harbor_)' "$work/registry.txt" || fail "?comp=registry has other families"
ok "?comp=registry: registry_http_requests_total{code,handler,method}, duration, in-flight, sizes"

curl -fsS "$metrics?comp=exporter" > "$work/exporter.txt"
has_in "$work/exporter.txt" '^harbor_project_total\{public="true"\} 1$'
has_in "$work/exporter.txt" '^harbor_project_repo_total\{project_name="library",public="true"\} 1$'
has_in "$work/exporter.txt" '^harbor_project_artifact_total\{project_name="library"\} 1$'
has_in "$work/exporter.txt" '^harbor_artifact_pulled\{name="library/hello"\} [1-9]'
has_in "$work/exporter.txt" '^harbor_project_member_total\{project_name="team"\} 2$'
has_in "$work/exporter.txt" '^harbor_project_member_total\{project_name="library"\} 1$'
has_in "$work/exporter.txt" '^harbor_project_quota_usage_byte\{project_name="team"\} 0$'
for component in core database jobservice registry; do
  has_in "$work/exporter.txt" "^harbor_up\\{component=\"$component\"\\} 1\$"
done
curl -fsS -o /dev/null "$api/v2/library/hello/manifests/v1" || fail "manifest GET"
sleep 0.2
pulls() { curl -fsS "$metrics?comp=exporter" | sed -n 's/^harbor_artifact_pulled{name="library\/hello"} //p'; }
before=$(grep -E '^harbor_artifact_pulled\{name="library/hello"\}' "$work/exporter.txt" | cut -d' ' -f2)
[ "$(pulls)" = $((before + 1)) ] || fail "pull count not refreshed at scrape time: $before -> $(pulls)"
# (After the pull count: reading the manifests counts pulls.) The quota usage is the size of the distinct blobs library's manifests refer to.
usage=$(sed -n 's/^harbor_project_quota_usage_byte{project_name="library"} //p' "$work/exporter.txt")
want=$(python3 - "$api" <<'PY'
import json, sys, urllib.request
api = sys.argv[1]
def get(url, accept=None):
    req = urllib.request.Request(api + url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req) as r:
        return r.read()
sizes = {}
for repo in json.loads(get("/v2/_catalog"))["repositories"]:
    if not repo.startswith("library/"):
        continue
    for tag in json.loads(get(f"/v2/{repo}/tags/list")).get("tags") or []:
        m = json.loads(get(f"/v2/{repo}/manifests/{tag}", "application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json"))
        for d in [m.get("config")] + m.get("layers", []):
            if d:
                sizes[d["digest"]] = d["size"]
print(sum(sizes.values()))
PY
)
[ -n "$usage" ] && [ "$usage" = "$want" ] || fail "quota usage of library: $usage, the tagged manifests' distinct blobs: $want"
ok "?comp=exporter: project, repository, artifact, member, quota usage ($usage B), pull and up gauges computed at scrape time"

curl -fsS "$metrics" > "$work/all.txt"
grep -q '^harbor_project_total' "$work/all.txt" && grep -q '^registry_http_requests_total' "$work/all.txt" \
  || fail "unfiltered /metrics lacks the exporter or registry families"
for tool in "${promtools[@]}"; do
  "$tool" check metrics < "$work/all.txt" > "$work/promtool.log" 2>&1 || true
  # Harbor's exporter names its gauges *_total; promtool's lint about that is expected, nothing else.
  if grep -vE '^(harbor_(project|project_repo|project_artifact|project_member)|task_scheduled)_total non-counter metrics should not have "_total" suffix$' \
    "$work/promtool.log" | grep -q .; then
    fail "$tool check metrics: $(cat "$work/promtool.log")"
  fi
done
ok "promtool check metrics (${#promtools[@]} versions) on the whole /metrics: only the lint on Harbor's *_total gauge names"

# The same families in OpenMetrics (what Prometheus asks for first), parsed by the strict
# parser of the Python client library (prometheus_client), not by us.
curl -fsS -H 'Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5' \
  -D "$work/om.head" "$metrics" > "$work/om.txt"
grep -qi '^content-type: application/openmetrics-text; version=1.0.0' "$work/om.head" || fail "no OpenMetrics: $(cat "$work/om.head")"
python3 - "$work/om.txt" "$work/all.txt" <<'PY' || fail "OpenMetrics parse"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as text_0_0_4
om = {s.name: s for f in text_string_to_metric_families(open(sys.argv[1]).read()) for s in f.samples}
old = {s.name: s for f in text_0_0_4(open(sys.argv[2]).read()) for s in f.samples}
# Every series name of the 0.0.4 text is in the OpenMetrics text (scraped a moment later).
missing = sorted(set(old) - set(om))
assert not missing, missing
assert "http_request_total" in om and "harbor_project_total" in om, sorted(om)[:20]
PY
ok "OpenMetrics negotiated (Accept), parsed by prometheus_client's OpenMetrics parser; same series names as the 0.0.4 text"

# --- Distribution-spec behaviours the clients use (after the exact counts above).
# A chunk that does not start where the upload ends is refused with the upload's Range.
hdr=$(curl -sS -D - -o /dev/null -X POST "$api/v2/library/scratch/blobs/uploads/")
location=$(grep -i '^location: ' <<<"$hdr" | cut -d' ' -f2 | tr -d '\r')
curl -fsS -o /dev/null -X PATCH -H 'Content-Range: 0-3' --data-binary "abcd" "$api$location" || fail "first chunk"
hdr=$(curl -sS -D - -o /dev/null -X PATCH -H 'Content-Range: 10-13' --data-binary "efgh" "$api$location")
grep -q '^HTTP/1.1 416' <<<"$hdr" && grep -qi '^range: 0-3' <<<"$hdr" || fail "out-of-order chunk: $hdr"
hdr=$(curl -sS -D - -o /dev/null -X PATCH -H 'Content-Range: 4-9' --data-binary "efgh" "$api$location")
grep -q '^HTTP/1.1 416' <<<"$hdr" && grep -qi '^range: 0-3' <<<"$hdr" || fail "short chunk kept: $hdr"
curl -fsS -o /dev/null -X DELETE "$api$location" || fail "cancel upload"
ok "chunks out of order or shorter than their Content-Range: 416 with the upload's Range, nothing kept"

# OCI 1.1 referrers: an artifact whose subject is the image, listed (and filtered) by digest.
python3 - "$work" "$manifest_digest" <<'PY'
import hashlib, json, sys
work, subject = sys.argv[1:3]
empty = b"{}"
manifest = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "artifactType": "application/vnd.example.signature",
    "config": {"mediaType": "application/vnd.oci.empty.v1+json",
               "digest": "sha256:" + hashlib.sha256(empty).hexdigest(), "size": 2},
    "layers": [{"mediaType": "application/vnd.oci.empty.v1+json",
                "digest": "sha256:" + hashlib.sha256(empty).hexdigest(), "size": 2}],
    "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject,
                "size": 1},
    "annotations": {"org.example.signed-by": "e2e"},
}).encode()
open(f"{work}/referrer.json", "wb").write(manifest)
open(f"{work}/referrer.digest", "w").write("sha256:" + hashlib.sha256(manifest).hexdigest())
PY
empty_digest="sha256:$(printf '{}' | sha256sum | cut -d' ' -f1)"
curl -fsS -o /dev/null -X POST --data-binary '{}' "$api/v2/library/hello/blobs/uploads/?digest=$empty_digest" \
  || fail "empty config upload"
hdr=$(curl -fsS -D - -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
  --data-binary @"$work/referrer.json" "$api/v2/library/hello/manifests/$(cat "$work/referrer.digest")")
grep -qi "^oci-subject: $manifest_digest" <<<"$hdr" || fail "no OCI-Subject: $hdr"
curl -fsS -D "$work/ref.hdr" -o "$work/ref.json" "$api/v2/library/hello/referrers/$manifest_digest"
grep -qi '^content-type: application/vnd.oci.image.index.v1+json' "$work/ref.hdr" || fail "referrers type: $(cat "$work/ref.hdr")"
python3 - "$work/ref.json" "$(cat "$work/referrer.digest")" <<'PY' || fail "referrers: $(cat "$work/ref.json")"
import json, sys
index = json.load(open(sys.argv[1]))
assert index["schemaVersion"] == 2 and index["mediaType"] == "application/vnd.oci.image.index.v1+json"
[entry] = index["manifests"]
assert entry["digest"] == sys.argv[2] and entry["artifactType"] == "application/vnd.example.signature", entry
assert entry["annotations"] == {"org.example.signed-by": "e2e"} and entry["size"] > 0, entry
PY
curl -fsS -D "$work/ref.hdr" -o "$work/ref.json" "$api/v2/library/hello/referrers/$manifest_digest?artifactType=application/x-other"
grep -qi '^oci-filters-applied: artifactType' "$work/ref.hdr" && grep -q '"manifests":\[\]' "$work/ref.json" \
  || fail "filtered referrers: $(cat "$work/ref.hdr" "$work/ref.json")"
ok "referrers: PUT with subject answers OCI-Subject; GET /referrers/<digest> lists it with artifactType and annotations; ?artifactType= filters"

# Tags list pagination: n and last, with a Link to the next page.
for t in a b c; do
  curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary @"$work/referrer.json" "$api/v2/library/paged/manifests/$t" || fail "tag $t"
done
hdr=$(curl -fsS -D - -o "$work/tags.json" "$api/v2/library/paged/tags/list?n=2")
grep -qi '^link: </v2/library/paged/tags/list?last=b&n=2>; rel="next"' <<<"$hdr" || fail "tags Link: $hdr"
grep -q '"tags":\["a","b"\]' "$work/tags.json" || fail "tags page 1: $(cat "$work/tags.json")"
curl -fsS "$api/v2/library/paged/tags/list?n=2&last=b" | grep -q '"tags":\["c"\]' || fail "tags page 2"
ok "tags/list?n=2: a Link to ?last=b&n=2, then the last page"

# --- `--traffic`: a fresh instance generating its own traffic for a few seconds.
traffic_api_port=$(free_port)
traffic_metrics_port=$(free_port)
printf 'listen: 127.0.0.1:%s\nmetric: { port: %s }\n' "$traffic_api_port" "$traffic_metrics_port" > "$work/traffic.yml"
# Bounded by `timeout`: the EXIT trap only knows the main instance.
timeout 60 "$bin" --config "$work/traffic.yml" --traffic --traffic-seconds 5 > "$work/traffic.log" 2>&1 &
traffic_pid=$!
for _ in $(seq 1 300); do
  grep -q '^traffic: done' "$work/traffic.log" && break
  kill -0 "$traffic_pid" 2>/dev/null || fail "the traffic instance exited: $(tail -5 "$work/traffic.log")"
  sleep 0.1
done
summary=$(grep '^traffic: done' "$work/traffic.log") || fail "traffic did not finish: $(grep '^traffic' "$work/traffic.log")"
grep -q ' 5xx 0), 0 transport errors$' <<<"$summary" || fail "traffic: $summary"
traffic_metrics="http://127.0.0.1:$traffic_metrics_port/metrics"
curl -fsS "$traffic_metrics" > "$work/traffic-metrics.txt"
for re in '^registry_http_requests_total\{code="201",handler="manifest",method="PUT"\} [1-9]' \
  '^registry_http_requests_total\{code="200",handler="blob",method="GET"\} [1-9]' \
  '^registry_http_requests_total\{code="404",handler="manifest",method="GET"\} [1-9]' \
  '^registry_http_requests_total\{code="400",handler="blob_upload",method="POST"\} [1-9]' \
  '^http_request_total\{method="GET",code="200",operation="listProjects"\} [1-9]' \
  '^http_request_total\{method="POST",code="201",operation="createGCSchedule"\} 1$' \
  '^harbor_project_repo_total\{project_name="traffic",public="false"\} [1-9]' \
  '^harbor_artifact_pulled\{name="traffic/web"\} [1-9]'; do
  has_in "$work/traffic-metrics.txt" "$re"
done
! grep -qE '^(registry_http_requests_total|http_request_total)\{.*code="5' "$work/traffic-metrics.txt" \
  || fail "5xx under traffic: $(grep -E 'code="5' "$work/traffic-metrics.txt")"
kill -TERM "$traffic_pid"
wait "$traffic_pid" || fail "traffic instance: non-zero exit after SIGTERM"
ok "--traffic --traffic-seconds 5: $summary"

# --- Our dashboard and alert rules through a real Prometheus scraping the registry: every
# expression evaluates; the panels of the families the demo has (no proxy, no tracing here)
# return data.
METRICS_URL="$metrics" METRIC_PREFIX="" SETTLE_SECONDS=4 \
  REQUIRE_DATA='^(Request rate|Requests by status|Latency p\d+ by (operation|method) \(summary|Mean latency|In-flight|Transaction rate|Transaction (mean )?latency|Job rate|Job (mean )?processing time|CPU|Resident memory|Open fds|Uptime|Build info|Tokio (workers|alive tasks|global queue))' \
  prometheus_e2e "$work/prometheus.log" \
  || fail "dashboard against the registry: $(tail -30 "$work/prometheus.log")"
ok "dashboard and alerts evaluated by Prometheus against the registry: $(tail -1 "$work/prometheus.log")"

# --- Graceful shutdown.
kill -TERM "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$pid" 2>/dev/null; then fail "still running after SIGTERM"; fi
wait "$pid" || fail "non-zero exit after SIGTERM"
pid=""
ok "SIGTERM stops it with status 0"

# --- `openapi:` labels core requests from another document, implemented or not.
cat > "$work/other-spec.yaml" <<'YAML'
swagger: "2.0"
basePath: /api/v2.0
paths:
  /health:
    get: { operationId: otherHealth }
  /projects/{project_name_or_id}/summary:
    get: { operationId: getProjectSummary }
YAML
api_port=$(free_port)
metrics_port=$(free_port)
cat > "$work/config2.yml" <<YAML
listen: 127.0.0.1:$api_port
openapi: $work/other-spec.yaml
metric: { port: $metrics_port, namespace: harbor, subsystem: core }
YAML
"$bin" --config "$work/config2.yml" > "$work/app.log" 2>&1 &
pid=$!
api="http://127.0.0.1:$api_port"
metrics="http://127.0.0.1:$metrics_port/metrics"
for _ in $(seq 1 200); do
  curl -fsS "$api/v2/" > /dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || fail "the second registry exited"
  sleep 0.05
done
curl -fsS -o /dev/null "$api/api/v2.0/health" || fail "health (second instance)"
code=$(curl -s -o /dev/null -w '%{http_code}' "$api/api/v2.0/projects/library/summary")
[ "$code" = 404 ] || fail "unimplemented getProjectSummary: $code"
curl -fsS "$metrics" > "$work/metrics.txt"
has '^harbor_core_http_request_total\{method="GET",code="200",operation="otherHealth"\} 1$'
has '^harbor_core_http_request_total\{method="GET",code="404",operation="getProjectSummary"\} 1$'
has '^harbor_core_http_request_total\{method="GET",code="200",operation="base"\} '
kill -INT "$pid"
wait "$pid" || fail "non-zero exit after SIGINT"
pid=""
ok "openapi: another document labels core requests (implemented or not); SIGINT stops it"

# --- Tracing: spans exported over OTLP/HTTP to a sink that decodes them with the official
# protobuf definitions, flushed at shutdown; the GC job is a trace of its own that carries the
# scheduling request's id (its span link is not decoded by the sink).
if python3 -c 'import grpc, opentelemetry.proto' 2>/dev/null; then
  mkfifo "$work/sink.in"
  python3 interop/otlp_sink.py < "$work/sink.in" > "$work/sink.out" &
  sink_pid=$!
  exec 9> "$work/sink.in"
  for _ in $(seq 1 200); do grep -q READY "$work/sink.out" 2>/dev/null && break; sleep 0.05; done
  sink_http=$(sed -n 's/.*http=\([0-9]*\).*/\1/p' "$work/sink.out" | head -1)
  [ -n "$sink_http" ] || fail "the OTLP sink did not start"
  api_port=$(free_port)
  metrics_port=$(free_port)
  cat > "$work/config3.yml" <<YAML
listen: 127.0.0.1:$api_port
metric: { port: $metrics_port, buckets: [0.005, 0.05, 0.5, 5] }
trace:
  enabled: true
  service_name: registry-demo
  otel: { endpoint: "127.0.0.1:$sink_http", url_path: /v1/traces, insecure: true }
YAML
  "$bin" --config "$work/config3.yml" > "$work/app.log" 2>&1 &
  pid=$!
  api="http://127.0.0.1:$api_port"
  for _ in $(seq 1 200); do
    curl -fsS "$api/v2/" > /dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || fail "the traced registry exited"
    sleep 0.05
  done
  curl -fsS -o /dev/null -X POST -H 'traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' \
    -H 'X-Request-ID: e2e-gc-1' -d '{"schedule":{"type":"Manual"}}' "$api/api/v2.0/system/gc/schedule" \
    || fail "GC schedule (traced)"
  for _ in $(seq 1 100); do
    curl -fsS "$api/api/v2.0/system/gc" | grep -q '"job_status":"Success"' && break
    sleep 0.1
  done
  curl -fsS -H 'Accept: application/openmetrics-text' "http://127.0.0.1:$metrics_port/metrics" > "$work/om-traced.txt"
  python3 - "$work/om-traced.txt" <<'PY' || fail "OpenMetrics exemplars: $(grep ' # {' "$work/om-traced.txt" | head -3)"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = [s for f in text_string_to_metric_families(open(sys.argv[1]).read()) for s in f.samples]
with_exemplar = [s for s in samples if s.exemplar]
assert any(s.name == "http_request_total" for s in with_exemplar), with_exemplar
assert any(s.name == "http_request_duration_seconds_bucket" for s in with_exemplar), with_exemplar
for s in with_exemplar:
    assert len(s.exemplar.labels["trace_id"]) == 32 and len(s.exemplar.labels["span_id"]) == 16, s
PY
  # Exemplars through a real Prometheus (exemplar storage on, OpenMetrics negotiated): the
  # trace ids it stores for the request counter and the duration buckets must be trace ids of
  # server spans the sink decoded (checked below, after the flush at shutdown).
  prom_port=$(free_port)
  cat > "$work/prom-exemplars.yml" <<YAML
global: { scrape_interval: 1s, scrape_timeout: 1s }
scrape_configs:
  - job_name: registry-demo
    static_configs: [{ targets: ["127.0.0.1:$metrics_port"] }]
YAML
  prometheus --config.file="$work/prom-exemplars.yml" --storage.tsdb.path="$work/prom-exemplars" \
    --web.listen-address="127.0.0.1:$prom_port" --enable-feature=exemplar-storage --log.level=warn \
    > "$work/prom-exemplars.log" 2>&1 &
  prom_pid=$!
  for i in $(seq 1 40); do
    curl -fsS -o /dev/null "$api/api/v2.0/health" || true
    curl -fsS -o /dev/null "$api/v2/library/hello/tags/list" 2>/dev/null || true
    sleep 0.1
  done
  sleep 2
  python3 - "http://127.0.0.1:$prom_port" "$work/exemplars.json" <<'PY' || fail "exemplars in Prometheus: $(tail -5 "$work/prom-exemplars.log")"
import json, sys, time, urllib.parse, urllib.request
prom, out = sys.argv[1], sys.argv[2]
def get(path, **params):
    with urllib.request.urlopen(prom + path + "?" + urllib.parse.urlencode(params), timeout=5) as r:
        return json.load(r)["data"]
targets = get("/api/v1/targets")["activeTargets"]
assert targets and all(t["health"] == "up" for t in targets), targets
found = {}
now = time.time()
for query in ("http_request_total", "http_request_duration_seconds_bucket"):
    data = get("/api/v1/query_exemplars", query=query, start=f"{now - 300:.3f}", end=f"{now + 60:.3f}")
    found[query] = sorted({e["labels"]["trace_id"] for series in data for e in series["exemplars"]})
    assert found[query], f"no exemplars stored for {query}"
json.dump(found, open(out, "w"))
PY
  kill "$prom_pid"; wait "$prom_pid" 2>/dev/null || true; prom_pid=""
  kill -TERM "$pid"
  wait "$pid" || fail "non-zero exit after SIGTERM (traced)"
  pid=""
  for _ in $(seq 1 200); do grep -q '"transport"' "$work/sink.out" && break; sleep 0.05; done
  exec 9>&-
  wait "$sink_pid" 2>/dev/null || true
  python3 - "$work/sink.out" "$work/exemplars.json" <<'PY' 2> "$work/exemplars.txt" || fail "spans: $(cat "$work/exemplars.txt") $(cat "$work/sink.out" | head -c 2000)"
import json, sys
spans = [s for line in open(sys.argv[1]) if line.startswith("{") for s in json.loads(line)["spans"]]
by_name = {}
for s in spans:
    by_name.setdefault(s["name"], []).append(s)
server = by_name["POST /api/v2.0/system/gc/schedule"][0]
assert server["trace_id"] == "0af7651916cd43dd8448eb211c80319c", server
assert server["attributes"]["operation"] == "createGCSchedule", server
tx = by_name["tx-createGCSchedule"][0]
assert tx["trace_id"] == server["trace_id"] and tx["parent_span_id"] == server["span_id"], tx
job = by_name["run-job"][0]
assert job["trace_id"] != server["trace_id"], job
assert job["attributes"]["request_id"] == "e2e-gc-1", job
assert job["attributes"]["job.name"] == "GARBAGE_COLLECTION", job
assert any(s["name"] == "tx-updateGCStatus" and s["trace_id"] == job["trace_id"] for s in spans), spans
# Every exemplar Prometheus stored names a trace whose server span the sink decoded.
exemplars = json.load(open(sys.argv[2]))
server_traces = {s["trace_id"] for s in spans if s.get("kind") == 2}
for query, traces in exemplars.items():
    missing = set(traces) - server_traces
    assert not missing, f"{query}: exemplar trace ids without a decoded server span: {missing}"
print(f"exemplars: {len(exemplars['http_request_total'])} trace ids on the counter, {len(exemplars['http_request_duration_seconds_bucket'])} on the buckets, all decoded", file=sys.stderr)
PY
  grep -q "spans: .* exported, 0 lost" "$work/app.log" || fail "no shutdown report: $(tail -n 3 "$work/app.log")"
  ok "spans flushed at shutdown over OTLP: request -> tx span, run-job with the request's id"
  ok "exemplars: Prometheus (exemplar storage, OpenMetrics scrape) stores trace ids of decoded server spans: $(tail -1 "$work/exemplars.txt")"
else
  echo "registry_e2e: skipped: tracing check (python grpcio / opentelemetry-proto not installed)"
fi

# --- metric.naming: otel: the OpenTelemetry HTTP semantic conventions' families, scraped by a
# real Prometheus (which negotiates OpenMetrics): `http_route` is the OpenAPI operation's path
# template or the Distribution endpoint's, never a raw path; a histogram with the advised
# buckets although the registry keeps Harbor's summaries otherwise.
api_port=$(free_port)
metrics_port=$(free_port)
cat > "$work/config-otel.yml" <<YAML
listen: 127.0.0.1:$api_port
metric: { port: $metrics_port, naming: otel }
YAML
"$bin" --config "$work/config-otel.yml" > "$work/app-otel.log" 2>&1 &
pid=$!
api="http://127.0.0.1:$api_port"
for _ in $(seq 1 200); do
  curl -fsS "$api/v2/" > /dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || fail "the registry (naming: otel) exited: $(tail -3 "$work/app-otel.log")"
  sleep 0.05
done
prom_port=$(free_port)
cat > "$work/prom-otel.yml" <<YAML
global: { scrape_interval: 1s, scrape_timeout: 1s }
scrape_configs:
  - job_name: registry-demo-otel
    static_configs: [{ targets: ["127.0.0.1:$metrics_port"] }]
YAML
prometheus --config.file="$work/prom-otel.yml" --storage.tsdb.path="$work/prom-otel" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn > "$work/prom-otel.log" 2>&1 &
prom_pid=$!
for _ in $(seq 1 30); do
  curl -fsS -o /dev/null "$api/v2/" || true
  curl -fsS -o /dev/null "$api/api/v2.0/health" || true
  curl -sS -o /dev/null "$api/v2/library/hello/tags/list" || true
  curl -sS -o /dev/null "$api/no/such/path/$RANDOM" || true
  curl -sS -o /dev/null -X BREW "$api/v2/" || true
  sleep 0.1
done
sleep 2
python3 - "http://127.0.0.1:$prom_port" <<'PY' || fail "naming: otel through Prometheus: $(tail -5 "$work/prom-otel.log")"
import json, sys, time, urllib.parse, urllib.request
prom = sys.argv[1]
def query(q):
    url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]
for _ in range(50):
    targets = json.load(urllib.request.urlopen(prom + "/api/v1/targets", timeout=5))["data"]["activeTargets"]
    if targets and all(t["health"] == "up" for t in targets) and query("http_server_request_duration_seconds_count"):
        break
    time.sleep(0.2)
else:
    raise SystemExit(f"no scrape: {targets}")
series = query("http_server_request_duration_seconds_count")
routes = {s["metric"].get("http_route") for s in series}
for route in ("/v2/", "/health", "/v2/{name}/tags/list"):
    assert route in routes, (route, routes)
assert not any(r and ("library" in r or "no/such" in r) for r in routes), routes
methods = {s["metric"]["http_request_method"] for s in series}
assert "_OTHER" in methods and "BREW" not in methods, methods
for s in series:
    m = s["metric"]
    assert m["url_scheme"] == "http" and m["network_protocol_version"] == "1.1", m
    if m.get("http_response_status_code", "").startswith("5"):
        assert m["error_type"] == m["http_response_status_code"], m
les = {s["metric"]["le"] for s in query("http_server_request_duration_seconds_bucket")}
assert {"0.005", "0.075", "10", "+Inf"} <= les, les
# rate() needs two scrapes in its window; the loop above stops at the first one.
for _ in range(50):
    p99 = query('histogram_quantile(0.99, sum by (le, http_route) (rate(http_server_request_duration_seconds_bucket[1m])))')
    if p99:
        break
    time.sleep(0.2)
assert p99, "no p99 by route"
assert query("http_server_active_requests"), "no active requests gauge"
assert not query("http_request_total"), "Harbor's families recorded beside the conventions'"
print(f"otel: {len(series)} duration series, routes {sorted(r for r in routes if r)}")
PY
kill "$prom_pid"; wait "$prom_pid" 2>/dev/null || true; prom_pid=""
# The dashboard for this naming, through prometheus_e2e.sh (its own Prometheus, deploy/'s
# scrape config and alerts): every expression evaluates, the server panels return data.
METRICS_URL="http://127.0.0.1:$metrics_port/metrics" METRIC_PREFIX="" SETTLE_SECONDS=4 \
  DASHBOARD="$PWD/dashboards/towerscope-otel.json" \
  REQUIRE_DATA='^(Request rate by (route|method)|Requests by status code|Error ratio by route|Latency p\d+ by route|Mean latency by route|Active requests|Transaction rate|CPU|Resident memory|Uptime|Build info|Tokio workers)' \
  prometheus_e2e "$work/prometheus-otel.log" \
  || fail "otel dashboard against the registry: $(tail -30 "$work/prometheus-otel.log")"
kill -TERM "$pid"
wait "$pid" || fail "non-zero exit after SIGTERM (naming: otel)"
pid=""
ok "metric.naming: otel through Prometheus: http_server_request_duration_seconds by http_route (OpenAPI and Distribution templates), advised buckets, _OTHER methods; dashboards/towerscope-otel.json: $(tail -1 "$work/prometheus-otel.log")"

# --- Proxy cache: registry A (upstream, serving the image pushed at the start from the first
# instance's database and storage) and registry B (`upstream:` A). A pull through B fetches from A
# through the instrumented client and caches; the second pull does not reach A. Both trace to one
# OTLP sink with distinct service names: B's server span, B's client span and A's server span
# share one trace id.
pid_a=""
pid_b=""
sink_pid=""
cleanup_proxy() {
  for p in $pid_a $pid_b; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ -n "$sink_pid" ]; then exec 8>&- ; kill "$sink_pid" 2>/dev/null || true; fi
  cleanup
}
trap cleanup_proxy EXIT
tracing=""
if python3 -c 'import grpc, opentelemetry.proto' 2>/dev/null; then
  tracing=1
  rm -f "$work/sink.in"
  mkfifo "$work/sink.in"
  python3 interop/otlp_sink.py < "$work/sink.in" > "$work/proxy-sink.out" &
  sink_pid=$!
  exec 8> "$work/sink.in"
  for _ in $(seq 1 200); do grep -q READY "$work/proxy-sink.out" 2>/dev/null && break; sleep 0.05; done
  sink_http=$(sed -n 's/.*http=\([0-9]*\).*/\1/p' "$work/proxy-sink.out" | head -1)
  [ -n "$sink_http" ] || fail "the OTLP sink did not start (proxy cache)"
fi
trace_block() {
  [ -n "$tracing" ] || return 0
  printf 'trace:\n  enabled: true\n  service_name: %s\n  otel: { endpoint: "127.0.0.1:%s", url_path: /v1/traces, insecure: true }\n' \
    "$1" "$sink_http"
}
wait_up() {
  for _ in $(seq 1 200); do
    curl -fsS "$1/v2/" > /dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || fail "registry $3 exited: $(tail -n 5 "$4")"
    sleep 0.05
  done
  fail "registry $3 did not start"
}
a_port=$(free_port); a_metrics_port=$(free_port)
b_port=$(free_port); b_metrics_port=$(free_port)
{
  printf 'listen: 127.0.0.1:%s\ndatabase: sqlite://%s/registry.db\nstorage: %s/blobs\nmetric: { port: %s }\n' \
    "$a_port" "$work" "$work" "$a_metrics_port"
  trace_block registry-upstream
} > "$work/upstream-a.yml"
{
  printf 'listen: 127.0.0.1:%s\nupstream: http://127.0.0.1:%s\nmetric: { port: %s, namespace: harbor, subsystem: core }\n' \
    "$b_port" "$a_port" "$b_metrics_port"
  trace_block registry-proxy
} > "$work/proxy-b.yml"
"$bin" --config "$work/upstream-a.yml" > "$work/upstream.log" 2>&1 &
pid_a=$!
"$bin" --config "$work/proxy-b.yml" > "$work/app.log" 2>&1 &
pid_b=$!
a_api="http://127.0.0.1:$a_port"
b_api="http://127.0.0.1:$b_port"
wait_up "$a_api" "$pid_a" A "$work/upstream.log"
wait_up "$b_api" "$pid_b" B "$work/app.log"
a_count() { # A's count of GETs answered 200 for a registry handler
  curl -fsS "http://127.0.0.1:$a_metrics_port/metrics" \
    | sed -n "s/^http_request_total{method=\"GET\",code=\"200\",operation=\"$1\"} \([0-9]*\)$/\1/p"
}
skopeo copy --quiet --src-tls-verify=false "docker://127.0.0.1:$b_port/library/hello:v1" "dir:$work/proxied" \
  > "$work/proxy-pull.log" 2>&1 || fail "skopeo pull through the proxy: $(cat "$work/proxy-pull.log")"
pulled=$(sha256sum "$work/proxied/${layer_digest#sha256:}" | cut -d' ' -f1)
[ "sha256:$pulled" = "$layer_digest" ] || fail "layer pulled through the proxy: sha256:$pulled != $layer_digest"
pulled=$(sha256sum "$work/proxied/manifest.json" | cut -d' ' -f1)
[ "sha256:$pulled" = "$manifest_digest" ] || fail "manifest pulled through the proxy: sha256:$pulled != $manifest_digest"
ok "proxy cache: skopeo pull through B (upstream A): manifest and layer digests intact"

curl -fsS "http://127.0.0.1:$b_metrics_port/metrics" > "$work/metrics.txt"
has '^harbor_core_http_client_request_total\{method="GET",code="200",peer="proxyGetManifest"\} 1$'
has '^harbor_core_http_client_request_total\{method="GET",code="200",peer="proxyGetBlob"\} 2$'
has '^harbor_core_db_transaction_total\{operation="putManifest",outcome="commit"\} 1$'
has '^harbor_core_db_transaction_total\{operation="putBlob",outcome="commit"\} 2$'
ok "proxy cache: B's client metrics: proxyGetManifest 1, proxyGetBlob 2 (code 200), stored in tx-putManifest/tx-putBlob"

manifests_a=$(a_count manifest); blobs_a=$(a_count blob)
[ -n "$manifests_a" ] && [ "$manifests_a" -ge 1 ] || fail "A did not count the manifest fetch: '$manifests_a'"
skopeo copy --quiet --src-tls-verify=false "docker://127.0.0.1:$b_port/library/hello:v1" "dir:$work/proxied2" \
  > "$work/proxy-pull.log" 2>&1 || fail "second pull through the proxy: $(cat "$work/proxy-pull.log")"
cmp -s "$work/proxied/manifest.json" "$work/proxied2/manifest.json" || fail "second pull: manifest differs"
[ "$(a_count manifest)" = "$manifests_a" ] && [ "$(a_count blob)" = "$blobs_a" ] \
  || fail "second pull reached A: manifests $manifests_a -> $(a_count manifest), blobs $blobs_a -> $(a_count blob)"
curl -fsS "http://127.0.0.1:$b_metrics_port/metrics" > "$work/metrics.txt"
has '^harbor_core_http_client_request_total\{method="GET",code="200",peer="proxyGetManifest"\} 1$'
ok "proxy cache: second pull served from B's cache (A's manifest count stays $manifests_a, blob count $blobs_a)"

# The whole dashboard and the alert rules through a real Prometheus scraping B (namespace harbor,
# subsystem core; proxying, tracing, transactions, a GC job, runtime metrics): every expression
# evaluates and every panel outside the histogram row returns data, and so does every query of
# Harbor's own dashboard but the go_* ones (scrape jobs labelled service="harbor-core", as
# Harbor's process panels select; B's exporter and registry components scraped too).
curl -fsS -X POST -H 'content-type: application/json' -d '{"schedule":{"type":"Manual"}}' \
  -o /dev/null "$b_api/api/v2.0/system/gc/schedule" || fail "GC schedule on B"
curl -fsS -X POST -d '{"schedule":{"type":"Daily"}}' -o /dev/null "$b_api/api/v2.0/system/gc/schedule" \
  || fail "periodic GC schedule on B"
for _ in $(seq 1 200); do
  curl -fsS "$b_api/api/v2.0/system/gc" | grep -q '"job_status":"Success"' && break
  sleep 0.05
done
# Pulls through B while Prometheus scrapes, so that Harbor's rate() and histogram_quantile()
# panels have numbers, not NaN.
( while :; do
    curl -fsS -o /dev/null "$b_api/v2/library/hello/manifests/v1" || true
    curl -fsS -o /dev/null "$b_api/v2/library/hello/blobs/$layer_digest" || true
    sleep 0.2
  done ) &
pulling=$!
METRICS_URL="http://127.0.0.1:$b_metrics_port/metrics" METRIC_PREFIX=harbor_core_ REQUIRE_DATA=all \
  COMPONENTS="core client db jobservice trace process runtime exporter registry" \
  REQUIRE_COMPONENTS="core client db jobservice trace process runtime exporter registry" \
  HARBOR_DASHBOARD=all SETTLE_SECONDS=4 prometheus_e2e "$work/prometheus-b.log" \
  || { kill "$pulling"; fail "dashboard against the proxy: $(grep -v '^ok' "$work/prometheus-b.log" | tail -30)"; }
kill "$pulling"; wait "$pulling" 2>/dev/null || true
grep -E '^ok    harbor ' "$work/prometheus-b.log" | sed 's/^/      /'
grep -E 'harbor: [0-9]+ queries checked' "$work/prometheus-b.log" | sed 's/^ */      /'
if [ -n "${PROMETHEUS3:-}" ]; then
  echo "      Prometheus 3.16: $(grep -cE '^ok    harbor .*\[data' "$work/prometheus-b-3.log") of Harbor's queries return data"
fi
ok "every dashboard panel and every non-Go query of Harbor's dashboard return data from the proxy: $(tail -1 "$work/prometheus-b.log")"

code=$(curl -s -o "$work/err.json" -w '%{http_code}' "$b_api/v2/library/hello/manifests/nope")
[ "$code" = 404 ] && grep -q '"MANIFEST_UNKNOWN"' "$work/err.json" || fail "upstream 404 manifest: $code $(cat "$work/err.json")"
code=$(curl -s -o "$work/err.json" -w '%{http_code}' "$b_api/v2/library/hello/blobs/sha256:$(printf '0%.0s' $(seq 64))")
[ "$code" = 404 ] && grep -q '"BLOB_UNKNOWN"' "$work/err.json" || fail "upstream 404 blob: $code $(cat "$work/err.json")"
ok "proxy cache: upstream 404s are MANIFEST_UNKNOWN and BLOB_UNKNOWN"

kill -TERM "$pid_a"
wait "$pid_a" || fail "A: non-zero exit after SIGTERM"
pid_a=""
code=$(curl -s -o "$work/err.json" -w '%{http_code}' "$b_api/v2/library/other/manifests/v1")
[ "$code" = 502 ] && python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["errors"][0]; assert e["code"]=="UNKNOWN" and e["message"], e' \
  "$work/err.json" || fail "unreachable upstream: $code $(cat "$work/err.json")"
code=$(curl -s -o /dev/null -w '%{http_code}' "$b_api/v2/library/hello/manifests/v1")
[ "$code" = 200 ] || fail "cached manifest while the upstream is down: $code"
kill -TERM "$pid_b"
wait "$pid_b" || fail "B: non-zero exit after SIGTERM"
pid_b=""
ok "proxy cache: upstream down -> 502 {\"errors\":[{\"code\":\"UNKNOWN\"}]}, cache still served; both stop on SIGTERM"

if [ -n "$tracing" ]; then
  for _ in $(seq 1 200); do [ "$(grep -c '"transport"' "$work/proxy-sink.out")" -ge 2 ] && break; sleep 0.05; done
  exec 8>&-
  wait "$sink_pid" 2>/dev/null || true
  sink_pid=""
  trace_line=$(python3 - "$work/proxy-sink.out" 2>&1 <<'PY'
import json, sys
spans = []
for line in open(sys.argv[1]):
    if line.startswith("{"):
        export = json.loads(line)
        service = export["resource"].get("service.name")
        spans += [dict(s, service=service) for s in export["spans"]]
SERVER, CLIENT = 2, 3
clients = [s for s in spans if s["service"] == "registry-proxy" and s["kind"] == CLIENT
           and s["attributes"].get("operation") == "proxyGetManifest"]
ok = [c for c in clients if c["attributes"].get("http.response.status_code") == 200]
assert len(ok) == 1, clients
client = ok[0]
by_id = {s["span_id"]: s for s in spans}
b_server = by_id[client["parent_span_id"]]
assert b_server["service"] == "registry-proxy" and b_server["kind"] == SERVER, b_server
assert b_server["attributes"]["operation"] == "manifest", b_server
a_servers = [s for s in spans if s["service"] == "registry-upstream" and s["parent_span_id"] == client["span_id"]]
assert len(a_servers) == 1, [s for s in spans if s["service"] == "registry-upstream"]
a_server = a_servers[0]
assert a_server["kind"] == SERVER and a_server["attributes"]["operation"] == "manifest", a_server
assert b_server["trace_id"] == client["trace_id"] == a_server["trace_id"], (b_server, client, a_server)
blob_clients = [s for s in spans if s["attributes"].get("operation") == "proxyGetBlob"
                and s["attributes"].get("http.response.status_code") == 200]
assert len(blob_clients) == 2 and all(
    any(a["parent_span_id"] == c["span_id"] and a["trace_id"] == c["trace_id"] for a in spans
        if a["service"] == "registry-upstream") for c in blob_clients), blob_clients
print("trace", client["trace_id"], "B server", b_server["span_id"], "-> B client", client["span_id"],
      "-> A server", a_server["span_id"])
PY
  ) || fail "proxy spans: $trace_line"
  ok "proxy cache: B server span -> B client span (proxyGetManifest) -> A server span share one trace id (decoded by the OTLP sink): $trace_line"
else
  echo "registry_e2e: skipped: proxy-cache tracing check (python grpcio / opentelemetry-proto not installed)"
fi

echo "registry_e2e: $passed passed, 0 failed"
