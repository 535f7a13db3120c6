#!/usr/bin/env python3
"""Spans into a real Jaeger v2, through every export mode, read back through its query API.

For each mode (OTLP gRPC, OTLP http/protobuf with gzip, Jaeger agent over UDP in the compact
protocol, Jaeger collector over HTTP in the binary protocol) this starts a Jaeger v2 (built from
its Go module by interop/backends/build.sh; in-memory storage, every port chosen here), then two
`soak_service` processes exporting to it: a front service whose `POST /relay` calls the
downstream service's `POST /items` through towerscope's instrumented reqwest client; the
downstream inserts the item in a traced sqlx transaction and queues an `INDEX` job. A few more
requests give a panic (500), a deliberate 503 with a logged warning, a plain read, and a burst
of 100 relayed reads (400 spans, in several export batches: every trace must be whole). Both
processes are stopped with SIGTERM (flushing their spans), then the traces are read back from
Jaeger's `/api/v3/traces/{id}` (and the older `/api/traces/{id}`) and checked as a user would
look at them: the five spans of the relay trace and their parent links, the job's span link,
the service names and resource attributes, the HTTP attributes, `request_id` and `operation`,
the span kinds, the error statuses and the event. Every span the services say they exported
must be in Jaeger.

    interop/jaeger_e2e.py --jaeger BIN --service target/debug/examples/soak_service [--mode M]...

Prints one line per mode (`jaeger_e2e: <mode>: N spans sent, N in Jaeger ...`) and exits 1 on
the first failed check, with Jaeger's and the services' logs.
"""

import argparse
import json
import os
import re
import sys
import tempfile
import time

from e2e_backends import (Failure, Jaeger, Process, check, free_port, hex_id, http,
                          wait_for)

MODES = ("otlp-grpc", "otlp-http", "jaeger-agent", "jaeger-collector")
# Relayed reads sent in a row after the checked requests, and the spans of each one's trace.
BURST = 100
BURST_TRACE = ["downstream/GET /items/{id}", "downstream/tx-getItem", "front/GET",
               "front/GET /relay"]


# --- the services ------------------------------------------------------------------------

class Service(Process):
    """A soak_service process exporting its spans with `exporter` (a `trace:` block's part)."""

    def __init__(self, binary, work, name, exporter, upstream=None):
        self.port, self.metrics_port = free_port(), free_port()
        config = {
            "metric": {"port": self.metrics_port},
            "trace": dict({
                "enabled": True, "service_name": name, "service_version": "1.2.3",
                "namespace": "towerscope-e2e", "sample_rate": 1,
                "attributes": {"deployment.environment": "ci"}, "echo_traceparent": True,
            }, **exporter),
        }
        path = os.path.join(work, f"{name}.yml")
        with open(path, "w") as f:
            json.dump(config, f)  # JSON is YAML
        argv = [binary, "--config", path, "--listen", f"127.0.0.1:{self.port}"]
        if upstream:
            argv += ["--upstream", upstream.url]
        super().__init__(name, argv, work, env={"RUST_LOG": "warn", "RUST_BACKTRACE": "0"})
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(f"{name} to listen", lambda: self.alive() and
                 http("GET", f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2)[0] == 200)

    def metrics(self, comp=None):
        url = f"http://127.0.0.1:{self.metrics_port}/metrics" + (f"?comp={comp}" if comp else "")
        return http("GET", url)[2].decode()

    def report(self):
        """SIGTERM; the shutdown report's counts ({ended, exported, ...})."""
        self.stop()
        with open(self.log_path) as f:
            for line in f:
                if line.startswith('{"shutdown"'):
                    return json.loads(line)["shutdown"]["report"]
        raise Failure(f"{self.name}: no shutdown report: {self.logs()}")


def request(service, method, path, request_id, body=None):
    status, headers, _ = http(method, service.url + path, body=body,
                              headers={"X-Request-ID": request_id})
    traceparent = headers.get("traceparent", "")
    m = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-0[0-3]", traceparent)
    check(m, f"{method} {path}: no traceparent in the answer ({status}, {dict(headers)})")
    return status, m.group(1), m.group(2)


