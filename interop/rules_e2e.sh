#!/usr/bin/env bash
# `towerscope rules` against promtool: the rules generated for Harbor's 203-operation OpenAPI
# document pass `promtool check rules` (by operation and by tag, summaries and histograms), and
# `promtool test rules` (tests/rules/burn_rate_test.yml) shows the fast-burn alert firing for an
# operation with a 5 % error ratio and quiet at 0.05 %, and (tests/rules/latency_burn_test.yml)
# the latency burn-rate alerts of the histogram rules. Run from the crate root after
# `cargo build --all-features --bin towerscope`; TOWERSCOPE overrides the binary.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${TOWERSCOPE:-target/debug/towerscope}
[ -x "$bin" ] || { echo "rules_e2e: no binary at $bin" >&2; exit 1; }
doc=../shared/data/harbor-swagger.yaml
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "rules_e2e: FAIL $*" >&2; exit 1; }
ok() { echo "ok    $*"; }

"$bin" rules --openapi "$doc" --prefix harbor_core_ > "$work/by-operation.yml" 2> "$work/err" \
  || fail "rules: $(cat "$work/err")"
grep -q '^towerscope rules: 203 operations, 9 recording rules, 609 alerts$' "$work/err" \
  || fail "by operation: $(cat "$work/err")"
promtool check rules "$work/by-operation.yml" > "$work/check" 2>&1 || fail "promtool: $(cat "$work/check")"
grep -q 'SUCCESS: 618 rules found' "$work/check" || fail "promtool: $(cat "$work/check")"
ok "203 operations of Harbor's document: $(cat "$work/err" | cut -d: -f2-); promtool check rules: $(grep SUCCESS "$work/check")"

"$bin" rules --openapi "$doc" --prefix harbor_core_ --group-by tag --durations histogram --objective 0.99 \
  --latency 1 > "$work/by-tag.yml" 2> "$work/err" || fail "rules by tag: $(cat "$work/err")"
promtool check rules "$work/by-tag.yml" > "$work/check" 2>&1 || fail "promtool by tag: $(cat "$work/check")"
grep -q 'le="1"' "$work/by-tag.yml" || fail "by tag: the 1 s bucket is not selected as le=\"1\""
ok "by tag, histograms: $(cut -d: -f2- "$work/err"); promtool check rules: $(grep SUCCESS "$work/check")"

cp tests/rules/burn_rate_test.yml "$work/"
"$bin" rules --openapi "$doc" --prefix harbor_core_ > "$work/harbor-rules.yml" 2> /dev/null
promtool test rules "$work/burn_rate_test.yml" > "$work/test" 2>&1 || fail "promtool test rules: $(cat "$work/test")"
ok "promtool test rules: fast and slow burn fire for 5 % errors (499s not counted), quiet at 0.05 %; latency alert on the summary"
cp tests/rules/latency_burn_test.yml "$work/"
"$bin" rules --openapi "$doc" --prefix harbor_core_ --durations histogram --latency 0.5 \
  > "$work/harbor-histogram-rules.yml" 2> /dev/null
promtool test rules "$work/latency_burn_test.yml" > "$work/test" 2>&1 || fail "promtool test rules (latency): $(cat "$work/test")"
ok "promtool test rules: latency burn-rate alerts fire at 10 % slower than 0.5 s, quiet at 0.01 % (histograms)"

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
