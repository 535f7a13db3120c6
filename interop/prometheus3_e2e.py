#!/usr/bin/env python3
"""The example registry against Prometheus 3.16 (built by interop/backends/build.sh).

Parts (all by default, or those named with --part):

- `exemplars`: the registry exports its spans to a Jaeger v2 over OTLP and serves its metrics
  with histogram buckets; a Prometheus 3 with exemplar storage scrapes it with its default
  scrape protocols (OpenMetrics 1.0.0 with `escaping=allow-utf-8` first, which the exemplars
  prove was taken). Every exemplar Prometheus stores for the request counter and the duration
  buckets names a server span that Jaeger shows, in the trace and with the span id the
  exemplar gives.
- `otlp-cumulative`, `otlp-delta`, `otlp-otel`: the registry pushes its metrics (`metric.otlp`,
  http/protobuf, every second) to Prometheus 3's own OTLP receiver (`--web.enable-otlp-receiver`;
  `--enable-feature=otlp-deltatocumulative` for delta). After the registry's own traffic has
  stopped and two more pushes have landed, every series of /metrics (process and runtime
  families aside: they move between the push and the scrape) must be in Prometheus with the
  same labels and the same value: counters, gauges, summaries (quantiles, sum, count) and
  histograms (every bucket, sum, count), as Prometheus translates the OTLP names (Harbor naming:
  the names are the same; `naming: otel`: the conventions' names, `http.server.request.duration`
  -> `http_server_request_duration_seconds`, attribute `http.request.method` -> label
  `http_request_method`, which is also what /metrics serves for that naming).

    interop/prometheus3_e2e.py --prometheus BIN --jaeger BIN [--registry BIN] [--part P]...
"""

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from e2e_backends import (Failure, Jaeger, Process, Prometheus, check, free_port, hex_id,
                          http, wait_for)

# The OTLP parts: (temporality, naming).
OTLP_PARTS = {
    "otlp-cumulative": ("cumulative", "harbor"),
    "otlp-delta": ("delta", "harbor"),
    "otlp-otel": ("cumulative", "otel"),
}
PARTS = ("exemplars", "protobuf", "rules", *OTLP_PARTS)


class Registry(Process):
    """The example registry with a configuration built from `metric` and `trace`, generating its
    own traffic (`--traffic`) for `traffic_seconds`."""

    def __init__(self, binary, work, metric, trace, traffic_seconds):
        self.port = free_port()
        self.metrics_port = metric["port"] = free_port()
        config = {"listen": f"127.0.0.1:{self.port}", "metric": metric, "trace": trace}
        path = os.path.join(work, "registry.yml")
        with open(path, "w") as f:
            json.dump(config, f)
        argv = [binary, "--config", path, "--traffic", "--traffic-seconds", str(traffic_seconds)]
        super().__init__("registry", argv, work, env={"RUST_LOG": "warn"})
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        wait_for("the registry to listen", lambda: self.alive() and
                 http("GET", self.metrics_url, timeout=2)[0] == 200)

    def wait_traffic_done(self, seconds):
        """Waits for the traffic generator's summary line; the line."""
        def done():
            self.alive()
            m = re.search(r"^traffic: done: .*$", self.logs(tail=100000), re.M)
            return m and m.group(0)
        return wait_for("the registry's traffic to end", done, seconds=seconds, interval=0.2)

    def scrape(self, accept=None):
        status, headers, body = http("GET", self.metrics_url,
                                     headers={"Accept": accept} if accept else None)
        check(status == 200, f"/metrics answered {status}")
        return headers, body.decode(errors="replace")


# --- exemplars -----------------------------------------------------------------------------

