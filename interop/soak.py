#!/usr/bin/env python3
"""The soak: the soak service (examples/soak_service.rs: the full towerscope layer, the
instrumented reqwest client, sqlx transactions, jobs) under mixed valid and hostile traffic for
minutes, while the OTLP collector it exports to cycles through faults.

    python3 interop/soak.py --service target/debug/examples/soak_service [--fault-seconds 120]

Phases: warm-up; a fault-free baseline (valid traffic, a scrape every second, the collector up);
the faulted run (the same valid traffic, plus hostile traffic, while the collector cycles: up,
refusing connections, accepting and never answering, slow, 503 and 429 with Retry-After, 400);
a recovery; then, with the collector hung, SIGTERM. Valid traffic is open-loop (a fixed rate,
whatever the latencies), each request on its own connection.

Checked at the end (a failure exits 1 and says which):
- every in-flight gauge (server, client, job queue and concurrency) is 0;
- every label value of the server families is a route template or `unknown`, every method a
  known one or `_OTHER`: no client chose a label; the series count is printed;
- resident memory stayed under --max-rss-mib, and grew by at most --max-growth-mib between the
  end of the first fault cycle and the end of the faulted run;
- no panic escaped: the service stayed up, each panic it printed is a deliberate one, and every
  request to the panicking handler was answered 500;
- spans: ended = exported + failed + dropped + unexported, exactly, from the shutdown report,
  and exported = the spans the collector answered 200 for (decoded by opentelemetry-proto),
  exactly; no span carries a request id that fails validation;
- the shutdown (collector hung) returned within trace.shutdown_timeout_secs plus 1 s;
- valid requests all succeeded, and their median and p99 latency in the faulted run stayed
  within 1.5x and 2x of the baseline's.

Prints the figures as it goes and one JSON summary line (`SOAK {...}`) at the end. The
collector runs in a process of its own so that decoding never delays the measuring loop.
"""
import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

# --- the collector ------------------------------------------------------------------------

MODES = ["up", "refuse", "hang", "slow", "unavailable", "throttled", "bad_request"]
SLOW_SECONDS = 0.4
REQUEST_ID = re.compile(r"^[A-Za-z0-9\-_.:+/=@]{1,128}$")