# --- the checks --------------------------------------------------------------------------

def by_name(spans, name, service):
    found = [s for s in spans if s["name"] == name and s["service"] == service]
    check(len(found) == 1, f"expected one span {name!r} of {service}, got {len(found)}: "
          + ", ".join(f"{s['service']}/{s['name']}" for s in spans))
    return found[0]


def kind(span):
    # OTLP JSON: an enum name ("SPAN_KIND_SERVER") or its number (2).
    k = span.get("kind", 0)
    names = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
    return names.get(k, k.replace("SPAN_KIND_", "") if isinstance(k, str) else k)


def status_code(span):
    code = span.get("status", {}).get("code", 0)
    names = {0: "UNSET", 1: "OK", 2: "ERROR"}
    return names.get(code, code.replace("STATUS_CODE_", "") if isinstance(code, str) else code)


def check_server_span(span, service, method, route, path, status, request_id, operation):
    a = span["attributes"]
    where = f"{service} {method} {route}"
    check(kind(span) == "SERVER", f"{where}: kind {kind(span)}")
    check(a.get("http.request.method") == method, f"{where}: http.request.method {a}")
    check(a.get("http.route") == route, f"{where}: http.route {a}")
    check(a.get("url.path") == path, f"{where}: url.path {a}")
    check(a.get("http.response.status_code") == status, f"{where}: http.response.status_code {a}")
    check(a.get("request_id") == request_id, f"{where}: request_id {a}")
    check(a.get("operation") == operation, f"{where}: operation {a}")


def check_resource(span, service):
    r = span["resource"]
    check(r.get("service.name") == service, f"{span['name']}: service.name {r}")
    check(r.get("service.namespace") == "towerscope-e2e", f"{span['name']}: service.namespace {r}")
    check(r.get("service.version") == "1.2.3", f"{span['name']}: service.version {r}")
    check(r.get("deployment.environment") == "ci", f"{span['name']}: attributes {r}")
    check(r.get("telemetry.sdk.language") == "rust", f"{span['name']}: telemetry.sdk {r}")


