#!/usr/bin/env bash
# End-to-end check of dashboards/towerscope.json and deploy/{prometheus,alerts}.yml against a
# running towerscope service, through a real Prometheus (the Debian package).
#
#   METRICS_URL=http://127.0.0.1:9090/metrics interop/prometheus_e2e.sh
#
# 1. `promtool check config` on a copy of deploy/prometheus.yml pointed at METRICS_URL (scrape
#    interval 1s, only the components the service serves: an unregistered `?comp=` is a 404),
#    `promtool check rules` on deploy/alerts.yml and on its copy with METRIC_PREFIX.
# 2. Starts prometheus on a free loopback port with a temporary TSDB, waits until every target
#    is up and a few scrapes are stored.
# 3. Evaluates every `targets[].expr` of the dashboard (with $job, $prefix, $__rate_interval,
#    $__interval, $__range replaced) and every alert expression through /api/v1/query; any query
#    error fails; reports which expressions return data; checks the rules evaluate without error.
# 4. With HARBOR_DASHBOARD=1, the same for the "Core Metrics" row of Harbor's own dashboard
#    (its queries must return data); with HARBOR_DASHBOARD=all, for every query of Harbor's
#    dashboard that can apply to a Rust process (all but the go_* ones), each scrape job then
#    carrying Harbor's `service` target label (HARBOR_SERVICE) that its process panels select.
#
# Environment:
#   METRICS_URL        (required) the service's metrics URL, e.g. http://127.0.0.1:9090/metrics
#   METRICS_TOKEN      bearer token, when the service sets metric.bearer_token
#   METRIC_PREFIX      {namespace}_{subsystem}_ of the service (default harbor_core_)
#   COMPONENTS         components to scrape when served (default: core client db jobservice
#                      trace process runtime); one without a job in deploy/prometheus.yml
#                      gets one, towerscope-<component>, like the others
#   REQUIRE_COMPONENTS components that must be served (default: none; all of COMPONENTS when
#                      REQUIRE_DATA=all)
#   REQUIRE_DATA       panels whose queries must return data: `all` (every panel outside the
#                      rows matching OPTIONAL_ROWS), a Python regex searched in panel titles,
#                      or empty (default: nothing required)
#   OPTIONAL_ROWS      regex on row titles left out of REQUIRE_DATA=all
#                      (default: ^(Histogram|Native), the histogram-only panels)
#   HARBOR_DASHBOARD   1: also Harbor's "Core Metrics" row (needs METRIC_PREFIX=harbor_core_);
#                      all: every non-Go query of Harbor's dashboard, with a value that is not
#                      NaN (so the service must see traffic while Prometheus scrapes)
#   HARBOR_SERVICE     the `service` target label with HARBOR_DASHBOARD=all (default harbor-core)
#   HARBOR_DASHBOARD_JSON  default: ../shared/data/harbor-grafana-dashboard.json
#   SETTLE_SECONDS     seconds to let Prometheus scrape after the targets are up (default 5)
#   PROMETHEUS, PROMTOOL   binaries (default: /usr/bin/prometheus, promtool on PATH)
#   DASHBOARD          the dashboard to check (default: dashboards/towerscope.json)
#
# Ends with `prometheus_e2e: N passed, M failed`; exits 1 when M > 0.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

: "${METRICS_URL:?set METRICS_URL, e.g. http://127.0.0.1:9090/metrics}"
export METRICS_URL
export METRICS_TOKEN="${METRICS_TOKEN:-}"
export METRIC_PREFIX="${METRIC_PREFIX-harbor_core_}"
export COMPONENTS="${COMPONENTS:-core client db jobservice trace process runtime}"
export REQUIRE_DATA="${REQUIRE_DATA:-}"
if [[ "$REQUIRE_DATA" == all ]]; then
    export REQUIRE_COMPONENTS="${REQUIRE_COMPONENTS-$COMPONENTS}"
else
    export REQUIRE_COMPONENTS="${REQUIRE_COMPONENTS:-}"
fi
export OPTIONAL_ROWS="${OPTIONAL_ROWS:-^(Histogram|Native)}"
export HARBOR_DASHBOARD="${HARBOR_DASHBOARD:-0}"
export HARBOR_SERVICE="${HARBOR_SERVICE:-harbor-core}"
export HARBOR_DASHBOARD_JSON="${HARBOR_DASHBOARD_JSON:-$repo/../shared/data/harbor-grafana-dashboard.json}"
SETTLE_SECONDS="${SETTLE_SECONDS:-5}"
PROMETHEUS="${PROMETHEUS:-/usr/bin/prometheus}"
PROMTOOL="${PROMTOOL:-promtool}"
export DASHBOARD="${DASHBOARD:-$repo/dashboards/towerscope.json}"
export PROM_CONFIG_SRC="$repo/deploy/prometheus.yml"
export ALERTS_SRC="$repo/deploy/alerts.yml"