def collector_main(port, mode, accepted, requests, decode_errors, bad_ids):
    """OTLP/HTTP on 127.0.0.1:port, behaving as MODES[mode.value] says."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    def count(body):
        req = trace_service_pb2.ExportTraceServiceRequest()
        req.ParseFromString(body)
        spans = 0
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans += 1
                    for kv in s.attributes:
                        if kv.key == "request_id" and not REQUEST_ID.match(kv.value.string_value):
                            with bad_ids.get_lock():
                                bad_ids.value += 1
        return spans

    async def respond(writer, status, reason, extra=b""):
        writer.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/x-protobuf\r\n%scontent-length: 0\r\n\r\n"
                     % (status, reason, extra))
        await writer.drain()

    async def handle(reader, writer, conns):
        conns.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length)
                with requests.get_lock():
                    requests.value += 1
                current = MODES[mode.value]
                if current == "hang":
                    # Never answer; the exporter's timeout ends it.
                    while await reader.read(65536):
                        pass
                    return
                if current == "slow":
                    await asyncio.sleep(SLOW_SECONDS)
                if current in ("up", "slow"):
                    try:
                        spans = count(body)
                    except Exception:
                        with decode_errors.get_lock():
                            decode_errors.value += 1
                        await respond(writer, 400, b"Bad Request")
                        continue
                    if writer.is_closing():
                        return
                    await respond(writer, 200, b"OK")
                    if writer.is_closing():
                        return
                    with accepted.get_lock():
                        accepted.value += spans
                elif current == "unavailable":
                    await respond(writer, 503, b"Service Unavailable", b"retry-after: 1\r\n")
                elif current == "throttled":
                    await respond(writer, 429, b"Too Many Requests", b"retry-after: 1\r\n")
                else:  # bad_request, or refuse reached by a request read just before
                    await respond(writer, 400, b"Bad Request")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            conns.discard(writer)
            writer.close()

    async def main():
        conns = set()
        server = None
        last = None
        while True:
            current = MODES[mode.value]
            if current != last:
                if current == "refuse":
                    if server is not None:
                        server.close()
                        server = None
                    for w in list(conns):
                        w.close()
                elif server is None:
                    server = await asyncio.start_server(
                        lambda r, w: handle(r, w, conns), "127.0.0.1", port, reuse_address=True)
                last = current
            await asyncio.sleep(0.02)

    asyncio.run(main())


# --- HTTP on raw sockets ------------------------------------------------------------------


async def exchange(port, raw, read_limit=None, timeout=15.0):
    """Sends `raw` on a new connection and reads until EOF (or `read_limit` bytes, then hangs
    up). Returns (status or None, response bytes, seconds)."""
    started = time.perf_counter()
    data = b""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        try:
            writer.write(raw)
            await writer.drain()
            async def read_all():
                nonlocal data
                while True:
                    chunk = await reader.read(65536)
                    if not chunk:
                        return
                    data += chunk
                    if read_limit is not None and len(data) >= read_limit:
                        return
            await asyncio.wait_for(read_all(), timeout)
        finally:
            writer.close()
    except (ConnectionError, asyncio.TimeoutError, OSError):
        pass
    elapsed = time.perf_counter() - started
    m = re.match(rb"HTTP/1\.1 (\d{3})", data)
    return (int(m.group(1)) if m else None), data, elapsed


def request(method, path, headers=(), body=b""):
    lines = [f"{method} {path} HTTP/1.1".encode(), b"host: soak", b"connection: close"]
    lines += [k.encode() + b": " + (v if isinstance(v, bytes) else v.encode()) for k, v in headers]
    if (body or method in ("POST", "PUT")) and not any(k == "content-length" for k, _ in headers):
        lines.append(b"content-length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def header(data, name):
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name:
            return v.strip().decode("latin-1")
    return None


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# --- traffic ------------------------------------------------------------------------------

ROUTES = {"/items", "/items/{id}", "/relay", "/stream", "/upload", "/panic"}
METHODS = {"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "_OTHER"}
HEX = "0123456789abcdef"


def rand_hex(n):
    return "".join(random.choice(HEX) for _ in range(n))


class Soak:
    def __init__(self, args, app_port, metrics_port, proc):
        self.args = args
        self.app = app_port
        self.metrics = metrics_port
        self.proc = proc
        self.phase = "warmup"
        self.latency = {"baseline": [], "faults": []}
        self.valid = {"sent": 0, "failed": 0, "failures": {}}
        self.hostile = {}
        self.panics_sent = 0
        self.panics_500 = 0
        self.id_problems = []
        self.scrapes = {"ok": 0, "failed": 0}
        self.rss = []  # (phase, seconds since start, KiB)
        self.tasks = set()
        self.started = time.monotonic()
        self.last_metrics = ""
        self.series_mid = None

    def spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # Valid requests: what a well-behaved client sends; each must succeed.
    def valid_request(self, n):
        kind = n % 10
        headers = []
        if n % 3 == 0:
            headers.append(("x-request-id", f"soak-{n}"))
        if n % 4 == 0:
            headers.append(("traceparent", f"00-{rand_hex(32)}-{rand_hex(16)}-0{n % 2}"))
        if kind < 4:
            return "getItem", request("GET", "/items/1", headers), (200,), None
        if kind < 6:
            body = os.urandom(random.randint(10, 200)).hex().encode()
            return "createItem", request("POST", "/items", headers, body), (201,), None
        if kind < 8:
            return "relay", request("GET", "/relay", headers), (200,), None
        if kind == 8:
            return "upload", request("PUT", "/upload", headers, b"u" * 16384), (200,), None
        return "stream", request("GET", "/stream?kib=64", headers), (200,), 65536

    async def one_valid(self, n):
        name, raw, ok, body_len = self.valid_request(n)
        phase = self.phase
        status, data, seconds = await exchange(self.app, raw)
        self.valid["sent"] += 1
        good = status in ok
        if good and body_len is not None:
            good = len(data.split(b"\r\n\r\n", 1)[-1]) == body_len
        if good and n % 3 == 0 and header(data, b"x-request-id") != f"soak-{n}":
            good = False
        if not good:
            self.valid["failed"] += 1
            key = f"{name}:{status}"
            self.valid["failures"][key] = self.valid["failures"].get(key, 0) + 1
        elif phase in self.latency:
            self.latency[phase].append(seconds)

    async def valid_traffic(self, until):
        n = 0
        interval = 1.0 / self.args.rate
        next_at = time.monotonic()
        while time.monotonic() < until():
            self.spawn(self.one_valid(n))
            n += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    # Hostile traffic: each kind is counted; none may take the service down or choose a label.
    def hostile_headers(self):
        choice = random.randrange(6)
        if choice == 0:
            rid = random.choice(["x" * random.randint(129, 8000), "a b", "id\"quoted\"",
                                 "é" * 10, "{{template}}", "x=1; drop table", ""])
            return [("x-request-id", rid.encode("utf-8"))], rid
        if choice == 1:
            tp = random.choice([
                f"ff-{rand_hex(32)}-{rand_hex(16)}-01", f"00-{'0' * 32}-{rand_hex(16)}-01",
                f"00-{rand_hex(32).upper()}-{rand_hex(16)}-01", f"00-{rand_hex(32)}-{rand_hex(16)}-01-extra",
                "00-" + "z" * 50, "garbage", f"00-{rand_hex(32)}-{'0' * 16}-01", "-" * 500,
            ])
            return [("traceparent", tp), ("tracestate", "a=b")], None
        if choice == 2:
            members = ",".join(f"k{i}=v{rand_hex(8)}" for i in range(random.randint(33, 400)))
            return [("traceparent", f"00-{rand_hex(32)}-{rand_hex(16)}-01"), ("tracestate", members)], None
        if choice == 3:
            baggage = ",".join(f"key{i}={'v' * random.randint(1, 300)}" for i in range(random.randint(50, 400)))
            return [("baggage", random.choice([baggage, "=;=;=", "%zz=%zz", "k=" + "x" * 9000]))], None
        if choice == 4:
            return [("uber-trace-id", random.choice([
                "a:b:c:d", f"{rand_hex(40)}:{rand_hex(16)}:0:1", "::::", "1:2:3:999999999999",
                f"{rand_hex(32)}:{rand_hex(16)}:0:1:extra", "%%%", "0:0:0:0"]))], None
        return [("x-request-id", "ok-" + rand_hex(8)), ("traceparent", "00-" + rand_hex(31) + "-" + rand_hex(16) + "-01"),
                ("baggage", "a=%ff%fe"), ("uber-trace-id", "x" * 300)], None

    async def one_hostile(self):
        kind = random.choice(["method", "long_method", "path", "headers", "headers", "abort_request",
                              "abort_body", "panic", "garbage", "slow_scrape"])
        self.hostile[kind] = self.hostile.get(kind, 0) + 1
        if kind == "method":
            token = "".join(random.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ!#$%&'*+-.^_`|~0123456789")
                            for _ in range(random.randint(1, 24)))
            await exchange(self.app, request(token, random.choice(["/items/1", "/relay", "/nope"])))
        elif kind == "long_method":
            await exchange(self.app, request("M" * random.randint(100, 70000), "/items/1"))
        elif kind == "path":
            path = random.choice([
                "/" + "/".join(rand_hex(random.randint(1, 12)) for _ in range(random.randint(1, 12))),
                "/items/" + "9" * 40, "/items/%00%ff%2e%2e", "/../../etc/passwd", "/" + "a" * 6000,
                "/items/1/" + rand_hex(8), "/%E2%82%AC/" + rand_hex(4), "//items//1",
            ])
            await exchange(self.app, request(random.choice(["GET", "POST", "DELETE"]), path))
        elif kind == "headers":
            headers, rid = self.hostile_headers()
            status, data, _ = await exchange(self.app, request("GET", "/items/1", headers))
            echoed = header(data, b"x-request-id")
            if status is not None and status != 200 and status != 431:
                self.id_problems.append(f"hostile headers answered {status}")
            if status == 200 and (echoed is None or not REQUEST_ID.match(echoed)
                                  or (rid is not None and not REQUEST_ID.match(rid) and echoed == rid)):
                self.id_problems.append(f"response x-request-id {echoed!r} for {rid!r:.40}")
        elif kind == "abort_request":
            # Announce 1 MiB, send 8 KiB, hang up.
            raw = request("PUT", "/upload", [("content-length", "1048576")])
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.app)
                writer.write(raw + b"x" * 8192)
                await writer.drain()
                await asyncio.sleep(random.uniform(0, 0.2))
                writer.transport.abort()
            except OSError:
                pass
        elif kind == "abort_body":
            await exchange(self.app, request("GET", "/stream?kib=8192"), read_limit=65536)
        elif kind == "panic":
            self.panics_sent += 1
            status, _, _ = await exchange(self.app, request("GET", "/panic"))
            if status == 500:
                self.panics_500 += 1
        elif kind == "garbage":
            await exchange(self.app, os.urandom(random.randint(1, 4000)) + b"\r\n\r\n")
        elif kind == "slow_scrape":
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.metrics)
                writer.write(b"GET /metrics HTTP/1.1\r\nHost:")
                await writer.drain()
                await asyncio.sleep(2)
                writer.transport.abort()
            except OSError:
                pass

    async def hostile_traffic(self, until):
        interval = 1.0 / self.args.hostile_rate
        while time.monotonic() < until():
            self.spawn(self.one_hostile())
            await asyncio.sleep(random.expovariate(1.0 / interval))

    async def scrape(self):
        status, data, _ = await exchange(self.metrics, request("GET", "/metrics"))
        if status == 200:
            self.scrapes["ok"] += 1
            self.last_metrics = data.split(b"\r\n\r\n", 1)[-1].decode()
        else:
            self.scrapes["failed"] += 1
        return status

    def rss_kib(self, field="VmRSS"):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    async def monitor(self, stop):
        while not stop.is_set():
            if self.proc.poll() is not None:
                raise SystemExit(f"soak: FAIL: the service exited ({self.proc.returncode}) during {self.phase}")
            self.spawn(self.scrape())
            rss = self.rss_kib()
            if rss is not None:
                self.rss.append((self.phase, time.monotonic() - self.started, rss))
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass


def samples(text, family):
    """(labels dict, value) of each sample of `family` (no suffixes) in 0.0.4 text."""
    out = []
    for line in text.splitlines():
        if not line.startswith(family):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != family:
            continue
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((labels, float(m.group(3))))
    return out


def series_count(text):
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


async def run(args):
    app_port, metrics_port, otlp_port = free_port(), free_port(), free_port()
    mode = mp.Value("i", 0)
    accepted, requests_, decode_errors, bad_ids = (mp.Value("q", 0) for _ in range(4))
    collector = mp.Process(target=collector_main, daemon=True,
                           args=(otlp_port, mode, accepted, requests_, decode_errors, bad_ids))
    collector.start()
    shutdown_timeout = 2
    work = tempfile.mkdtemp(prefix="soak-")
    config = os.path.join(work, "soak.yml")
    with open(config, "w") as f:
        f.write(f"""metric: {{ port: {metrics_port}, namespace: soak, subsystem: api }}
