"""What the end-to-end scripts against the real backends share: processes on loopback ports
chosen here, HTTP without third-party clients, and Jaeger v2 (started from the binary that
interop/backends/build.sh builds, read back through its query API)."""

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request


class Failure(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=10):
    """(status, headers, body bytes) of one request; HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            return res.status, res.headers, res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def wait_for(what, probe, seconds=30.0, interval=0.1):
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = probe()
        except (OSError, urllib.error.URLError, ValueError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure(f"timed out waiting for {what}")
        time.sleep(interval)


# --- Jaeger v2 ---------------------------------------------------------------------------

JAEGER_CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp, jaeger]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    traces:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_http}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp_grpc}
      http:
        endpoint: 127.0.0.1:{otlp_http}
  jaeger:
    protocols:
      thrift_compact:
        endpoint: 127.0.0.1:{thrift_compact}
      thrift_http:
        endpoint: 127.0.0.1:{thrift_http}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


class Jaeger:
    """Jaeger v2 with in-memory storage: OTLP (gRPC, HTTP) and the `jaeger` receiver's Thrift
    (compact over UDP, binary over HTTP) on ports chosen here, the query API on another."""

    def __init__(self, binary, work):
        self.ports = {name: free_port() for name in ("query_http", "query_grpc", "otlp_grpc",
                                                      "otlp_http", "thrift_http")}
        self.ports["thrift_compact"] = free_port(socket.SOCK_DGRAM)
        config = os.path.join(work, "jaeger.yaml")
        with open(config, "w") as f:
            f.write(JAEGER_CONFIG.format(**self.ports))
        # Jaeger's query service traces itself through an exporter made from the OTEL_*
        # variables (OTLP to localhost:4317 by default): not here.
        self.process = Process("jaeger", [binary, "--config", config], work,
                               env={"OTEL_TRACES_EXPORTER": "none"})
        self.query = f"http://127.0.0.1:{self.ports['query_http']}"
        wait_for("Jaeger's query API", lambda: self.process.alive() and
                 http("GET", f"{self.query}/api/v3/services", timeout=2)[0] == 200)
        # The receivers start with the pipeline; the OTLP HTTP one answers 405 to a GET.
        wait_for("Jaeger's OTLP receiver",
                 lambda: http("GET", f"http://127.0.0.1:{self.ports['otlp_http']}/v1/traces",
                              timeout=2)[0] in (400, 405))

    def logs(self):
        return self.process.logs()

    def stop(self):
        # Only the test's own data is lost if Jaeger takes long to stop.
        self.process.stop(seconds=10, must_stop=False)

    def exporter(self, mode):
        """The `trace:` exporter block for `mode`, pointed at this Jaeger."""
        p = self.ports
        return {
            "otlp-grpc": {"otel": {"endpoint": f"127.0.0.1:{p['otlp_grpc']}", "protocol": "grpc",
                                   "insecure": True}},
            "otlp-http": {"otel": {"endpoint": f"127.0.0.1:{p['otlp_http']}",
                                   "url_path": "/v1/traces", "compression": True,
                                   "insecure": True}},
            "jaeger-agent": {"jaeger": {"agent_host": "127.0.0.1",
                                        "agent_port": p["thrift_compact"]}},
            "jaeger-collector": {"jaeger": {
                "endpoint": f"http://127.0.0.1:{p['thrift_http']}/api/traces"}},
        }[mode]

    def trace(self, trace_id):
        """The spans of a trace from /api/v3 (OTLP JSON), flattened with their resource."""
        status, _, body = http("GET", f"{self.query}/api/v3/traces/{trace_id}")
        if status == 404:
            return []
        check(status == 200, f"/api/v3/traces/{trace_id}: {status} {body[:300]!r}")
        return flatten(json.loads(body))

    def find(self, service, since):
        """Every span of `service` since `since` (seconds since the epoch), from /api/v3."""
        fmt = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + "Z"
        query = urllib.parse.urlencode({
            "query.service_name": service, "query.start_time_min": fmt(since - 5),
            "query.start_time_max": fmt(time.time() + 5), "query.num_traces": 1000,
        })
        status, _, body = http("GET", f"{self.query}/api/v3/traces?{query}")
        if status == 404:
            return []
        check(status == 200, f"/api/v3/traces?{query}: {status} {body[:300]!r}")
        return [s for s in flatten(json.loads(body)) if s["service"] == service]

    def trace_v1(self, trace_id):
        """The trace from the older /api/traces/{id} (Jaeger's own JSON model)."""
        status, _, body = http("GET", f"{self.query}/api/traces/{trace_id}")
        check(status == 200, f"/api/traces/{trace_id}: {status} {body[:300]!r}")
        data = json.loads(body)["data"]
        check(len(data) == 1, f"/api/traces/{trace_id}: {len(data)} traces")
        return data[0]


def value(v):
    """An OTLP JSON AnyValue as a Python value."""
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    if "intValue" in v:
        return int(v["intValue"])
    if "arrayValue" in v:
        return [value(x) for x in v["arrayValue"].get("values", [])]
    return v


def attributes(kvs):
    return {kv["key"]: value(kv.get("value", {})) for kv in kvs or []}


def hex_id(raw):
    """A span or trace id as lowercase hex (Jaeger's JSON gives hex; OTLP JSON may give base64)."""
    if re.fullmatch(r"[0-9a-fA-F]+", raw or ""):
        return raw.lower()
    import base64
    return base64.b64decode(raw).hex()


def flatten(doc):
    """[{span fields..., resource: {...}, service}] from a /api/v3 answer."""
    spans = []
    for rs in doc.get("result", {}).get("resourceSpans", []):
        resource = attributes(rs.get("resource", {}).get("attributes"))
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                s = dict(s)
                s["attributes"] = attributes(s.get("attributes"))
                s["resource"] = resource
                s["service"] = resource.get("service.name")
                s["events"] = [dict(e, attributes=attributes(e.get("attributes")))
                               for e in s.get("events", [])]
                spans.append(s)
    return spans


class Process:
    """A process whose output goes to a log file in `work`, stopped by `stop()`."""

    def __init__(self, name, argv, work, env=None):
        self.name = name
        self.log_path = os.path.join(work, f"{name}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(env or {})))

    def alive(self):
        if self.proc.poll() is not None:
            raise Failure(f"{self.name} exited with {self.proc.returncode}: {self.logs()}")
        return True

    def logs(self, tail=4000):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path) as f:
            return f.read()[-tail:]

    def stop(self, sig=signal.SIGTERM, seconds=30, must_stop=True):
        """Stops the process (`sig`, then SIGKILL after `seconds`, a failure when `must_stop`);
        its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(seconds)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                if not self.log.closed:
                    self.log.close()
                if must_stop:
                    raise Failure(f"{self.name} did not stop on {sig!r}: {self.logs()}")
        if not self.log.closed:
            self.log.close()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.log.closed:
            self.log.close()


class Prometheus:
    """A Prometheus (3.16 from interop/backends/build.sh, or Debian's) on a port chosen here,
    with a temporary TSDB and the configuration `config` (a dict; JSON is YAML)."""

    def __init__(self, binary, work, config, flags=(), name="prometheus", port=None):
        port = port or free_port()
        path = os.path.join(work, f"{name}.yml")
        with open(path, "w") as f:
            json.dump(config, f)
        self.url = f"http://127.0.0.1:{port}"
        self.process = Process(name, [
            binary, f"--config.file={path}", f"--storage.tsdb.path={os.path.join(work, name)}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn", *flags], work)
        wait_for(f"{name} to be ready", lambda: self.process.alive() and
                 http("GET", f"{self.url}/-/ready", timeout=2)[0] == 200)

    def api(self, path, **params):
        """The `data` of a /api/v1 answer; a failure names the query."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        status, _, body = http("GET", url)
        check(status == 200, f"{url}: {status} {body[:300]!r}")
        return json.loads(body)["data"]

    def query(self, expr):
        return self.api("query", query=expr)["result"]

    def wait_targets_up(self, count, seconds=30):
        """Waits until `count` targets are up, each scraped at least twice without error."""
        def up():
            active = self.api("targets")["activeTargets"]
            if len(active) < count or any(t["health"] != "up" for t in active):
                return None
            series = self.query("count_over_time(up[1m])")
            return active if series and all(float(s["value"][1]) >= 2 for s in series) else None
        try:
            return wait_for(f"{count} targets up", up, seconds=seconds, interval=0.25)
        except Failure:
            raise Failure(f"targets: {self.api('targets')['activeTargets']}")

    def logs(self):
        return self.process.logs()

    def stop(self):
        self.process.stop(seconds=10, must_stop=False)

    def kill(self):
        self.process.kill()