work="$(mktemp -d "${TMPDIR:-/tmp}/prometheus_e2e.XXXXXX")"
export WORK="$work"
prom_pid=""
cleanup() {
    local status=$?
    if [[ -n "$prom_pid" ]] && kill -0 "$prom_pid" 2>/dev/null; then
        kill "$prom_pid" 2>/dev/null || true
        wait "$prom_pid" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -f "$work/prometheus.log" ]]; then
        echo "--- prometheus.log (last 20 lines)" >&2
        tail -n 20 "$work/prometheus.log" >&2 || true
    fi
    rm -rf "$work"
    exit $status
}
trap cleanup EXIT INT TERM

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok    $*"; }
fail() { failed=$((failed + 1)); echo "FAIL  $*"; }
finish() {
    echo "prometheus_e2e: $passed passed, $failed failed"
    [[ $failed -eq 0 ]] || exit 1
    exit 0
}

# --- 1. the generated configuration -----------------------------------------------------------
# Probes the components, writes $work/prometheus.yml and $work/alerts.yml.
python3 - <<'PY' > "$work/generate.out"
import os, sys, urllib.request, urllib.error, urllib.parse
import yaml

url = urllib.parse.urlsplit(os.environ["METRICS_URL"])
if url.scheme not in ("http", "https") or not url.netloc:
    sys.exit(f"METRICS_URL {os.environ['METRICS_URL']!r} is not an http(s) URL")
path = url.path or "/metrics"
token = os.environ["METRICS_TOKEN"]
work = os.environ["WORK"]

def served(comp):
    req = urllib.request.Request(urllib.parse.urlunsplit((url.scheme, url.netloc, path, "comp=" + comp, "")))
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False

wanted = os.environ["COMPONENTS"].split()
present = [c for c in wanted if served(c)]

config = yaml.safe_load(open(os.environ["PROM_CONFIG_SRC"]))
config["global"]["scrape_interval"] = "1s"
config["global"]["evaluation_interval"] = "1s"
config["rule_files"] = [os.path.join(work, "alerts.yml")]
# Components served beyond the file's jobs (a service's own, such as the example registry's
# exporter and registry) get a job of the same shape.
listed = {c for job in config["scrape_configs"] for c in job.get("params", {}).get("comp", [])}
for comp in present:
    if comp not in listed:
        config["scrape_configs"].append({"job_name": f"towerscope-{comp}", "params": {"comp": [comp]}})
jobs = []
for job in config["scrape_configs"]:
    comps = job.get("params", {}).get("comp", [])
    if comps and not set(comps) <= set(present):
        continue
    job["scheme"] = url.scheme
    job["metrics_path"] = path
    job["scrape_interval"] = "1s"
    job["scrape_timeout"] = "1s"
    job["static_configs"] = [{"targets": [url.netloc]}]
    if os.environ["HARBOR_DASHBOARD"] == "all":
        job["static_configs"][0]["labels"] = {"service": os.environ["HARBOR_SERVICE"]}
    if token:
        job["authorization"] = {"type": "Bearer", "credentials": token}
    jobs.append(job)
config["scrape_configs"] = jobs
yaml.safe_dump(config, open(os.path.join(work, "prometheus.yml"), "w"), sort_keys=False)

alerts = open(os.environ["ALERTS_SRC"]).read().replace("harbor_core_", os.environ["METRIC_PREFIX"])
open(os.path.join(work, "alerts.yml"), "w").write(alerts)
print(" ".join(present))
print(" ".join(j["job_name"] for j in jobs))
PY
served="$(sed -n 1p "$work/generate.out")"
jobs="$(sed -n 2p "$work/generate.out")"
echo "target $METRICS_URL: components served: ${served:-none}; jobs: ${jobs:-none}"
for comp in $COMPONENTS; do
    if [[ " $served " != *" $comp "* ]]; then
        if [[ " $REQUIRE_COMPONENTS " == *" $comp "* ]]; then
            fail "component $comp: ?comp=$comp is not served (404), required"
        else
            echo "skip  component $comp: not served by this target (404)"
        fi
    fi