def part_exemplars(args, work):
    jaeger = Jaeger(args.jaeger, work)
    registry = prom = None
    try:
        otel = jaeger.exporter("otlp-http")["otel"]
        registry = Registry(args.registry, work,
                            metric={"buckets": [0.005, 0.05, 0.5, 5]},
                            trace={"enabled": True, "service_name": "registry-demo",
                                   "otel": otel}, traffic_seconds=4)
        # Prometheus 3's default scrape protocols: nothing set.
        prom = Prometheus(args.prometheus, work, {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{"job_name": "registry-demo", "static_configs": [
                {"targets": [f"127.0.0.1:{registry.metrics_port}"]}]}],
        }, flags=["--enable-feature=exemplar-storage"])
        traffic = registry.wait_traffic_done(60)
        targets = prom.wait_targets_up(1)
        check(not targets[0]["lastError"], f"scrape error: {targets[0]['lastError']}")
        # What Prometheus 3 asks for first is what the registry answers.
        headers, _ = registry.scrape(PROMETHEUS3_ACCEPT)
        check(headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0"),
              f"Prometheus 3's Accept answered with {headers['Content-Type']}")
        now = time.time()
        exemplars = {}
        for query in ("http_request_total", "http_request_duration_seconds_bucket"):
            data = prom.api("query_exemplars", query=query, start=f"{now - 600:.3f}",
                            end=f"{now + 60:.3f}")
            found = {(e["labels"]["trace_id"], e["labels"]["span_id"])
                     for series in data for e in series["exemplars"]}
            check(found, f"no exemplars stored for {query}")
            exemplars[query] = found
        prom.stop()
        check(registry.stop() == 0, "the registry did not exit cleanly on SIGTERM")
        shown = spans_in_jaeger(jaeger, set().union(*exemplars.values()))
        return (f"{len(exemplars['http_request_total'])} exemplars on the counter, "
                f"{len(exemplars['http_request_duration_seconds_bucket'])} on the buckets, "
                f"all {shown} spans shown by Jaeger ({traffic})")
    finally:
        for p in (prom, registry):
            if p:
                p.kill()
        jaeger.stop()


def spans_in_jaeger(jaeger, exemplars):
    """Checks that every exemplar's (trace id, span id) is a server span of the registry in
    Jaeger; how many."""
    shown = 0
    for trace_id, span_id in sorted(exemplars):
        spans = wait_for(f"trace {trace_id} in Jaeger",
                         lambda: jaeger.trace(trace_id), seconds=10, interval=0.2)
        span = [s for s in spans if hex_id(s["spanId"]) == span_id]
        check(span, f"exemplar {trace_id}/{span_id}: no such span in Jaeger's trace "
              f"({[(s['name'], hex_id(s['spanId'])) for s in spans]})")
        check(span[0].get("kind") in (2, "SPAN_KIND_SERVER"),
              f"exemplar span {span[0]['name']} is not a server span")
        check(span[0]["service"] == "registry-demo", f"service {span[0]['service']}")
        shown += 1
    return shown


# What Prometheus 3.16 sends with its default scrape protocols (captured from its scrapes).
PROMETHEUS3_ACCEPT = ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.7,"
                      "application/openmetrics-text;version=0.0.1;q=0.6,"
                      "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.5,"
                      "text/plain;version=0.0.4;q=0.4,*/*;q=0.3")


# --- OTLP metrics into Prometheus' receiver ------------------------------------------------

# Families that move on their own between a push and a scrape.
VOLATILE = re.compile(r"^(process_|tokio_)|metric_points_(exported|failed)_total$")


def label_key(labels):
    """The label pairs of a series, sorted, with `le` and `quantile` as numbers: their
    spelling is the exposition's (`le="1"`) in a text scrape, the OpenMetrics canonical one
    (`le="1.0"`) in Prometheus 3 whatever the scrape, another in an OTLP translation."""
    return tuple(sorted((k, float(v) if k in ("le", "quantile") else v)
                        for k, v in labels.items()))


