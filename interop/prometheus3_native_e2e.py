#!/usr/bin/env python3
"""Native histograms, OTLP exponential histograms and UTF-8 names against Prometheus 3.16.

Parts (all by default, or those named with --part):

- `native`: the example registry with `metric.histogram: both`, its spans exported to a
  Jaeger v2, scraped at once by a Prometheus 3 with `scrape_native_histograms: true` (and
  exemplar storage) and by one without. With it on, every histogram family of /metrics is a
  native histogram in Prometheus (`/api/v1/query` answers `histogram` values) whose count and
  sum are those /metrics serves, and the exemplars Prometheus keeps for the native request
  durations name server spans Jaeger shows; `towerscope rules --durations native` evaluated
  over them gives slow-request ratios (`histogram_fraction`) and quantiles. With it off, the
  same process scrapes as before: every classic bucket, sum and count stored with /metrics'
  value.
- `accuracy`: examples/histogram_accuracy.rs records known distributions (log-normal,
  bimodal, narrow) into native histograms and Prometheus' default classic buckets (one
  family, `both`); Prometheus 3 scrapes both (`always_scrape_classic_histograms`) and answers
  `histogram_quantile` p50, p90 and p99 from each. The native answers are within 5 % of the
  exact quantiles (the bucket factor 1.1's bound); the classic ones are not, somewhere.
- `otlp-native-cumulative`, `otlp-native-delta`: the registry with `histogram: native` pushes
  over OTLP (exponential histograms) to Prometheus 3's receiver, which also scrapes /metrics
  natively; once the traffic has stopped, every native histogram pushed equals the scraped
  one: count, sum and every bucket (the zero bucket's bounds aside: Prometheus' OTLP
  translation puts its own zero threshold, 1e-128, in place of the point's).
- `utf8`: the registry with `naming: otel` and `utf8_names: true`, scraped by a Prometheus 3
  as it comes (UTF-8 validation and escaping): it stores `{"http.server.request.duration_bucket",
  "http.request.method"=...}` with the values of /metrics' underscored series, and none of the
  underscored names; one with `metric_name_escaping_scheme: underscores` stores the
  underscored names only; one with `scrape_native_histograms: true` (protobuf) stores the
  native `{"http.server.request.duration"}`.

    interop/prometheus3_native_e2e.py --prometheus BIN --jaeger BIN [--part P]...
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time

from e2e_backends import Failure, Jaeger, Process, Prometheus, check, free_port, wait_for
from prometheus3_e2e import Registry, label_key, same, settled_samples, spans_in_jaeger

PARTS = ("native", "accuracy", "otlp-native-cumulative", "otlp-native-delta", "utf8")


def histogram_families(text):
    """The families /metrics declares as histograms."""
    return sorted(set(re.findall(r"^# TYPE (\S+) histogram$", text, re.M)))


def scrape_config(registry, job="registry-demo", **extra):
    return {"job_name": job, "static_configs": [
        {"targets": [f"127.0.0.1:{registry.metrics_port}"]}], **extra}


def native_series(prom, name, **match):
    """{labels: histogram} of the native series of `name` (labels without job and instance),
    those of job `match['job']` when given; fails on a float sample under the name."""
    selector = ",".join([f'__name__="{name}"'] + [f'{k}="{v}"' for k, v in match.items()])
    out = {}
    for series in prom.query(f"{{{selector}}}"):
        check("histogram" in series, f"{name} is not a native histogram in Prometheus: {series}")
        labels = {k: v for k, v in series["metric"].items()
                  if k not in ("__name__", "job", "instance")}
        out[label_key(labels)] = series["histogram"][1]
    return out


def stored_classic(prom, served, job):
    """The values Prometheus stores for each series of `served` (the text samples), of `job`."""
    out = {}
    for name in sorted({name for name, _ in served}):
        for series in prom.query(f'{{__name__="{name}",job="{job}"}}'):
            labels = {k: v for k, v in series["metric"].items()
                      if k not in ("__name__", "job", "instance")}
            out[(name, label_key(labels))] = float(series["value"][1])
    return out


def equal_samples(served, stored, what):
    missing = [k for k in served if k not in stored]
    check(not missing, f"{what}: {len(missing)} of {len(served)} series missing, e.g. "
          f"{missing[:4]}")
    wrong = [(k, served[k], stored[k]) for k in served if not same(served[k], stored[k])]
    check(not wrong, f"{what}: {len(wrong)} series differ (series, /metrics, Prometheus): "
          f"{wrong[:4]}")


def native_panels(dashboard, prefix):
    """(title, expr) of the panels of a dashboard's native-histogram row, with `$job`,
    `${prefix}` and `$__rate_interval` replaced."""
    with open(dashboard) as f:
        rows = json.load(f)["panels"]
    row = next(p for p in rows if p.get("title", "").startswith("Native histogram"))
    out = []
    for panel in row["panels"]:
        for target in panel["targets"]:
            expr = (target["expr"].replace("${prefix}", prefix).replace("$job", ".+")
                    .replace("$__rate_interval", "1m"))
            out.append((panel["title"], expr))
    return out


def check_native_panels(prom, dashboard, prefix, required):
    """Every native panel's query runs (a PromQL error fails); those over the `required`
    family (the request durations the registry's traffic keeps moving) have data. How many
    panels answered with data."""
    answered = 0
    for title, expr in native_panels(dashboard, prefix):
        data = [r for r in prom.query(expr) if r["value"][1] != "NaN"]
        check(data or required not in expr,
              f"{os.path.basename(dashboard)}: {title!r} has no data ({expr})")
        answered += bool(data)
    check(answered >= 2, f"{os.path.basename(dashboard)}: only {answered} native panels answered")
    return answered


# --- native --------------------------------------------------------------------------------

def part_native(args, work):
    jaeger = Jaeger(args.jaeger, work)
    registry = on = off = None
    rules = os.path.join(work, "native-rules.yml")
    with open(rules, "w") as f:
        subprocess.run([args.towerscope, "rules", "--openapi", args.openapi, "--prefix",
                        "harbor_core_", "--durations", "native", "--latency", "0.01"],
                       stdout=f, check=True, stderr=subprocess.DEVNULL)
    try:
        registry = Registry(args.registry, work, metric={
            "namespace": "harbor", "subsystem": "core", "histogram": "both"},
            trace={"enabled": True, "service_name": "registry-demo",
                   "otel": jaeger.exporter("otlp-http")["otel"]}, traffic_seconds=10)
        global_ = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
        on = Prometheus(args.prometheus, work, {"global": global_, "rule_files": [rules],
                                                "scrape_configs": [scrape_config(
                                                    registry, scrape_native_histograms=True)]},
                        flags=["--enable-feature=exemplar-storage"], name="prometheus-native")
        off = Prometheus(args.prometheus, work, {"global": global_, "scrape_configs": [
            scrape_config(registry)]}, name="prometheus-classic")
        # `towerscope rules --durations native` over the native series, read while the traffic
        # runs (rate() needs them to move): slow-request ratios and quantiles have values.
        on.wait_targets_up(1)
        evaluated = {}
        for record in ("operation:harbor_core_http_slow_requests:ratio_rate5m",
                       "operation:harbor_core_http_request_duration_seconds:quantile5m"):
            evaluated[record] = wait_for(f"{record} from the native histograms", lambda: [
                r for r in on.query(record) if not math.isnan(float(r["value"][1]))],
                seconds=30, interval=0.5)
        panels = check_native_panels(on, args.dashboard, "harbor_core_",
                                     "harbor_core_http_request_duration_seconds")
        traffic = registry.wait_traffic_done(60)
        for prom in (on, off):
            targets = prom.wait_targets_up(1)
            check(not targets[0]["lastError"], f"scrape error: {targets[0]['lastError']}")
        served = settled_samples(registry)
        families = histogram_families(registry.scrape()[1])
        check("harbor_core_http_request_duration_seconds" in families and len(families) >= 3,
              f"histogram families on /metrics: {families}")
        # On: one native series per classic label set, with its count and sum.
        natives = 0
        for family in families:
            series = native_series(on, family)
            for labels, h in series.items():
                count = served.get((f"{family}_count", labels))
                total = served.get((f"{family}_sum", labels))
                check(count is not None, f"{family}{dict(labels)} is not on /metrics")
                check(same(float(h["count"]), count) and same(float(h["sum"]), total),
                      f"{family}{dict(labels)}: Prometheus {h['count']}/{h['sum']}, "
                      f"/metrics {count}/{total}")
                check(h.get("buckets") or float(h["count"]) == 0,
                      f"{family}{dict(labels)} has observations but no buckets")
            expected = sum(1 for name, _ in served if name == f"{family}_count")
            check(len(series) == expected,
                  f"{family}: {len(series)} native series, {expected} on /metrics")
            natives += len(series)
        # Off: the classic exposition, every series as served.
        equal_samples(served, stored_classic(off, served, "registry-demo"), "scrape without "
                      "native histograms")
        now = time.time()
        data = on.api("query_exemplars", query="harbor_core_http_request_duration_seconds",
                      start=f"{now - 600:.3f}", end=f"{now + 60:.3f}")
        exemplars = {(e["labels"]["trace_id"], e["labels"]["span_id"])
                     for series in data for e in series["exemplars"]}
        check(exemplars, "no exemplars stored for the native request durations")
        on.stop()
        off.stop()
        check(registry.stop() == 0, "the registry did not exit cleanly on SIGTERM")
        shown = spans_in_jaeger(jaeger, exemplars)
        slow, quantiles = evaluated.values()
        return (f"{len(families)} histogram families, {natives} native series with /metrics' "
                f"count and sum; {len(served)} classic series equal without native scraping; "
                f"{shown} native exemplars, all shown by Jaeger; native rules: slow ratios of "
                f"{len(slow)} operations, {len(quantiles)} quantiles; {panels} native panels of "
                f"the dashboard answer ({traffic})")
    finally:
        for p in (on, off, registry):
            if p:
                p.kill()
        jaeger.stop()


# --- accuracy ------------------------------------------------------------------------------

def part_accuracy(args, work):
    port = free_port()
    example = Process("histogram_accuracy", [args.accuracy, "--port", str(port)], work)
    prom = None
    try:
        line = wait_for("histogram_accuracy's summary", lambda: example.alive() and next(
            (l for l in example.logs().splitlines() if l.startswith("{")), None), seconds=60)
        summary = json.loads(line)
        prom = Prometheus(args.prometheus, work, {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{"job_name": "accuracy", "scrape_native_histograms": True,
                                "always_scrape_classic_histograms": True,
                                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]})
        prom.wait_targets_up(1)
        family, rows, native_worst, classic_worst = summary["family"], [], 0.0, 0.0
        for dist, exact in sorted(summary["exact"].items()):
            for q, truth in sorted(exact.items(), key=lambda kv: float(kv[0])):
                sel = f'{{distribution="{dist}"}}'
                native = float(prom.query(f"histogram_quantile({q}, {family}{sel})")[0]["value"][1])
                classic = float(prom.query(
                    f"histogram_quantile({q}, {family}_bucket{sel})")[0]["value"][1])
                n_err, c_err = abs(native - truth) / truth, abs(classic - truth) / truth
                native_worst, classic_worst = max(native_worst, n_err), max(classic_worst, c_err)
                rows.append(f"{dist} p{float(q) * 100:g}: exact {truth:.4g}, native "
                            f"{native:.4g} ({n_err:.1%}), classic {classic:.4g} ({c_err:.1%})")
        print("accuracy:\n  " + "\n  ".join(rows), flush=True)
        print(f"accuracy: bytes per series {summary['bytes_per_series']}", flush=True)
        check(native_worst <= 0.05, f"a native quantile is {native_worst:.1%} off (over 5 %)")
        check(classic_worst > 0.05, f"the classic buckets are within 5 % everywhere "
              f"({classic_worst:.1%}): the distributions prove nothing")
        return (f"{len(rows)} quantiles of {summary['samples']} samples per distribution: "
                f"native within {native_worst:.1%}, classic up to {classic_worst:.0%} off")
    finally:
        if prom:
            prom.kill()
        example.kill()


# --- OTLP exponential histograms -----------------------------------------------------------

def zero_bounds_aside(histogram):
    """The buckets of a native histogram from the query API, the zero bucket's bounds left
    out (its count kept): Prometheus' OTLP translation sets its own zero threshold, 1e-128,
    whatever the point's `zero_threshold` (2^-128 here), where a scrape keeps the exposed one."""
    return [(rule, None, None, n) if float(lower) < 0 < float(upper) else (rule, lower, upper, n)
            for rule, lower, upper, n in histogram.get("buckets", [])]


def part_otlp_native(args, work, temporality):
    flags = ["--web.enable-otlp-receiver"]
    if temporality == "delta":
        flags.append("--enable-feature=otlp-deltatocumulative")
    registry = prom = None
    try:
        port = free_port()
        prom_url = f"127.0.0.1:{port}"
        metric = {"histogram": "native", "otlp": {
            "endpoint": prom_url, "insecure": True, "url_path": "/api/v1/otlp/v1/metrics",
            "interval_secs": 1, "temporality": temporality}}
        registry = Registry(args.registry, work, metric=metric, trace={"enabled": False},
                            traffic_seconds=3)
        prom = Prometheus(args.prometheus, work, {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [scrape_config(registry, job="scraped",
                                             scrape_native_histograms=True)]},
            flags=flags, port=port)
        traffic = registry.wait_traffic_done(60)
        served = settled_samples(registry)
        families = histogram_families(registry.scrape()[1])
        time.sleep(2.5)  # another scrape and another push of the settled state
        compared = buckets = 0
        for family in families:
            scraped = native_series(prom, family, job="scraped")
            pushed = {}
            for series in prom.query(f'{{__name__="{family}",job!="scraped"}}'):
                check("histogram" in series, f"pushed {family} is not native: {series}")
                labels = {k: v for k, v in series["metric"].items()
                          if k not in ("__name__", "job", "instance")}
                pushed[label_key(labels)] = series["histogram"][1]
            check(set(pushed) == set(scraped), f"{family}: pushed series "
                  f"{sorted(set(pushed) ^ set(scraped))[:3]} differ from the scraped ones")
            for labels, h in scraped.items():
                p = pushed[labels]
                check(p["count"] == h["count"] and same(float(p["sum"]), float(h["sum"])),
                      f"{family}{dict(labels)}: pushed {p['count']}/{p['sum']}, scraped "
                      f"{h['count']}/{h['sum']}")
                check(zero_bounds_aside(p) == zero_bounds_aside(h),
                      f"{family}{dict(labels)}: pushed buckets {p.get('buckets', [])[:4]}... "
                      f"scraped {h.get('buckets', [])[:4]}...")
                check(same(float(h["count"]), served[(f"{family}_count", labels)]),
                      f"{family}{dict(labels)}: count is not /metrics'")
                compared += 1
                buckets += len(h.get("buckets", []))
        check(compared >= 3, f"only {compared} native series compared")
        check(registry.stop() == 0, "the registry did not exit cleanly on SIGTERM")
        return (f"{compared} native series ({buckets} buckets) pushed as OTLP exponential "
                f"histograms ({temporality}) equal the scraped ones ({traffic})")
    finally:
        for p in (prom, registry):
            if p:
                p.kill()


# --- UTF-8 names ---------------------------------------------------------------------------

# The OpenTelemetry semantic conventions' names of the families and attributes of
# `naming: otel` (HTTP semantic conventions, stable part), written out here from the
# conventions, not from towerscope.
OTEL_NAMES = {
    "http_server_request_duration_seconds": "http.server.request.duration",
    "http_server_active_requests": "http.server.active_requests",
    "http_client_request_duration_seconds": "http.client.request.duration",
    # Database client semantic conventions (stable part).
    "db_client_operation_duration_seconds": "db.client.operation.duration",
}
OTEL_ATTRIBUTES = {
    "http_request_method": "http.request.method",
    "http_response_status_code": "http.response.status_code",
    "http_route": "http.route",
    "network_protocol_version": "network.protocol.version",
    "url_scheme": "url.scheme",
    "server_address": "server.address",
    "server_port": "server.port",
    "error_type": "error.type",
    "db_system_name": "db.system.name",
    "db_operation_name": "db.operation.name",
    "db_namespace": "db.namespace",
    "db_response_status_code": "db.response.status_code",
}


def utf8_series(name, labels):
    """The UTF-8 form of an underscored sample (name, labels) of a conventions' family."""
    for legacy, otel in OTEL_NAMES.items():
        if name == legacy or name.startswith(legacy + "_"):
            name = otel + name[len(legacy):]
            labels = tuple(sorted((OTEL_ATTRIBUTES.get(k, k), v) for k, v in labels))
            return name, labels
    return None


def part_utf8(args, work):
    registry, servers = None, []
    try:
        registry = Registry(args.registry, work, metric={
            "naming": "otel", "utf8_names": True, "histogram": "both"},
            trace={"enabled": False}, traffic_seconds=10)
        global_ = {"scrape_interval": "1s", "scrape_timeout": "1s"}
        for name, extra in (("utf8", {}),
                            ("underscores", {"metric_name_escaping_scheme": "underscores"}),
                            ("native", {"scrape_native_histograms": True}),
                            ("native-underscores", {"scrape_native_histograms": True,
                                                    "metric_name_escaping_scheme": "underscores"})):
            servers.append(Prometheus(args.prometheus, work, {
                "global": global_, "scrape_configs": [scrape_config(registry, **extra)]},
                name=f"prometheus-{name}"))
        utf8, underscores, native, native_underscores = servers
        for prom in servers:
            targets = prom.wait_targets_up(1)
            check(not targets[0]["lastError"], f"scrape error: {targets[0]['lastError']}")
        # The OpenTelemetry dashboard's native row reads the underscored names (while the
        # traffic runs: rate() needs them to move).
        panels = check_native_panels(native_underscores, args.otel_dashboard, "",
                                     "http_server_request_duration_seconds")
        traffic = registry.wait_traffic_done(60)
        served = settled_samples(registry)
        # UTF-8: the conventions' names, with /metrics' values; no underscored twin.
        expected = {utf8_series(*k): v for k, v in served.items() if utf8_series(*k)}
        check(any(n == "http.server.request.duration_bucket" for n, _ in expected),
              "no http.server.request.duration buckets expected")
        stored = {}
        for name in sorted({n for n, _ in expected}):
            for series in utf8.query(f'{{"{name}"}}'):
                labels = {k: v for k, v in series["metric"].items()
                          if k not in ("__name__", "job", "instance")}
                stored[(name, label_key(labels))] = float(series["value"][1])
        equal_samples(expected, stored, "UTF-8 names")
        check(not utf8.query("http_server_request_duration_seconds_count"),
              "the UTF-8 Prometheus also stores the underscored name")
        # Underscores: today's names only.
        legacy = {k: v for k, v in served.items() if utf8_series(*k)}
        equal_samples(legacy, stored_classic(underscores, legacy, "registry-demo"),
                      "escaping underscores")
        check(not underscores.query('{"http.server.request.duration_count"}'),
              "the underscores Prometheus stores a UTF-8 name")
        # Native over protobuf: the plain name.
        natives = native_series(native, "http.server.request.duration")
        check(natives and all("http.request.method" in dict(k) for k in natives),
              f"native http.server.request.duration: {list(natives)[:2]}")
        check(registry.stop() == 0, "the registry did not exit cleanly on SIGTERM")
        return (f"{len(expected)} series under the conventions' UTF-8 names equal /metrics', "
                f"{len(legacy)} underscored with escaping=underscores, {len(natives)} native "
                f"http.server.request.duration series over protobuf; {panels} native panels of "
                f"the OpenTelemetry dashboard answer ({traffic})")
    finally:
        for p in (*servers, registry):
            if p:
                p.kill()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prometheus", required=True, help="Prometheus 3.16")
    p.add_argument("--jaeger", required=True, help="Jaeger v2")
    p.add_argument("--registry", default="target/debug/examples/registry_demo")
    p.add_argument("--accuracy", default="target/debug/examples/histogram_accuracy")
    p.add_argument("--towerscope", default="target/debug/towerscope", help="the command")
    p.add_argument("--openapi", default="../shared/data/harbor-swagger.yaml")
    p.add_argument("--dashboard", default="dashboards/towerscope.json")
    p.add_argument("--otel-dashboard", default="dashboards/towerscope-otel.json")
    p.add_argument("--part", action="append", choices=PARTS, help="default: all")
    args = p.parse_args()
    failed = 0
    for part in args.part or PARTS:
        with tempfile.TemporaryDirectory(prefix=f"prometheus3_native_e2e.{part}.") as work:
            try:
                if part == "native":
                    summary = part_native(args, work)
                elif part == "accuracy":
                    summary = part_accuracy(args, work)
                elif part == "utf8":
                    summary = part_utf8(args, work)
                else:
                    summary = part_otlp_native(args, work, part.rsplit("-", 1)[1])
                print(f"prometheus3_native_e2e: ok: {part}: {summary}", flush=True)
            except Failure as err:
                failed += 1
                print(f"prometheus3_native_e2e: FAIL: {part}: {err}", flush=True)
                for name in sorted(os.listdir(work)):
                    if name.endswith(".log"):
                        with open(os.path.join(work, name)) as f:
                            print(f"--- {name}:\n{f.read()[-3000:]}", file=sys.stderr)
    print(f"prometheus3_native_e2e: {len(args.part or PARTS) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