done
if [[ -z "$jobs" ]]; then
    fail "no scrape job left: the target serves none of: $COMPONENTS"
    finish
fi

failed_before_promtool=$failed
if "$PROMTOOL" check config "$work/prometheus.yml" > "$work/check.log" 2>&1; then
    pass "promtool check config (generated from deploy/prometheus.yml)"
else
    cat "$work/check.log"; fail "promtool check config (generated from deploy/prometheus.yml)"
fi
if "$PROMTOOL" check config --syntax-only "$PROM_CONFIG_SRC" > "$work/check.log" 2>&1; then
    pass "promtool check config --syntax-only deploy/prometheus.yml"
else
    cat "$work/check.log"; fail "promtool check config --syntax-only deploy/prometheus.yml"
fi
if "$PROMTOOL" check rules "$ALERTS_SRC" > "$work/check.log" 2>&1; then
    pass "promtool check rules deploy/alerts.yml"
else
    cat "$work/check.log"; fail "promtool check rules deploy/alerts.yml"
fi
[[ $failed -eq $failed_before_promtool ]] || finish

# --- 2. prometheus -----------------------------------------------------------------------------
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export PROM_URL="http://127.0.0.1:$port"
"$PROMETHEUS" \
    --config.file="$work/prometheus.yml" \
    --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$port" \
    --log.level=warn \
    > "$work/prometheus.log" 2>&1 &
prom_pid=$!
echo "prometheus pid $prom_pid on $PROM_URL"

# Waits until every target is up (30 s), then lets it scrape SETTLE_SECONDS more.
if python3 - <<'PY'
import json, os, sys, time, urllib.request
deadline = time.time() + 30
last = "prometheus not ready"
while time.time() < deadline:
    try:
        with urllib.request.urlopen(os.environ["PROM_URL"] + "/api/v1/targets?state=active", timeout=2) as r:
            targets = json.load(r)["data"]["activeTargets"]
        if targets and all(t["health"] == "up" for t in targets):
            sys.exit(0)
        last = "; ".join(f'{t["labels"]["job"]}: {t["health"]} {t.get("lastError", "")}'.strip() for t in targets) or "no targets"
    except OSError as e:
        last = str(e)
    time.sleep(0.5)
print(last, file=sys.stderr)
sys.exit(1)
PY
then
    pass "all targets up ($jobs)"
else
    fail "targets up"
    finish
fi
sleep "$SETTLE_SECONDS"

# --- 3 and 4. the expressions --------------------------------------------------------------------
set +e
python3 - <<'PY'
import json, os, re, sys, time, urllib.error, urllib.parse, urllib.request
import yaml

PROM = os.environ["PROM_URL"]
prefix = os.environ["METRIC_PREFIX"]
require = os.environ["REQUIRE_DATA"]
optional_rows = re.compile(os.environ["OPTIONAL_ROWS"])
passed = failed = 0

# Grafana's variables, as the dashboard would see them with job = All: the jobs of
# deploy/prometheus.yml (towerscope-<component>).
SUBST = [
    (r"\$\{job(?::[a-z]+)?\}|\$job\b", "towerscope-.*"),
    (r"\$\{prefix\}|\$prefix\b", prefix),
    (r"\$\{__rate_interval\}|\$__rate_interval\b", "1m"),
    (r"\$\{__interval\}|\$__interval\b", "15s"),
    (r"\$\{__range\}|\$__range\b", "1h"),
]

def substitute(expr):
    for pattern, value in SUBST:
        expr = re.sub(pattern, lambda _m: value, expr)
    left = re.findall(r"\$\{?\w+", expr)
    return expr, left

def query(expr):
    url = PROM + "/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{time.time():.3f}"})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        try:
            body = json.load(e)
        except ValueError:
            return None, f"HTTP {e.code}", []
    except OSError as e:
        return None, str(e), []
    if body.get("status") != "success":
        return None, f'{body.get("errorType")}: {body.get("error")}', []
    data = body["data"]
    result = data["result"]
    if data["resultType"] in ("scalar", "string"):
        result = [result]
    return result, None, body.get("warnings", [])

def describe(result):
    if not result:
        return "no data"
    values = [r["value"][1] if isinstance(r, dict) else r[1] for r in result]
    nan = sum(v == "NaN" for v in values)
    return f"{len(result)} series" + (f", {nan} NaN" if nan else "")