def samples(text):
    """{(name, labels): value} of the 0.0.4 text, with prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if VOLATILE.search(s.name):
                continue
            out[(s.name, label_key(s.labels))] = s.value
    return out


def stored(prom, names):
    """{(name, labels): value} of the latest samples of `names` in Prometheus; the labels the
    OTLP receiver adds (job, instance from the resource) left out."""
    out = {}
    for name in names:
        for series in prom.query(f'{{__name__="{name}"}}'):
            labels = {k: v for k, v in series["metric"].items()
                      if k not in ("__name__", "job", "instance")}
            out[(name, label_key(labels))] = float(series["value"][1])
    return out


def same(a, b):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def settled_samples(registry):
    """/metrics once the registry's own work has stopped moving it (the GC run its traffic
    scheduled ends on a worker of its own), and then 2.5 s more: two pushes or scrapes."""
    def settled():
        first = samples(registry.scrape()[1])
        time.sleep(1.2)
        second = samples(registry.scrape()[1])
        return second if first == second else None
    before = wait_for("the registry's metrics to settle", settled, seconds=30, interval=0)
    time.sleep(2.5)
    served = samples(registry.scrape()[1])
    check(served == before, "the registry's metrics moved while nothing ran: "
          + str(sorted(set(served.items()) ^ set(before.items()))[:6]))
    return served


def compare(prom, served, naming="harbor"):
    """Every series of `served` is in Prometheus with the same value; a summary of what was
    compared."""
    in_prom = stored(prom, sorted({name for name, _ in served}))
    missing = [k for k in served if k not in in_prom]
    check(not missing, f"{len(missing)} of {len(served)} series not in Prometheus, e.g. "
          f"{missing[:5]}; Prometheus has {sorted(in_prom)[:5]}")
    wrong = [(k, served[k], in_prom[k]) for k in served if not same(served[k], in_prom[k])]
    check(not wrong, f"{len(wrong)} series differ (series, /metrics, Prometheus): {wrong[:5]}")
    quantiles = sum(1 for _, labels in served if any(k == "quantile" for k, _ in labels))
    buckets = sum(1 for name, _ in served if name.endswith("_bucket"))
    check(any(name.endswith("_total") for name, _ in served), "no counter compared")
    check(buckets > 0, "no histogram bucket compared")
    if naming == "harbor":
        check(quantiles > 0, "no summary quantile compared")
    else:
        check(any(n == "http_server_request_duration_seconds_bucket" for n, _ in served),
              "no http_server_request_duration_seconds under naming: otel")
    return (f"{len(served)} series equal in Prometheus and on /metrics ({buckets} buckets, "
            f"{quantiles} quantiles")


def part_otlp(args, work, temporality, naming):
    prom_flags = ["--web.enable-otlp-receiver"]
    if temporality == "delta":
        prom_flags.append("--enable-feature=otlp-deltatocumulative")
    prom = Prometheus(args.prometheus, work, {"global": {"scrape_interval": "15s"}},
                      flags=prom_flags)
    registry = None
    try:
        metric = {"namespace": "harbor", "subsystem": "core", "naming": naming, "otlp": {
            "endpoint": prom.url.removeprefix("http://"), "insecure": True,
            "url_path": "/api/v1/otlp/v1/metrics", "interval_secs": 1,
            "temporality": temporality}}
        registry = Registry(args.registry, work, metric=metric,
                            trace={"enabled": False}, traffic_seconds=3)
        traffic = registry.wait_traffic_done(60)
        served = settled_samples(registry)
        _, pushes = registry.scrape()
        pushed = re.search(r'metric_points_exported_total\{exporter="otlp"\} (\d+)', pushes)
        failed = re.search(r'metric_points_failed_total\{exporter="otlp"\} (\d+)', pushes)
        check(pushed and int(pushed.group(1)) > 0, f"no points pushed: {pushed}")
        check(failed and int(failed.group(1)) == 0, f"pushes failed: {failed}")
        summary = compare(prom, served, naming)
        check(registry.stop() == 0, "the registry did not exit cleanly on SIGTERM")
        return f"{summary}; {pushed.group(1)} points pushed, 0 failed; {traffic})"
    finally:
        if registry:
            registry.kill()
        prom.stop()


# What Prometheus 3.16 sends with `scrape_native_histograms: true`: protobuf first.
PROMETHEUS3_NATIVE_ACCEPT = ("application/vnd.google.protobuf;proto=io.prometheus.client."
                             "MetricFamily;encoding=delimited;q=0.7,"
                             "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;"
                             "q=0.6,text/plain;version=0.0.4;q=0.3,*/*;q=0.2")


def part_protobuf(args, work):
    """Prometheus 3 scraping the protobuf exposition (`scrape_protocols: [PrometheusProto]`,
    which it asks for first with `scrape_native_histograms: true`): every series of the text
    `/metrics` stored with the same value, and the exemplars kept."""
    registry = prom = None
    try:
        # Harbor's summaries beside Distribution's histograms (the `registry_` families).
        registry = Registry(args.registry, work, metric={},
                            trace={"enabled": False}, traffic_seconds=3)
        headers, _ = registry.scrape(PROMETHEUS3_NATIVE_ACCEPT)
        check(headers["Content-Type"].startswith("application/vnd.google.protobuf; "
                                                 "proto=io.prometheus.client.MetricFamily; "
                                                 "encoding=delimited"),
              f"Prometheus 3's native-histogram Accept answered with {headers['Content-Type']}")
        prom = Prometheus(args.prometheus, work, {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{
                "job_name": "registry-demo", "scrape_protocols": ["PrometheusProto"],
                "scrape_native_histograms": True,
                "static_configs": [{"targets": [f"127.0.0.1:{registry.metrics_port}"]}]}],
        })
        traffic = registry.wait_traffic_done(60)
        targets = prom.wait_targets_up(1)
        check(not targets[0]["lastError"], f"scrape error: {targets[0]['lastError']}")
        served = settled_samples(registry)
        summary = compare(prom, served)
        check(registry.stop() == 0, "the registry did not exit cleanly on SIGTERM")
        return f"{summary}; {traffic})"
    finally:
        for p in (prom, registry):
            if p:
                p.kill()


def part_rules(args, work):
    """`towerscope rules --durations histogram --latency 1` (Harbor's document, the example
    registry's operations) evaluated by Prometheus 3 over the registry's scraped histograms:
    the slow-request ratios have values, so the rules' `le` matcher finds the 1 s bucket as
    Prometheus 3 stores it (`le="1.0"`); and by Debian's Prometheus 2.42, which keeps the text
    scrape's `le="1"`, when it is installed."""
    rules = os.path.join(work, "rules.yml")
    with open(rules, "w") as f:
        subprocess.run([args.towerscope, "rules", "--openapi", args.openapi, "--prefix",
                        "harbor_core_", "--durations", "histogram", "--latency", "1"],
                       stdout=f, check=True, stderr=subprocess.DEVNULL)
    registry = Registry(args.registry, work, metric={
        "namespace": "harbor", "subsystem": "core", "buckets": [0.005, 0.05, 0.5, 1, 5]},
        trace={"enabled": False}, traffic_seconds=12)
    servers, found = [], []
    try:
        binaries = [("3.16", args.prometheus)]
        if shutil.which("prometheus"):
            binaries.append(("2.42", shutil.which("prometheus")))
        for version, binary in binaries:
            servers.append((version, Prometheus(binary, work, {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [rules],
                "scrape_configs": [{"job_name": "registry-demo", "static_configs": [
                    {"targets": [f"127.0.0.1:{registry.metrics_port}"]}]}],
            }, name=f"prometheus-{version}")))
        # Read while the traffic runs: rate() needs the counters to move between scrapes.
        for version, prom in servers:
            prom.wait_targets_up(1)
            record = "operation:harbor_core_http_slow_requests:ratio_rate5m"
            ratios = wait_for(f"{record} in Prometheus {version}",
                              lambda: [r for r in prom.query(record)
                                       if not math.isnan(float(r["value"][1]))],
                              seconds=30, interval=0.5)
            found.append(f"{version}: {len(ratios)} operations")
        traffic = registry.wait_traffic_done(60)
        return f"slow-request ratios of the histogram rules ({'; '.join(found)}; {traffic})"
    finally:
        registry.kill()
        for _, prom in servers:
            prom.kill()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prometheus", required=True, help="Prometheus 3.16")
    p.add_argument("--jaeger", required=True, help="Jaeger v2")
    p.add_argument("--registry", default="target/debug/examples/registry_demo")
    p.add_argument("--towerscope", default="target/debug/towerscope", help="the command")
    p.add_argument("--openapi", default="../shared/data/harbor-swagger.yaml")
    p.add_argument("--part", action="append", choices=PARTS, help="default: all")
    args = p.parse_args()
    failed = 0
    for part in args.part or PARTS:
        with tempfile.TemporaryDirectory(prefix=f"prometheus3_e2e.{part}.") as work:
            try:
                if part == "exemplars":
                    summary = part_exemplars(args, work)
                elif part == "protobuf":
                    summary = part_protobuf(args, work)
                elif part == "rules":
                    summary = part_rules(args, work)
                else:
                    summary = part_otlp(args, work, *OTLP_PARTS[part])
                print(f"prometheus3_e2e: ok: {part}: {summary}", flush=True)
            except Failure as err:
                failed += 1
                print(f"prometheus3_e2e: FAIL: {part}: {err}", flush=True)
                for name in sorted(os.listdir(work)):
                    if name.endswith(".log"):
                        with open(os.path.join(work, name)) as f:
                            print(f"--- {name}:\n{f.read()[-3000:]}", file=sys.stderr)
    print(f"prometheus3_e2e: {len(args.part or PARTS) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
