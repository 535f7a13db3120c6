#!/usr/bin/env python3
"""gRPC message counters against a real gRPC client: Python's grpcio streaming raw bytes.

Starts `examples/grpc_stream.rs` (a tonic server behind `GrpcLayer` with go-grpc-prometheus'
names: `interop.Echo/Bidi` echoes each message, `interop.Echo/Collect` answers a client stream
with `<messages> <bytes>`, `interop.Echo/Unary` echoes one message) and calls it with grpcio,
messages as raw bytes (no serializer): a bidirectional stream of mixed messages (empty ones,
small ones, ones over 64 KiB that span HTTP/2 frames and flow-control windows), every echo
compared with what was sent; a second bidirectional stream cancelled by the client after a few
round trips; a client stream; a unary call. Then it scrapes `/metrics`, parses it with the
Prometheus Python client's parser, and requires the exact values of
`grpc_server_started_total`, `grpc_server_msg_received_total`, `grpc_server_msg_sent_total`,
`grpc_server_handled_total` (the cancelled stream as `grpc_code="Canceled"`, grpc-go's spelling as go-grpc-prometheus writes it) and the count of
`grpc_server_handling_seconds`, per method, labelled `grpc_type`, `grpc_service`,
`grpc_method`, and no other series of those families. The server must stop on SIGTERM with
status 0.

    interop/grpc_stream_e2e.py --server target/debug/examples/grpc_stream

Prints `grpc_stream_e2e: ok: ...` per check and exits 1 on the first failed one, with the
server's output.
"""

import argparse
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
from prometheus_client.parser import text_string_to_metric_families

SERVICE = "interop.Echo"
# Messages of the bidirectional stream, the client stream, and the round trips of the
# cancelled stream before its cancellation.
BIDI_MESSAGES = 30
COLLECT_MESSAGES = 12
ROUND_TRIPS = 3
TIMEOUT = 20  # seconds, for every call
FAMILIES = ("grpc_server_started_total", "grpc_server_msg_received_total",
            "grpc_server_msg_sent_total", "grpc_server_handled_total",
            "grpc_server_handling_seconds_count")