def check(source, title, expr, required, numbers=False):
    """Evaluates expr; with required, it must return data (with numbers, some value not NaN)."""
    global passed, failed
    concrete, left = substitute(expr)
    one_line = " ".join(concrete.split())
    if left:
        failed += 1
        print(f"FAIL  {source} | {title}: unknown variable {left[0]} in {one_line}")
        return
    result, error, warnings = query(concrete)
    if error:
        failed += 1
        print(f"FAIL  {source} | {title}: {error}\n        {one_line}")
        return
    for w in warnings:
        print(f"      warning: {w}")
    if required and not result:
        failed += 1
        print(f"FAIL  {source} | {title}: no data (required)\n        {one_line}")
        return
    values = [r["value"][1] if isinstance(r, dict) else r[1] for r in result]
    if required and numbers and all(v == "NaN" for v in values):
        failed += 1
        print(f"FAIL  {source} | {title}: only NaN (required: a number)\n        {one_line}")
        return
    passed += 1
    mark = "data" if result else "empty"
    print(f"ok    {source} | {title} [{mark}: {describe(result)}]{'  (required)' if required else ''}")

def required_for(title, row):
    """Whether the panel must return data: never in an optional row (the histogram and native
    rows, which need a configuration the run may not have), else by REQUIRE_DATA."""
    if not require or (row and optional_rows.search(row)):
        return False
    return require == "all" or re.search(require, title) is not None

def panels(dashboard):
    """(row title, panel) in order; rows may be collapsed (panels inside) or flat."""
    row = None
    for p in dashboard.get("panels", []):
        if p.get("type") == "row":
            row = p.get("title", "")
            for inner in p.get("panels", []):
                yield row, inner
        else:
            yield row, p

dashboard = json.load(open(os.environ["DASHBOARD"]))
count = 0
for row, panel in panels(dashboard):
    title = panel.get("title", "")
    for target in panel.get("targets", []):
        if "expr" not in target:
            continue
        count += 1
        name = title if len(panel["targets"]) == 1 else f'{title} ({target.get("refId")})'
        check("dashboard", name, target["expr"], required_for(title, row))
if count == 0:
    failed += 1
    print("FAIL  dashboard: no targets[].expr found")

rules = yaml.safe_load(open(os.path.join(os.environ["WORK"], "alerts.yml")))
for group in rules["groups"]:
    for rule in group["rules"]:
        name = rule.get("alert") or rule.get("record")
        check("alerts", name, str(rule["expr"]), False)

# The rules as Prometheus itself evaluates them.
deadline = time.time() + 10
while True:
    with urllib.request.urlopen(PROM + "/api/v1/rules", timeout=5) as r:
        groups = json.load(r)["data"]["groups"]
    states = [(rule["name"], rule.get("health"), rule.get("lastError", "")) for g in groups for rule in g["rules"]]
    if states and all(h != "unknown" for _, h, _ in states) or time.time() > deadline:
        break
    time.sleep(0.5)
bad = [(n, h, e) for n, h, e in states if h != "ok"]
if states and not bad:
    passed += 1
    print(f"ok    alerts | {len(states)} rules loaded and evaluated by Prometheus (health ok)")
else:
    failed += 1
    print(f"FAIL  alerts | rules health: {bad or 'no rules loaded'}")

if os.environ["HARBOR_DASHBOARD"] in ("1", "all"):
    whole = os.environ["HARBOR_DASHBOARD"] == "all"
    harbor = json.load(open(os.environ["HARBOR_DASHBOARD_JSON"]))
    found = skipped = 0
    for row, panel in panels(harbor):
        if not whole and row != "Core Metrics":
            continue
        for target in panel.get("targets", []):
            if "expr" not in target:
                continue
            if re.search(r"\bgo_", target["expr"]):
                # The Go runtime's own families: nothing a Rust process can answer.
                skipped += 1
                continue
            found += 1
            check("harbor", f'{row or "-"} | {panel.get("title", "")}', target["expr"], True, numbers=whole)
    if not found:
        failed += 1
        print("FAIL  harbor: no queries found")
    else:
        print(f"      harbor: {found} queries checked, {skipped} go_* queries left out")

json.dump({"passed": passed, "failed": failed}, open(os.path.join(os.environ["WORK"], "queries.json"), "w"))
PY
status=$?
set -e
if [[ -f "$work/queries.json" ]]; then
    passed=$((passed + $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["passed"])' "$work/queries.json")))
    failed=$((failed + $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["failed"])' "$work/queries.json")))
fi
if [[ $status -ne 0 ]]; then
    fail "query evaluation crashed (status $status)"
fi
finish
