#!/usr/bin/env bash
# Streaming end to end (interop/registry_stream.py): a 1 GiB layer pushed and pulled through the
# example registry and through a proxy cache of it in bounded memory, clients that walk away
# counted 499, durations to the last byte. Run from the crate root after `cargo build --example
# registry_demo --all-features`; REGISTRY_DEMO overrides the binary. Needs ~2.5 GiB of disk.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${REGISTRY_DEMO:-target/debug/examples/registry_demo}
[ -x "$bin" ] || { echo "registry_stream: no binary at $bin" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # name config -> pid in $started
  "$bin" --config "$2" > "$work/$1.log" 2>&1 &
  started=$!
  pids+=("$started")
  for _ in $(seq 1 200); do
    curl -fsS "http://127.0.0.1:$3/v2/" > /dev/null 2>&1 && return 0
    kill -0 "$started" 2>/dev/null || { echo "registry_stream: $1 exited: $(tail -5 "$work/$1.log")" >&2; exit 1; }
    sleep 0.05
  done
  echo "registry_stream: $1 did not start" >&2; exit 1
}
a_port=$(free_port); a_metrics=$(free_port); b_port=$(free_port); b_metrics=$(free_port)
printf 'listen: 127.0.0.1:%s\nstorage: %s/a\ndatabase: sqlite://%s/a.db\nmetric: { port: %s, namespace: harbor, subsystem: core }\n' \
  "$a_port" "$work" "$work" "$a_metrics" > "$work/a.yml"
printf 'listen: 127.0.0.1:%s\nstorage: %s/b\ndatabase: sqlite://%s/b.db\nupstream: http://127.0.0.1:%s\nmetric: { port: %s, namespace: harbor, subsystem: core }\n' \
  "$b_port" "$work" "$work" "$a_port" "$b_metrics" > "$work/b.yml"
start a "$work/a.yml" "$a_port"; a_pid=$started
start b "$work/b.yml" "$b_port"; b_pid=$started
if ! timeout 900 python3 interop/registry_stream.py "http://127.0.0.1:$a_port" "http://127.0.0.1:$a_metrics/metrics" "$a_pid" \
  "http://127.0.0.1:$b_port" "http://127.0.0.1:$b_metrics/metrics" "$b_pid"; then
  echo "--- A's log:" >&2; tail -n 20 "$work/a.log" >&2
  echo "--- B's log:" >&2; tail -n 20 "$work/b.log" >&2
  exit 1
fi
echo "registry_stream: passed"
