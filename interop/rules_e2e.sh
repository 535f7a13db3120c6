#!/usr/bin/env bash
# `towerscope rules` against promtool: the rules generated for Harbor's 203-operation OpenAPI
# document pass `promtool check rules` (by operation and by tag, summaries and histograms), and
# `promtool test rules` (tests/rules/burn_rate_test.yml) shows the fast-burn alert firing for an
# operation with a 5 % error ratio and quiet at 0.05 %, and (tests/rules/latency_burn_test.yml)
# the latency burn-rate alerts of the histogram rules, and with promtool 3
# (tests/rules/native_latency_burn_test.yml) those of the native-histogram rules. Run from the crate root after
# `cargo build --all-features --bin towerscope`; TOWERSCOPE overrides the binary. With PROMTOOL3
# (promtool 3.16, from interop/backends/build.sh) every promtool step runs with Debian's 2.42
# and again with 3.16; with PROMETHEUS3, a Prometheus 3.16 also loads every generated rule file
# and evaluates each group (health ok, no error).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${TOWERSCOPE:-target/debug/towerscope}
[ -x "$bin" ] || { echo "rules_e2e: no binary at $bin" >&2; exit 1; }
doc=../shared/data/harbor-swagger.yaml
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "rules_e2e: FAIL $*" >&2; exit 1; }
ok() { echo "ok    $*"; }
promtools=(promtool)
[ -n "${PROMTOOL3:-}" ] && promtools+=("$PROMTOOL3")
# promtool_each ARGS...: every promtool version with ARGS, output in $work/check (the last
# run's, or the failing one's); fails on the first error.
promtool_each() {
  local tool
  for tool in "${promtools[@]}"; do
    "$tool" "$@" > "$work/check" 2>&1 || fail "$tool $*: $(cat "$work/check")"
  done
}

"$bin" rules --openapi "$doc" --prefix harbor_core_ > "$work/by-operation.yml" 2> "$work/err" \
  || fail "rules: $(cat "$work/err")"
grep -q '^towerscope rules: 203 operations, 9 recording rules, 609 alerts$' "$work/err" \
  || fail "by operation: $(cat "$work/err")"
promtool_each check rules "$work/by-operation.yml"
grep -q 'SUCCESS: 618 rules found' "$work/check" || fail "promtool: $(cat "$work/check")"
ok "203 operations of Harbor's document: $(cat "$work/err" | cut -d: -f2-); promtool check rules (${#promtools[@]} versions): $(grep SUCCESS "$work/check")"

"$bin" rules --openapi "$doc" --prefix harbor_core_ --group-by tag --durations histogram --objective 0.99 \
  --latency 1 > "$work/by-tag.yml" 2> "$work/err" || fail "rules by tag: $(cat "$work/err")"
promtool_each check rules "$work/by-tag.yml"
grep -qF 'le=~"1|1\\.0"' "$work/by-tag.yml" || fail "by tag: the 1 s bucket is not matched in both spellings (le=\"1\" and le=\"1.0\")"
ok "by tag, histograms: $(cut -d: -f2- "$work/err"); promtool check rules: $(grep SUCCESS "$work/check")"

cp tests/rules/burn_rate_test.yml "$work/"
"$bin" rules --openapi "$doc" --prefix harbor_core_ > "$work/harbor-rules.yml" 2> /dev/null
promtool_each test rules "$work/burn_rate_test.yml"
ok "promtool test rules: fast and slow burn fire for 5 % errors (499s not counted), quiet at 0.05 %; latency alert on the summary"
cp tests/rules/latency_burn_test.yml "$work/"
"$bin" rules --openapi "$doc" --prefix harbor_core_ --durations histogram --latency 0.5 \
  > "$work/harbor-histogram-rules.yml" 2> /dev/null
