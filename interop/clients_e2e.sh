#!/usr/bin/env bash
# Two more OCI clients we did not write against the example registry (skopeo is in
# registry_e2e.sh):
#
# - buildah (Debian, rootful, vfs storage in a temporary --root/--runroot): builds an image from
#   scratch with a 5 MiB random layer, pushes it (OCI and Docker v2s2 manifests; the registry
#   must answer each with the digest and media type buildah pushed), removes it locally, pulls
#   both back, compares the image id and the files and config of a mounted container;
# - the oras Python SDK (PyPI): interop/oras_client.py (chunked push, pull, a referrer with a
#   `subject`, the referrers API with an artifactType filter).
#
# Then the demo's own metrics must show the pushes and pulls, with nothing left in flight.
# Run from the crate root after `cargo build --example registry_demo --all-features`;
# REGISTRY_DEMO overrides the binary. Ends with `clients_e2e: passed`.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${REGISTRY_DEMO:-target/debug/examples/registry_demo}
[ -x "$bin" ] || { echo "clients_e2e: no binary at $bin" >&2; exit 1; }
command -v buildah > /dev/null || { echo "clients_e2e: buildah is not installed" >&2; exit 1; }
python3 -c 'import oras.client' 2> /dev/null || { echo "clients_e2e: the oras Python SDK is not installed" >&2; exit 1; }
work=$(mktemp -d)
pid=""
B=(buildah --root "$work/root" --runroot "$work/run" --storage-driver vfs)
cleanup() {
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  "${B[@]}" rm --all > /dev/null 2>&1 || true
  # vfs layers of a rootful buildah may hold read-only directories.
  chmod -R u+w "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "clients_e2e: FAIL $*" >&2; [ -f "$work/demo.log" ] && tail -n 20 "$work/demo.log" >&2; exit 1; }
ok() { echo "ok    $*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

port=$(free_port); metrics_port=$(free_port)
printf 'listen: 127.0.0.1:%s\nstorage: %s/storage\ndatabase: sqlite://%s/demo.db\nmetric: { port: %s, namespace: harbor, subsystem: core }\n' \
  "$port" "$work" "$work" "$metrics_port" > "$work/demo.yml"
"$bin" --config "$work/demo.yml" > "$work/demo.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
  curl -fsS "http://127.0.0.1:$port/v2/" > /dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || fail "the registry exited"
  sleep 0.05
done
registry="127.0.0.1:$port"

# --- buildah ------------------------------------------------------------------------------------
mkdir -p "$work/ctx"
head -c $((5 * 1024 * 1024)) /dev/urandom > "$work/ctx/layer.bin"
echo "built by buildah for towerscope" > "$work/ctx/hello.txt"
ctr=$("${B[@]}" from scratch 2> "$work/buildah.log") || fail "buildah from scratch: $(cat "$work/buildah.log")"
"${B[@]}" copy "$ctr" "$work/ctx/layer.bin" "$work/ctx/hello.txt" / > /dev/null 2>> "$work/buildah.log" \
  || fail "buildah copy: $(cat "$work/buildah.log")"
"${B[@]}" config --label org.opencontainers.image.title=towerscope-interop --cmd '["/hello.txt"]' "$ctr" \
  2>> "$work/buildah.log" || fail "buildah config: $(cat "$work/buildah.log")"
image_id=$("${B[@]}" commit --quiet "$ctr" localhost/interop:v1 2>> "$work/buildah.log") \
  || fail "buildah commit: $(cat "$work/buildah.log")"
"${B[@]}" rm "$ctr" > /dev/null
for format in oci v2s2; do
  "${B[@]}" push --quiet --tls-verify=false --format "$format" --digestfile "$work/digest-$format" \
    localhost/interop:v1 "docker://$registry/library/buildah:$format" > /dev/null 2>> "$work/buildah.log" \
    || fail "buildah push --format $format: $(cat "$work/buildah.log")"
  digest=$(cat "$work/digest-$format")
  want_type=$([ "$format" = oci ] && echo application/vnd.oci.image.manifest.v1+json \
    || echo application/vnd.docker.distribution.manifest.v2+json)
  headers=$(curl -fsS -I -H "Accept: $want_type" "http://$registry/v2/library/buildah/manifests/$format") \
    || fail "HEAD manifest $format"
  grep -qi "^docker-content-digest: $digest" <<< "$headers" && grep -qi "^content-type: $want_type" <<< "$headers" \
    || fail "buildah push --format $format: the registry answers $headers, buildah pushed $digest"
  ok "buildah push --format $format: $digest ($want_type)"
done
"${B[@]}" rmi --all --force > /dev/null 2>> "$work/buildah.log" || fail "buildah rmi: $(cat "$work/buildah.log")"
for format in oci v2s2; do
  "${B[@]}" pull --quiet --tls-verify=false "docker://$registry/library/buildah:$format" > "$work/pulled-$format" \
    2>> "$work/buildah.log" || fail "buildah pull $format: $(cat "$work/buildah.log")"
done
[ "$(cat "$work/pulled-oci")" = "$image_id" ] \
  || fail "buildah pull (oci): image id $(cat "$work/pulled-oci"), committed $image_id"
ok "buildah pull: the OCI image comes back with the committed image id ${image_id:0:12}"
ctr=$("${B[@]}" from --pull-never "$registry/library/buildah:v2s2" 2>> "$work/buildah.log") \
  || fail "buildah from the pulled v2s2 image: $(cat "$work/buildah.log")"
mnt=$("${B[@]}" mount "$ctr" 2>> "$work/buildah.log") || fail "buildah mount: $(cat "$work/buildah.log")"
cmp -s "$mnt/layer.bin" "$work/ctx/layer.bin" && cmp -s "$mnt/hello.txt" "$work/ctx/hello.txt" \
  || fail "the files of the pulled v2s2 image differ from the pushed ones"
labels=$("${B[@]}" inspect --type container --format '{{index .OCIv1.Config.Labels "org.opencontainers.image.title"}}' "$ctr")
[ "$labels" = towerscope-interop ] || fail "pulled image config label: $labels"
"${B[@]}" umount "$ctr" > /dev/null
ok "buildah pull (v2s2), from, mount: the 5 MiB layer and the config are intact"

# --- oras ---------------------------------------------------------------------------------------
mkdir -p "$work/oras"
python3 interop/oras_client.py "$registry" "$work/oras" || fail "the oras Python SDK run"

# --- what the registry counted --------------------------------------------------------------------
curl -fsS "http://127.0.0.1:$metrics_port/metrics" > "$work/metrics.txt"
for re in \
  '^registry_http_requests_total\{code="201",handler="manifest",method="PUT"\} 4$' \
  '^registry_http_requests_total\{code="202",handler="blob_upload_chunk",method="PATCH"\} [1-9]' \
  '^registry_http_requests_total\{code="200",handler="referrers",method="GET"\} 3$' \
  '^registry_http_requests_total\{code="404",handler="blob",method="HEAD"\} [1-9]' \
  '^harbor_core_http_request_total\{method="PUT",code="201",operation="manifest"\} 4$'; do
  grep -qE "$re" "$work/metrics.txt" || fail "metrics: no line matches $re"
done
# Nobody walked away: a HEAD answered 404 (its error body never sent) is a 404, not a 499.
walked=$(grep -E '^(registry_http_requests_total|harbor_core_http_request_total)\{.*code="499"' "$work/metrics.txt" || true)
[ -z "$walked" ] || fail "requests counted as cancelled: $walked"
stuck=$(grep -E '^(registry_http_in_flight_requests|harbor_core_http_inflight_requests)' "$work/metrics.txt" \
  | grep -vE ' 0$' || true)
[ -z "$stuck" ] || fail "requests left in flight: $stuck"
ok "the registry counted the clients' pushes, chunked uploads, HEAD 404s and referrer queries; nothing in flight, no 499"
echo "clients_e2e: passed"