def run_mode(mode, args, work):
    started = time.time()
    jaeger = Jaeger(args.jaeger, work)
    services = []
    try:
        exporter = jaeger.exporter(mode)
        front_name, down_name = f"e2e-front-{mode}", f"e2e-downstream-{mode}"
        down = Service(args.service, work, down_name, exporter)
        services.append(down)
        front = Service(args.service, work, front_name, exporter, upstream=down)
        services.append(front)

        status, relay_trace, relay_span = request(front, "POST", "/relay", f"relay-{mode}",
                                                  body=b"an item from the e2e test")
        check(status == 201, f"POST /relay answered {status}")
        status, panic_trace, _ = request(front, "GET", "/panic", f"panic-{mode}")
        check(status == 500, f"GET /panic answered {status}")
        status, unavailable_trace, _ = request(front, "GET", "/unavailable", f"unavail-{mode}")
        check(status == 503, f"GET /unavailable answered {status}")
        status, read_trace, _ = request(down, "GET", "/items/1", f"read-{mode}")
        check(status == 200, f"GET /items/1 answered {status}")
        # A burst of relayed reads: four spans each, in batches the exporters split.
        burst = set()
        for i in range(BURST):
            status, trace_id, _ = request(front, "GET", "/relay", f"burst-{mode}-{i}")
            check(status == 200, f"GET /relay answered {status}")
            burst.add(trace_id)
        # The downstream's INDEX job runs on its worker after the answer: wait for its end.
        wait_for("the queued job to finish", lambda: re.search(
            r'^task_total\{type="INDEX",status="success"\} 1$', down.metrics("jobservice"), re.M))

        reports = {s.name: s.report() for s in services}
        sent = sum(r["exported"] for r in reports.values())
        for name, r in reports.items():
            check(r["failed"] == 0 and r["dropped"] == 0 and r["unexported"] == 0,
                  f"{name}: spans lost on the way out: {r}")

        # Every span both services exported is stored (the batch processor flushes in 100 ms).
        def stored():
            spans = jaeger.find(front_name, started) + jaeger.find(down_name, started)
            return spans if len(spans) >= sent else None
        try:
            spans = wait_for(f"{sent} spans in Jaeger", stored, seconds=20, interval=0.25)
        except Failure:
            spans = jaeger.find(front_name, started) + jaeger.find(down_name, started)
            raise Failure(f"{sent} spans exported, {len(spans)} in Jaeger: "
                          + ", ".join(sorted(f"{s['service']}/{s['name']}" for s in spans)))
        check(len(spans) == sent, f"{sent} spans exported, {len(spans)} in Jaeger (duplicates?)")
        per_trace = {}
        for s in spans:
            per_trace.setdefault(hex_id(s["traceId"]), []).append(s)
        for trace_id in burst:
            names = sorted(f"{s['service'].split('-')[1]}/{s['name']}" for s in per_trace[trace_id])
            check(names == BURST_TRACE, f"burst trace {trace_id}: {names}")
        if args.dump:
            with open(os.path.join(args.dump, f"{mode}.json"), "w") as f:
                json.dump(spans, f, indent=1, sort_keys=True)

        check_relay_trace(jaeger, mode, relay_trace, relay_span, front_name, down_name)
        job = check_job(jaeger, spans, relay_trace, down_name, mode)
        check_errors(jaeger, mode, panic_trace, unavailable_trace, front_name)
        read = jaeger.trace(read_trace)
        server = by_name(read, "GET /items/{id}", down_name)
        check_server_span(server, down_name, "GET", "/items/{id}", "/items/1", 200,
                          f"read-{mode}", "/items/{id}")
        tx = by_name(read, "tx-getItem", down_name)
        check(hex_id(tx["parentSpanId"]) == hex_id(server["spanId"]), "tx-getItem's parent")

        # The older API answers the same trace with the same spans.
        v1 = jaeger.trace_v1(relay_trace)
        v1_ids = sorted(s["spanID"] for s in v1["spans"])
        v3_ids = sorted(hex_id(s["spanId"]) for s in jaeger.trace(relay_trace))
        check(v1_ids == v3_ids, f"/api/traces and /api/v3/traces disagree: {v1_ids} {v3_ids}")
        return sent, len(spans), job
    except Failure:
        for s in services:
            s.kill()
        print(f"--- jaeger log:\n{jaeger.logs()}", file=sys.stderr)
        for s in services:
            print(f"--- {s.name} log:\n{s.logs()}", file=sys.stderr)
        raise
    finally:
        for s in services:
            s.kill()
        jaeger.stop()


def check_relay_trace(jaeger, mode, trace_id, front_span_id, front, down):
    """front POST /relay -> front client span -> downstream POST /items -> tx-createItem."""
    spans = jaeger.trace(trace_id)
    server = by_name(spans, "POST /relay", front)
    check(hex_id(server["spanId"]) == front_span_id, "the echoed traceparent names the server span")
    check(not server.get("parentSpanId"), f"the front span has a parent: {server}")
    check_server_span(server, front, "POST", "/relay", "/relay", 201, f"relay-{mode}",
                      "/relay")
    check_resource(server, front)
    client = by_name(spans, "POST", front)
    check(kind(client) == "CLIENT", f"client span kind {kind(client)}")
    check(hex_id(client["parentSpanId"]) == hex_id(server["spanId"]), "client span's parent")
    ca = client["attributes"]
    check(ca.get("http.request.method") == "POST" and ca.get("http.response.status_code") == 201,
          f"client span attributes {ca}")
    check(ca.get("url.full", "").endswith("/items"), f"client span url.full {ca}")
    check(ca.get("operation") == "createItem", f"client span operation {ca}")
    downstream = by_name(spans, "POST /items", down)
    check(hex_id(downstream["parentSpanId"]) == hex_id(client["spanId"]),
          "the downstream server span's parent is the front's client span")
    # The request id travels with the call (X-Request-ID is forwarded).
    check_server_span(downstream, down, "POST", "/items", "/items", 201, f"relay-{mode}",
                      "/items")
    check_resource(downstream, down)
    tx = by_name(spans, "tx-createItem", down)
    check(hex_id(tx["parentSpanId"]) == hex_id(downstream["spanId"]), "tx span's parent")
    check(tx["attributes"].get("outcome") == "commit", f"tx span attributes {tx['attributes']}")
    check(len(spans) == 4, f"the relay trace holds {len(spans)} spans: "
          + ", ".join(f"{s['service']}/{s['name']}" for s in spans))