promtool_each test rules "$work/latency_burn_test.yml"
ok "promtool test rules: latency burn-rate alerts fire at 10 % slower than 0.5 s, quiet at 0.01 % (histograms)"
# Native histograms (histogram_fraction): promtool 3 only, 2.42 reads no native histogram in
# test input.
"$bin" rules --openapi "$doc" --prefix harbor_core_ --durations native --latency 0.5 \
  > "$work/harbor-native-rules.yml" 2> "$work/err" || fail "rules, native: $(cat "$work/err")"
grep -q '^towerscope rules: 203 operations, 15 recording rules, 812 alerts$' "$work/err" \
  || fail "native: $(cat "$work/err")"
if [ -n "${PROMTOOL3:-}" ]; then
  "$PROMTOOL3" check rules "$work/harbor-native-rules.yml" > "$work/check" 2>&1 \
    || fail "promtool 3 check rules, native: $(cat "$work/check")"
  grep -q 'SUCCESS: 827 rules found' "$work/check" || fail "promtool 3, native: $(cat "$work/check")"
  cp tests/rules/native_latency_burn_test.yml "$work/"
  "$PROMTOOL3" test rules "$work/native_latency_burn_test.yml" > "$work/check" 2>&1 \
    || fail "promtool 3 test rules, native: $(cat "$work/check")"
  ok "native histograms: promtool 3 check rules (827 rules) and test rules: latency burn-rate alerts from histogram_fraction fire at 10 % slower than 0.5 s, quiet at 0.01 %"
fi

# The generated rule files loaded by a Prometheus 3.16, every group evaluated at least once.
if [ -n "${PROMETHEUS3:-}" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf 'global: { evaluation_interval: 1s }\nrule_files: ["%s", "%s", "%s", "%s"]\n' \
    "$work/by-operation.yml" "$work/by-tag.yml" "$work/harbor-histogram-rules.yml" \
    "$work/harbor-native-rules.yml" > "$work/prometheus.yml"
  "$PROMETHEUS3" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$port" --log.level=warn > "$work/prometheus.log" 2>&1 &
  prom=$!
  # (|| true: errexit holds in traps too, and the process is gone by the normal exit.)
  trap 'kill "$prom" 2>/dev/null || true; wait "$prom" 2>/dev/null || true; rm -rf "$work"' EXIT
  python3 - "http://127.0.0.1:$port" > "$work/rules.out" <<'PY' || fail "Prometheus 3 rules: $(cat "$work/rules.out") $(tail -5 "$work/prometheus.log")"
import json, sys, time, urllib.request
url = sys.argv[1] + "/api/v1/rules"
deadline = time.time() + 60
while True:
    try:
        groups = json.load(urllib.request.urlopen(url, timeout=5))["data"]["groups"]
    except OSError:
        groups = []
    rules = [r for g in groups for r in g["rules"]]
    # Every rule evaluated once (lastEvaluation set), none failing.
    evaluated = [r for r in rules if not r["lastEvaluation"].startswith("0001-")]
    if rules and len(evaluated) == len(rules):
        break
    if time.time() > deadline:
        sys.exit(f"{len(evaluated)} of {len(rules)} rules evaluated after 60 s")
    time.sleep(0.5)
bad = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
if bad:
    sys.exit(f"rules failing: {bad[:5]}")
print(f"{len(groups)} groups, {len(rules)} rules loaded and evaluated, all healthy")
PY
  kill "$prom"; wait "$prom" 2>/dev/null || true
  ok "Prometheus 3.16 loads the generated rule files: $(cat "$work/rules.out")"
fi

set +e
"$bin" rules --openapi "$doc" --prefix harbor_core_ --objective 1.5 > /dev/null 2> "$work/err"; code=$?
set -e
[ "$code" = 2 ] && grep -q 'objective 1.5 must be between 0 and 1' "$work/err" || fail "bad objective: $code $(cat "$work/err")"
set +e
"$bin" rules --openapi "$work/missing.yaml" --prefix x_ > /dev/null 2> "$work/err"; code=$?
set -e
[ "$code" = 1 ] && grep -q 'cannot read' "$work/err" || fail "missing document: $code $(cat "$work/err")"
ok "invalid settings exit 2 with a message, an unreadable document 1"
echo "rules_e2e: passed"