trace:
  enabled: true
  service_name: soak_service
  sample_rate: 1
  max_queue_size: {args.max_queue}
  shutdown_timeout_secs: {shutdown_timeout}
  propagators: [tracecontext, baggage, jaeger]
  otel: {{ endpoint: "127.0.0.1:{otlp_port}", protocol: http, insecure: true, timeout: 4 }}
""")
    stderr_path = os.path.join(work, "stderr")
    env = dict(os.environ, RUST_LOG="warn", RUST_BACKTRACE="0")
    proc = subprocess.Popen([args.service, "--config", config, "--listen", f"127.0.0.1:{app_port}"],
                            stdout=subprocess.PIPE, stderr=open(stderr_path, "wb"), env=env, text=True)
    line = proc.stdout.readline()
    if "soak_service on" not in line:
        raise SystemExit(f"soak: FAIL: the service did not start: {line!r} {open(stderr_path).read()}")
    soak = Soak(args, app_port, metrics_port, proc)
    stop_monitor = asyncio.Event()
    monitor = asyncio.ensure_future(soak.monitor(stop_monitor))

    def phase(name, seconds):
        soak.phase = name
        print(f"soak: {name} for {seconds:.0f} s", flush=True)
        return time.monotonic() + seconds

    # Warm-up and the fault-free baseline.
    end = phase("warmup", 5)
    await soak.valid_traffic(lambda: end)
    end = phase("baseline", args.baseline_seconds)
    await soak.valid_traffic(lambda: end)

    # The faulted run: the collector cycles through MODES, hostile traffic beside valid.
    end = phase("faults", args.fault_seconds)
    faults = {m: 0 for m in MODES}
    cycle_seconds = args.mode_seconds * len(MODES)
    first_cycle_rss = None

    async def cycle_collector():
        nonlocal first_cycle_rss
        i = 0
        started = time.monotonic()
        while time.monotonic() < end:
            m = MODES[i % len(MODES)]
            mode.value = i % len(MODES)
            faults[m] += 1
            await asyncio.sleep(min(args.mode_seconds, max(0.0, end - time.monotonic())))
            i += 1
            if first_cycle_rss is None and time.monotonic() - started >= cycle_seconds:
                first_cycle_rss = soak.rss_kib()
                soak.series_mid = series_count(soak.last_metrics)
        mode.value = 0

    await asyncio.gather(soak.valid_traffic(lambda: end), soak.hostile_traffic(lambda: end), cycle_collector())
    end_fault_rss = soak.rss_kib()
    end = phase("recovery", 6)
    await soak.valid_traffic(lambda: end)

    # Quiesce: every request answered or abandoned, then the gauges.
    soak.phase = "quiesce"
    deadline = time.monotonic() + 30
    while soak.tasks and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    stop_monitor.set()
    await monitor
    problems = []
    gauges = {}
    for _ in range(50):
        await soak.scrape()
        text = soak.last_metrics
        gauges = {}
        for fam in ("soak_api_http_inflight_requests", "soak_api_http_client_inflight_requests",
                    "soak_api_task_queue_size", "soak_api_task_concurrency"):
            gauges[fam] = sum(v for _, v in samples(text, fam))
        if all(v == 0 for v in gauges.values()):
            break
        await asyncio.sleep(0.2)
    text = soak.last_metrics
    if any(v != 0 for v in gauges.values()):
        problems.append(f"in-flight gauges not 0: {gauges}")
    operations, methods = set(), set()
    for fam in ("soak_api_http_request_total", "soak_api_http_inflight_requests"):
        for labels, _ in samples(text, fam):
            operations.add(labels.get("operation"))
            methods.add(labels.get("method"))
    if not operations <= ROUTES | {"unknown"}:
        problems.append(f"operation labels outside the routes: {sorted(operations - ROUTES - {'unknown'})[:5]}")
    if not methods <= METHODS:
        problems.append(f"method labels outside the known set: {sorted(methods - METHODS)[:5]}")
    series_end = series_count(text)
    if soak.series_mid is not None and series_end > soak.series_mid * 1.5 + 50:
        problems.append(f"series grew from {soak.series_mid} after one fault cycle to {series_end}")
    scraped = {w: sum(v for _, v in samples(text, f"soak_api_trace_spans_{w}_total"))
               for w in ("ended", "exported", "failed", "dropped")}

    # Shutdown with the collector hung: spans queued behind an export that never returns.
    mode.value = MODES.index("hang")
    await asyncio.sleep(0.2)
    for n in range(50):
        await exchange(app_port, request("GET", "/items/1"))
    await asyncio.sleep(0.5)
    peak_rss = soak.rss_kib("VmHWM")
    sigterm_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = await asyncio.get_running_loop().run_in_executor(None, lambda: proc.communicate(timeout=60))
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SystemExit("soak: FAIL: the service did not exit within 60 s of SIGTERM")
    exit_seconds = time.monotonic() - sigterm_at
    collector.terminate()
    report_line = next((l for l in out.splitlines() if l.startswith('{"shutdown"')), None)
    if report_line is None:
        raise SystemExit(f"soak: FAIL: no shutdown report: {out!r}")
    shutdown = json.loads(report_line)["shutdown"]
    report = shutdown["report"]
    if proc.returncode != 0:
        problems.append(f"the service exited {proc.returncode}")
    if shutdown["seconds"] > shutdown_timeout + 1:
        problems.append(f"span shutdown took {shutdown['seconds']:.2f} s (timeout {shutdown_timeout} s)")
    if exit_seconds > shutdown_timeout + 5:
        problems.append(f"the service took {exit_seconds:.2f} s to exit after SIGTERM")
    lost = report["failed"] + report["dropped"] + report["unexported"]
    if report["ended"] != report["exported"] + lost:
        problems.append(f"span ledger off: {report}")
    if report["exported"] != accepted.value:
        problems.append(f"exported {report['exported']} spans, the collector accepted {accepted.value}")
    if report["failed"] == 0:
        problems.append("no export failed: the collector's faults did not reach the exporter")
    if decode_errors.value:
        problems.append(f"{decode_errors.value} export requests did not decode")
    if bad_ids.value:
        problems.append(f"{bad_ids.value} spans carry an invalid request_id")

    # Panics.
    stderr = open(stderr_path, errors="replace").read()
    panicked = [i for i, l in enumerate(stderr.splitlines()) if " panicked at " in l]
    lines = stderr.splitlines()
    escaped = [lines[i:i + 2] for i in panicked if not any("deliberate" in l for l in lines[i:i + 2])]
    if escaped:
        problems.append(f"panics that were not deliberate: {escaped[:3]}")
    if soak.panics_500 != soak.panics_sent:
        problems.append(f"{soak.panics_sent} requests to the panicking handler, {soak.panics_500} answered 500")

    # Valid traffic and its latency.
    if soak.valid["failed"]:
        problems.append(f"valid requests failed: {soak.valid['failures']}")
    problems += soak.id_problems[:5]
    base, fault = soak.latency["baseline"], soak.latency["faults"]
    lat = {name: {"n": len(v), "p50_ms": percentile(v, 0.5) * 1e3, "p99_ms": percentile(v, 0.99) * 1e3}
           for name, v in (("baseline", base), ("faults", fault))}
    p50_ratio = lat["faults"]["p50_ms"] / lat["baseline"]["p50_ms"]
    p99_ratio = lat["faults"]["p99_ms"] / lat["baseline"]["p99_ms"]
    if p50_ratio > 1.5:
        problems.append(f"median latency {p50_ratio:.2f}x the baseline's (bound 1.5x)")
    if p99_ratio > 2.0:
        problems.append(f"p99 latency {p99_ratio:.2f}x the baseline's (bound 2x)")

    # Memory.
    peak_mib = (peak_rss or 0) / 1024
    growth_mib = ((end_fault_rss or 0) - (first_cycle_rss or end_fault_rss or 0)) / 1024
    if peak_mib > args.max_rss_mib:
        problems.append(f"peak resident memory {peak_mib:.1f} MiB over the bound {args.max_rss_mib} MiB")
    if growth_mib > args.max_growth_mib:
        problems.append(f"resident memory grew {growth_mib:.1f} MiB over the faulted run "
                        f"(bound {args.max_growth_mib} MiB)")

    summary = {
        "requests": {"valid": soak.valid["sent"], "valid_failed": soak.valid["failed"],
                     "hostile": sum(soak.hostile.values()), "scrapes": soak.scrapes},
        "hostile": soak.hostile,
        "collector": {"mode_periods": faults, "export_requests": requests_.value,
                      "spans_accepted": accepted.value},
        "spans": report, "spans_scraped_before_shutdown": scraped,
        "shutdown_seconds": round(shutdown["seconds"], 3), "exit_seconds": round(exit_seconds, 3),
        "latency": lat, "latency_ratio": {"p50": round(p50_ratio, 3), "p99": round(p99_ratio, 3)},
        "rss_mib": {"peak": round(peak_mib, 1), "after_first_cycle": round((first_cycle_rss or 0) / 1024, 1),
                    "end_of_faults": round((end_fault_rss or 0) / 1024, 1), "growth": round(growth_mib, 1)},
        "series": {"after_first_cycle": soak.series_mid, "end": series_end,
                   "operations": sorted(o for o in operations if o), "methods": sorted(m for m in methods if m)},
        "panics": {"sent": soak.panics_sent, "answered_500": soak.panics_500, "printed": len(panicked)},
        "in_flight_at_end": gauges,
    }
    print("soak: requests: {valid} valid ({valid_failed} failed), {hostile} hostile, scrapes {scrapes}".format(**summary["requests"]))
    print(f"soak: hostile kinds: {soak.hostile}")
    print(f"soak: collector periods: {faults}; export requests {requests_.value}, spans accepted {accepted.value}")
    print("soak: spans: ended {ended} = exported {exported} + failed {failed} + dropped {dropped} + unexported {unexported}; shutdown completed: {completed}".format(**report))
    print(f"soak: shutdown {shutdown['seconds']:.2f} s (timeout {shutdown_timeout} s), exit {exit_seconds:.2f} s after SIGTERM")
    print(f"soak: valid latency baseline p50 {lat['baseline']['p50_ms']:.2f} ms p99 {lat['baseline']['p99_ms']:.2f} ms (n={len(base)}); "
          f"faults p50 {lat['faults']['p50_ms']:.2f} ms p99 {lat['faults']['p99_ms']:.2f} ms (n={len(fault)}); "
          f"ratios p50 {p50_ratio:.2f}x p99 {p99_ratio:.2f}x")
    print(f"soak: resident memory peak {peak_mib:.1f} MiB (bound {args.max_rss_mib}), growth over the faulted run {growth_mib:.1f} MiB (bound {args.max_growth_mib})")
    print(f"soak: series {soak.series_mid} after the first fault cycle, {series_end} at the end; in-flight at the end {gauges}")
    print(f"soak: panics: {soak.panics_sent} sent, {soak.panics_500} answered 500, {len(panicked)} printed, all deliberate: {not escaped}")
    print("SOAK " + json.dumps(summary), flush=True)
    if problems:
        for p in problems:
            print(f"soak: FAIL: {p}", file=sys.stderr)
        sys.exit(1)
    print("soak: ok")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--service", default="target/debug/examples/soak_service")
    p.add_argument("--baseline-seconds", type=float, default=30)
    p.add_argument("--fault-seconds", type=float, default=120)
    p.add_argument("--mode-seconds", type=float, default=4, help="how long each collector mode lasts")
    p.add_argument("--rate", type=float, default=100, help="valid requests per second")
    p.add_argument("--hostile-rate", type=float, default=50, help="hostile requests per second")
    p.add_argument("--max-queue", type=int, default=512, help="trace.max_queue_size")
    p.add_argument("--max-rss-mib", type=float, default=96)
    p.add_argument("--max-growth-mib", type=float, default=16)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    random.seed(seed)
    print(f"soak: seed {seed}", flush=True)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
