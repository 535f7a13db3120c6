#!/usr/bin/env python3
"""Load test of the example registry, bare vs instrumented, under wrk.

For each variant, runs `rounds` pairs bare/instrumented (bare first, alternating), each on a
fresh server process with a fresh SQLite file and blob directory, and reports requests/s and
p99 latency as ratios instrumented/bare, per round and as medians. See README.md here.

Python 3.11 standard library only; needs `wrk` (and `taskset`, for pinning) on PATH.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
REPORT_LUA = HERE / "report.lua"
DEFAULT_BINARIES = [
    *([Path(os.environ["CARGO_TARGET_DIR"]) / "release/examples/registry_demo"]
      if os.environ.get("CARGO_TARGET_DIR") else []),
    REPO / "target/release/examples/registry_demo",
]

# name -> (metrics enabled, trace sample rate or None for tracing off, description)
VARIANTS: dict[str, tuple[bool, float | None, str]] = {
    "metrics": (True, None, "metrics on, tracing off"),
    "trace-0": (True, 0.0, "metrics on, tracing on, sample_rate 0 (Jaeger agent, UDP)"),
    "trace-0.01": (True, 0.01, "metrics on, tracing on, sample_rate 0.01 (Jaeger agent, UDP)"),
    "trace-1": (True, 1.0, "metrics on, tracing on, sample_rate 1 (Jaeger agent, UDP)"),
}
BARE = (False, None, "metric.enabled false, trace.enabled false")

SERVER_CPU = "0"
CLIENT_CPU = "1"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# The span receiver: a UDP socket that only drains. Runs as a child process (pinned to the
# client CPU) so that it never competes with the server for its CPU.


def udp_drain() -> int:
    stop = False

    def on_term(_sig, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    except OSError:
        pass
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    print(sock.getsockname()[1], flush=True)
    buf = bytearray(65536)
    datagrams = 0
    nbytes = 0
    while not stop:
        try:
            n = sock.recv_into(buf)
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        datagrams += 1
        nbytes += n
    # Whatever is still queued in the kernel buffer.
    sock.setblocking(False)
    while True:
        try:
            n = sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            break
        datagrams += 1
        nbytes += n
    print(json.dumps({"datagrams": datagrams, "bytes": nbytes}), flush=True)
    return 0


class Drain:
    def __init__(self, pin: list[str]):
        self.proc = subprocess.Popen(
            pin + [sys.executable, str(Path(__file__).resolve()), "--udp-drain"],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError(f"UDP drain did not start (got {line!r})")
        self.port = int(line)

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return {"error": "drain did not stop"}
        try:
            return json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"error": f"unreadable drain output {out!r}"}


# --------------------------------------------------------------------------------------------
# Helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} not open after the start timeout")
        time.sleep(0.05)


def http_get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        res = conn.getresponse()
        return res.status, res.read()
    finally:
        conn.close()


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of the whole process (all threads), in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def sum_family(text: str, suffix: str) -> float | None:
    """Sum of the samples of every family whose name ends with `suffix` (any prefix)."""
    total = None
    pattern = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([^\s]+)")
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = pattern.match(line)
        if m and m.group(1).endswith(suffix):
            try:
                total = (total or 0.0) + float(m.group(3))
            except ValueError:
                pass
    return total


def config_yaml(tmp: Path, port: int, metrics_port: int, metrics: bool,
                sample_rate: float | None, agent_port: int | None, queue: int | None,
                batch: int | None = None) -> str:
    lines = [
        f'listen: "127.0.0.1:{port}"',
        f'database: "sqlite://{tmp / "registry.db"}"',
        f'storage: "{tmp / "blobs"}"',
        f"metric: {{ enabled: {'true' if metrics else 'false'}, host: 127.0.0.1, port: {metrics_port} }}",
    ]
    if sample_rate is None:
        lines.append("trace: { enabled: false }")
    else:
        lines += [
            "trace:",
            "  enabled: true",
            f"  sample_rate: {sample_rate}",
            "  service_name: registry-demo-load",
        ]
        if queue is not None:
            lines.append(f"  max_queue_size: {queue}")
        if batch is not None:
            lines.append(f"  batch: {{ max_export_batch_size: {batch} }}")
        lines += [
            "  jaeger:",
            "    agent_host: 127.0.0.1",
            f"    agent_port: {agent_port}",
        ]
    return "\n".join(lines) + "\n"


def run_wrk(pin: list[str], args, port: int, seconds: float) -> dict:
    url = f"http://127.0.0.1:{port}{args.path}"
    cmd = pin + [
        "wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds:g}s",
        "-s", str(REPORT_LUA), url,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    for line in res.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[len("WRKJSON "):])
    raise RuntimeError(f"wrk gave no result (status {res.returncode}):\n{res.stdout}\n{res.stderr}")


# --------------------------------------------------------------------------------------------
# One run: a fresh server, optional warm-up, one measured wrk run, shutdown.


def one_run(args, variant: str, role: str, spec, pins) -> dict:
    metrics, sample_rate, _ = spec
    server_pin, client_pin = pins
    tmp = Path(tempfile.mkdtemp(prefix=f"load-{variant}-{role}-"))
    drain = Drain(client_pin) if sample_rate is not None else None
    port, metrics_port = free_port(), free_port()
    while metrics_port == port:
        metrics_port = free_port()
    cfg = tmp / "config.yml"
    cfg.write_text(config_yaml(tmp, port, metrics_port, metrics, sample_rate,
                               drain.port if drain else None, args.max_queue_size,
                               args.batch_size))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["RUST_LOG"] = "warn"
    env["TOKIO_WORKER_THREADS"] = str(args.worker_threads)
    env["TMPDIR"] = str(tmp)
    out = open(tmp / "server.log", "wb")
    proc = subprocess.Popen(server_pin + [str(args.binary), "--config", str(cfg)],
                            stdout=out, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    record: dict = {"variant": variant, "role": role, "metrics": metrics,
                    "sample_rate": sample_rate, "port": port}
    try:
        deadline = time.monotonic() + args.start_timeout
        wait_port(port, proc, deadline)
        if metrics:
            wait_port(metrics_port, proc, deadline)
        status, _ = http_get(port, args.path)
        record["check_status"] = status
        if not 200 <= status < 400:
            log(f"warning: GET {args.path} answered {status}; wrk counts it as an error")
        if args.warmup > 0:
            record["warmup"] = run_wrk(client_pin, args, port, args.warmup)
        cpu0 = proc_cpu_seconds(proc.pid)
        t0 = time.monotonic()
        record["wrk"] = run_wrk(client_pin, args, port, args.duration)
        wall = time.monotonic() - t0
        cpu1 = proc_cpu_seconds(proc.pid)
        if cpu0 is not None and cpu1 is not None:
            record["server_cpu_s"] = cpu1 - cpu0
            record["server_cpu_pct"] = 100.0 * (cpu1 - cpu0) / wall
            if record["wrk"]["requests"]:
                record["server_cpu_us_per_req"] = 1e6 * (cpu1 - cpu0) / record["wrk"]["requests"]
        if metrics:
            # A sanity check that the instrumentation was live: requests the layer counted.
            st, body = http_get(metrics_port, "/metrics")
            if st == 200:
                text = body.decode("utf-8", "replace")
                record["metrics_http_request_total"] = sum_family(text, "http_request_total")
                record["metrics_spans_dropped_total"] = sum_family(text, "trace_spans_dropped_total")
            else:
                record["metrics_status"] = st
    except Exception:
        out.flush()
        log(f"--- server log ({variant}/{role}) ---\n"
            + (tmp / "server.log").read_text(errors="replace")[-4000:])
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=args.stop_timeout)
            except subprocess.TimeoutExpired:
                log(f"warning: server {proc.pid} did not stop in {args.stop_timeout}s, killing it")
                proc.kill()
                proc.wait()
        out.close()
        record["exit_status"] = proc.returncode
        if drain:
            record["udp"] = drain.stop()
        text = (tmp / "server.log").read_text(errors="replace")
        m = re.search(r"spans: (\d+) exported, (\d+) lost", text)
        if m:
            record["spans_exported"], record["spans_lost"] = int(m.group(1)), int(m.group(2))
        warnings = [l for l in text.splitlines() if "WARN" in l or "ERROR" in l]
        if warnings:
            record["server_warnings"] = warnings[:20]
        if args.keep:
            record["tmp"] = str(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return record


# --------------------------------------------------------------------------------------------
# Reporting


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec=".0f"):
    return "-" if x is None else format(x, spec)


def ratio(a, b):
    return a / b if a is not None and b else None


def summarize(runs: list[dict], variant: str, rounds: int) -> dict:
    def pick(role, r):
        for run in runs:
            if run["variant"] == variant and run["role"] == role and run["round"] == r:
                return run
        return None

    rows = []
    for r in range(1, rounds + 1):
        b, i = pick("bare", r), pick("instrumented", r)
        if not b or not i:
            continue
        rows.append({
            "round": r,
            "bare_rps": b["wrk"]["rps"], "instr_rps": i["wrk"]["rps"],
            "rps_ratio": ratio(i["wrk"]["rps"], b["wrk"]["rps"]),
            "bare_p99_us": b["wrk"]["p99_us"], "instr_p99_us": i["wrk"]["p99_us"],
            "p99_ratio": ratio(i["wrk"]["p99_us"], b["wrk"]["p99_us"]),
            "bare_cpu_pct": b.get("server_cpu_pct"), "instr_cpu_pct": i.get("server_cpu_pct"),
            "errors": sum(b["wrk"]["errors"].values()) + sum(i["wrk"]["errors"].values()),
            "spans_exported": i.get("spans_exported"), "spans_lost": i.get("spans_lost"),
            "udp_datagrams": (i.get("udp") or {}).get("datagrams"),
        })
    s = {
        "variant": variant,
        "rounds": rows,
        "median_bare_rps": med([x["bare_rps"] for x in rows]),
        "median_instr_rps": med([x["instr_rps"] for x in rows]),
        "median_rps_ratio": med([x["rps_ratio"] for x in rows]),
        "median_bare_p99_us": med([x["bare_p99_us"] for x in rows]),
        "median_instr_p99_us": med([x["instr_p99_us"] for x in rows]),
        "median_p99_ratio": med([x["p99_ratio"] for x in rows]),
    }
    s["ratio_of_median_rps"] = ratio(s["median_instr_rps"], s["median_bare_rps"])
    return s


def print_variant(s: dict) -> None:
    spec = VARIANTS[s["variant"]]
    print(f"\n== {s['variant']}: {spec[2]}  (bare: {BARE[2]})")
    traced = spec[1] is not None
    head = (f"{'round':>6} {'bare r/s':>10} {'instr r/s':>10} {'ratio':>6} "
            f"{'bare p99':>9} {'instr p99':>9} {'ratio':>6} {'cpu% b/i':>9} {'err':>4}")
    if traced:
        head += f" {'spans exp/lost':>15} {'udp dgrams':>10}"
    print(head)
    for x in s["rounds"]:
        line = (f"{x['round']:>6} {fmt(x['bare_rps']):>10} {fmt(x['instr_rps']):>10} "
                f"{fmt(x['rps_ratio'], '.3f'):>6} {fmt(x['bare_p99_us']):>7}us "
                f"{fmt(x['instr_p99_us']):>7}us {fmt(x['p99_ratio'], '.3f'):>6} "
                f"{fmt(x['bare_cpu_pct']):>4}/{fmt(x['instr_cpu_pct']):<4} {x['errors']:>4}")
        if traced:
            spans = f"{fmt(x['spans_exported'], 'd')}/{fmt(x['spans_lost'], 'd')}"
            line += f" {spans:>15} {fmt(x['udp_datagrams'], 'd'):>10}"
        print(line)
    print(f"{'median':>6} {fmt(s['median_bare_rps']):>10} {fmt(s['median_instr_rps']):>10} "
          f"{fmt(s['median_rps_ratio'], '.3f'):>6} {fmt(s['median_bare_p99_us']):>7}us "
          f"{fmt(s['median_instr_p99_us']):>7}us {fmt(s['median_p99_ratio'], '.3f'):>6}"
          f"   (ratios: median of per-round ratios)")


def machine_info(pinned: bool) -> dict:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        wrk_version = None
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip() or None
    except OSError:
        rev = None
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version,
        "git_rev": rev,
        "pinned": pinned,
    }


# --------------------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--binary", type=Path, default=None,
                   help="registry_demo binary (default: the first of "
                        + ", ".join(str(b) for b in DEFAULT_BINARIES) + " that exists)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS),
                   help=f"variants to compare with bare, from {', '.join(VARIANTS)} (comma or space separated)")
    p.add_argument("--rounds", type=int, default=3, help="bare/instrumented pairs per variant")
    p.add_argument("--duration", type=float, default=10, help="seconds of each measured wrk run")
    p.add_argument("--warmup", type=float, default=2, help="seconds of unmeasured wrk before each measured run (0: none)")
    p.add_argument("--path", default="/v2/", help="request path")
    p.add_argument("--threads", type=int, default=1, help="wrk -t")
    p.add_argument("--connections", type=int, default=16, help="wrk -c")
    p.add_argument("--worker-threads", type=int, default=1, help="TOKIO_WORKER_THREADS of the server")
    p.add_argument("--max-queue-size", type=int, default=None,
                   help="trace.max_queue_size for the traced variants (default: the SDK's)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="trace.batch.max_export_batch_size of the traced variants (default: the SDK's)")
    p.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    p.add_argument("--pause", type=float, default=1.0, help="seconds of idle between runs")
    p.add_argument("--start-timeout", type=float, default=30)
    p.add_argument("--stop-timeout", type=float, default=15)
    p.add_argument("--json", type=Path, default=None, help="write every raw figure to this file")
    p.add_argument("--keep", action="store_true", help="keep each run's temp dir (config, server log)")
    args = p.parse_args(argv)
    names = [v for item in args.variants for v in item.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    args.variants = names
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("--rounds must be >= 1, --duration > 0, --warmup >= 0")
    if args.binary is None:
        args.binary = next((b for b in DEFAULT_BINARIES if b.exists()), DEFAULT_BINARIES[0])
    if not args.binary.exists():
        p.error(f"no binary at {args.binary}; build it with\n  "
                "cargo build --release --example registry_demo --all-features")
    if not args.path.startswith("/"):
        p.error("--path must start with /")
    return args


def main(argv) -> int:
    if argv[:1] == ["--udp-drain"]:
        return udp_drain()
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        log("error: wrk not found (apt-get install -y wrk)")
        return 2

    cpus = len(os.sched_getaffinity(0))
    pinned = not args.no_pin
    if pinned and cpus < 2:
        log(f"warning: only {cpus} usable CPU(s): not pinning; server and load generator share a CPU")
        pinned = False
    if pinned and shutil.which("taskset") is None:
        log("warning: taskset not found (util-linux): not pinning")
        pinned = False
    if pinned and not {0, 1} <= os.sched_getaffinity(0):
        log("warning: CPUs 0 and 1 are not both usable: not pinning")
        pinned = False
    pins = (["taskset", "-c", SERVER_CPU], ["taskset", "-c", CLIENT_CPU]) if pinned else ([], [])

    machine = machine_info(pinned)
    load_start = os.getloadavg()
    print(f"machine: nproc {machine['nproc']} (usable {machine['usable_cpus']}), {machine['cpu_model']}, "
          f"kernel {machine['kernel']}, {machine['wrk']}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in load_start)}")
    print(f"binary: {args.binary}   git {machine['git_rev']}")
    print(f"pinning: {'server on CPU ' + SERVER_CPU + ', wrk and UDP drain on CPU ' + CLIENT_CPU if pinned else 'none'}; "
          f"TOKIO_WORKER_THREADS={args.worker_threads}, RUST_LOG=warn")
    print(f"load: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s GET {args.path}, "
          f"warm-up {args.warmup:g}s, {args.rounds} round(s) per variant, variants {' '.join(args.variants)}")
    sys.stdout.flush()

    runs: list[dict] = []
    started = time.time()
    for variant in args.variants:
        for r in range(1, args.rounds + 1):
            for role, spec in (("bare", BARE), ("instrumented", VARIANTS[variant])):
                log(f"[{variant} round {r}/{args.rounds}] {role} ...")
                rec = one_run(args, variant, role, spec, pins)
                rec["round"] = r
                rec["time"] = time.time()
                runs.append(rec)
                w = rec["wrk"]
                errs = sum(w["errors"].values())
                log(f"    {w['rps']:.0f} req/s, p50 {w['p50_us']}us, p99 {w['p99_us']}us"
                    + (f", {errs} errors" if errs else "")
                    + (f", server CPU {rec['server_cpu_pct']:.0f}%" if "server_cpu_pct" in rec else ""))
                time.sleep(args.pause)

    summaries = [summarize(runs, v, args.rounds) for v in args.variants]
    for s in summaries:
        print_variant(s)

    print(f"\n== summary (instrumented/bare; median of per-round ratios)")
    print(f"{'variant':<12} {'bare r/s':>10} {'instr r/s':>10} {'r/s ratio':>9} {'p99 ratio':>9}")
    for s in summaries:
        print(f"{s['variant']:<12} {fmt(s['median_bare_rps']):>10} {fmt(s['median_instr_rps']):>10} "
              f"{fmt(s['median_rps_ratio'], '.3f'):>9} {fmt(s['median_p99_ratio'], '.3f'):>9}")
    load_end = os.getloadavg()
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in load_end)}   "
          f"({time.time() - started:.0f}s)")
    bad = [r for r in runs if sum(r["wrk"]["errors"].values())]
    if bad:
        print(f"warning: {len(bad)} run(s) had wrk errors (non-2xx/3xx, timeouts, socket errors); see --json")

    if args.json:
        doc = {
            "machine": machine,
            "load_average_start": load_start,
            "load_average_end": load_end,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "runs": runs,
            "summary": summaries,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"raw figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