def check_job(jaeger, spans, relay_trace, down, mode):
    """The job the downstream queued: a trace of its own, linked to the enqueuing span."""
    relay = jaeger.trace(relay_trace)
    enqueuer = by_name(relay, "POST /items", down)
    jobs = [s for s in spans if s["name"] == "run-job"]
    check(len(jobs) == 1, f"expected one run-job span, got {len(jobs)}")
    job = jobs[0]
    check(hex_id(job["traceId"]) != relay_trace, "the job is a trace of its own")
    links = [(hex_id(l["traceId"]), hex_id(l["spanId"])) for l in job.get("links", [])]
    check(links == [(relay_trace, hex_id(enqueuer["spanId"]))],
          f"run-job links {links}, expected the enqueuing span {enqueuer['spanId']}")
    a = job["attributes"]
    check(a.get("job.name") == "INDEX" and a.get("job.status") == "success", f"job attrs {a}")
    check(a.get("request_id") == f"relay-{mode}", f"the job carries the enqueuer's id: {a}")
    job_trace = jaeger.trace(hex_id(job["traceId"]))
    tx = by_name(job_trace, "tx-indexItem", down)
    check(hex_id(tx["parentSpanId"]) == hex_id(job["spanId"]), "the job's tx span's parent")
    return f"run-job linked to {enqueuer['name']}"


def check_errors(jaeger, mode, panic_trace, unavailable_trace, front):
    panic = by_name(jaeger.trace(panic_trace), "GET /panic", front)
    check_server_span(panic, front, "GET", "/panic", "/panic", 500, f"panic-{mode}", "/panic")
    check(status_code(panic) == "ERROR", f"a panic's span status {panic.get('status')}")
    unavailable = by_name(jaeger.trace(unavailable_trace), "GET /unavailable", front)
    check_server_span(unavailable, front, "GET", "/unavailable", "/unavailable", 503,
                      f"unavail-{mode}", "/unavailable")
    check(status_code(unavailable) == "ERROR", f"a 503's span status {unavailable.get('status')}")
    events = [e for e in unavailable["events"] if e["name"] == "deliberately unavailable"]
    check(len(events) == 1, f"the logged warning is not an event: {unavailable['events']}")
    check(events[0]["attributes"].get("retry_after") == 1, f"event attributes {events[0]}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jaeger", required=True, help="the jaeger binary (Jaeger v2)")
    p.add_argument("--service", default="target/debug/examples/soak_service")
    p.add_argument("--mode", action="append", choices=MODES, help="default: all four")
    p.add_argument("--dump", help="a directory to write each mode's spans to, as Jaeger gave them")
    args = p.parse_args()
    failed = 0
    for mode in args.mode or MODES:
        with tempfile.TemporaryDirectory(prefix=f"jaeger_e2e.{mode}.") as work:
            try:
                sent, stored, job = run_mode(mode, args, work)
                print(f"jaeger_e2e: ok: {mode}: {sent} spans sent, {stored} in Jaeger; relay trace "
                      f"front server -> client -> downstream server -> tx; {job}; 500 and 503 "
                      f"ERROR, event kept; /api/traces agrees", flush=True)
            except Failure as err:
                failed += 1
                print(f"jaeger_e2e: FAIL: {mode}: {err}", flush=True)
    print(f"jaeger_e2e: {len(args.mode or MODES) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