class Failure(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


def ok(message):
    print(f"grpc_stream_e2e: ok: {message}", flush=True)


def message(i):
    """The i-th message of a stream: empty, over 64 KiB (sizes vary), or a few bytes."""
    if i % 3 == 0:
        return b""
    if i % 3 == 1:
        return bytes([i % 251]) * (70_000 + 997 * i)
    return f"message {i}".encode()


class Server:
    """The example server, started with ports chosen by the system."""

    def __init__(self, binary):
        self.proc = subprocess.Popen([binary], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines = []
        first = queue.Queue()

        def read():
            for line in self.proc.stdout:
                self.lines.append(line)
                first.put(line)
            first.put(None)

        threading.Thread(target=read, daemon=True).start()
        try:
            line = first.get(timeout=30)
        except queue.Empty:
            line = None
        found = re.match(r"grpc_stream: grpc (\S+) metrics (\S+)$", (line or "").strip())
        check(found, f"the server did not start: {line!r}")
        self.target, self.metrics_url = found.group(1), found.group(2)

    def scrape(self):
        with urllib.request.urlopen(self.metrics_url, timeout=10) as res:
            return res.read().decode()

    def stop(self):
        """SIGTERM; the exit status (None if it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode

    def output(self):
        return "".join(self.lines)


def bidi(channel):
    """A bidirectional stream of mixed messages; every echo is the message sent."""
    call = channel.stream_stream(f"/{SERVICE}/Bidi", request_serializer=None,
                                 response_deserializer=None)
    sent = [message(i) for i in range(BIDI_MESSAGES)]
    answers = list(call(iter(sent), timeout=TIMEOUT))
    check(len(answers) == len(sent), f"Bidi: {len(answers)} answers to {len(sent)} messages")
    for i, (answer, expected) in enumerate(zip(answers, sent)):
        check(answer == expected, f"Bidi: answer {i} is {len(answer)} bytes, not the "
                                  f"{len(expected)} sent")
    large = sum(1 for m in sent if len(m) > 65536)
    empty = sum(1 for m in sent if not m)
    ok(f"Bidi: {len(sent)} messages ({large} over 64 KiB, {empty} empty) echoed intact")


def cancelled(channel):
    """A bidirectional stream the client cancels after ROUND_TRIPS messages and echoes.

    The messages come from a queue, one per round trip, so the server has received and
    answered exactly ROUND_TRIPS messages when the client cancels."""
    call = channel.stream_stream(f"/{SERVICE}/Bidi", request_serializer=None,
                                 response_deserializer=None)
    outgoing = queue.Queue()

    def requests():
        while (item := outgoing.get()) is not None:
            yield item

    answers = call(requests(), timeout=TIMEOUT)
    for i in range(ROUND_TRIPS):
        outgoing.put(message(i + 1))
        check(next(answers) == message(i + 1), f"cancelled stream: answer {i} differs")
    answers.cancel()
    outgoing.put(None)
    try:
        next(answers)
        raise Failure("the cancelled stream gave another answer")
    except grpc.RpcError as err:
        check(err.code() == grpc.StatusCode.CANCELLED, f"cancelled stream: {err.code()}")
    ok(f"Bidi: a stream cancelled by the client after {ROUND_TRIPS} round trips")


def collect(channel):
    call = channel.stream_unary(f"/{SERVICE}/Collect", request_serializer=None,
                                response_deserializer=None)
    sent = [message(i) for i in range(COLLECT_MESSAGES)]
    answer = call(iter(sent), timeout=TIMEOUT)
    expected = f"{len(sent)} {sum(map(len, sent))}".encode()
    check(answer == expected, f"Collect answered {answer!r}, not {expected!r}")
    ok(f"Collect: {len(sent)} messages in, one answer {answer.decode()!r}")


def unary(channel):
    call = channel.unary_unary(f"/{SERVICE}/Unary", request_serializer=None,
                               response_deserializer=None)
    answer = call(b"ping", timeout=TIMEOUT)
    check(answer == b"ping", f"Unary answered {answer!r}")
    ok("Unary: one message each way")


def labels(method, grpc_type, code=None):
    pairs = {"grpc_type": grpc_type, "grpc_service": SERVICE, "grpc_method": method}
    if code is not None:
        pairs["grpc_code"] = code
    return frozenset(pairs.items())


def expected_series():
    bidi_calls = 2
    bidi_messages = BIDI_MESSAGES + ROUND_TRIPS
    want = {}
    for method, grpc_type, calls, received, sent, codes in [
        ("Bidi", "bidi_stream", bidi_calls, bidi_messages, bidi_messages,
         {"OK": 1, "Canceled": 1}),
        ("Collect", "client_stream", 1, COLLECT_MESSAGES, 1, {"OK": 1}),
        ("Unary", "unary", 1, 1, 1, {"OK": 1}),
    ]:
        plain = labels(method, grpc_type)
        want[("grpc_server_started_total", plain)] = calls
        want[("grpc_server_msg_received_total", plain)] = received
        want[("grpc_server_msg_sent_total", plain)] = sent
        want[("grpc_server_handling_seconds_count", plain)] = calls
        for code, count in codes.items():
            want[("grpc_server_handled_total", labels(method, grpc_type, code))] = count
    return want


def scraped_series(text):
    """The samples of FAMILIES in `text`, parsed by the Prometheus client, by (name, labels)."""
    got = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in FAMILIES:
                got[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return got


def show(series):
    return "\n".join(f"  {name}{dict(sorted(lbls))} = {value}"
                     for (name, lbls), value in sorted(series.items(), key=str))


def check_metrics(server):
    """Polls /metrics (the cancelled call settles when the server sees the reset) until the
    series are exactly the expected ones, for at most 10 s."""
    want = expected_series()
    deadline = time.monotonic() + 10
    while True:
        got = scraped_series(server.scrape())
        if got == want:
            break
        if time.monotonic() > deadline:
            missing = {k: v for k, v in want.items() if got.get(k) != v}
            extra = {k: v for k, v in got.items() if k not in want}
            raise Failure(f"/metrics differs.\nexpected but not found:\n{show(missing)}\n"
                          f"found and not expected:\n{show(extra)}\nall found:\n{show(got)}")
        time.sleep(0.1)
    ok(f"/metrics: {len(want)} series exact: started, msg received/sent, handled by code "
       "(Bidi: 1 OK, 1 Canceled), handling_seconds count")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--server", default="target/debug/examples/grpc_stream",
                   help="the grpc_stream example binary")
    args = p.parse_args()
    started = time.monotonic()
    server = None
    try:
        server = Server(args.server)
        with grpc.insecure_channel(server.target) as channel:
            grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
            bidi(channel)
            cancelled(channel)
            collect(channel)
            unary(channel)
            check_metrics(server)
        status = server.stop()
        check(status == 0, f"the server exited with {status} on SIGTERM")
        ok("the server stopped on SIGTERM with status 0")
    except (Failure, grpc.RpcError) as err:
        print(f"grpc_stream_e2e: FAIL: {err}", file=sys.stderr)
        if server is not None:
            server.stop()
            print(f"--- server output\n{server.output()}", file=sys.stderr)
        return 1
    print(f"grpc_stream_e2e: passed in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
