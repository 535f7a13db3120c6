#!/usr/bin/env python3
"""The W3C Trace Context test suite against a service built on towerscope, levels 1 and 2.

Starts `examples/w3c_service.rs` (an axum server behind `Telemetry::layer()` whose `POST /test`
makes the calls the harness asks for through towerscope's instrumented reqwest client, the
harness host allowed to receive `tracestate`) and runs the suite vendored unchanged in
`interop/w3c/` (upstream commit and licence in interop/w3c/README.md) against it, as
`python3 test.py <service>/test`, with STRICT_LEVEL=2 and SPEC_LEVEL=1, then SPEC_LEVEL=2, the
harness on a free port each time. It reads the unittest report (each test's status line, the
failure blocks, the `Ran N tests` line and the exit status) and fails unless:

- every test of the suite ran and passed, but the ones listed in EXPECTED_FAILURES below, each
  with its reason, which must fail exactly where and how the entry says (a pass is a failure
  too: the list must be kept true);
- the only test skipped is the level-2 one at SPEC_LEVEL=1 (the suite's own gate);
- the vendored files are the upstream ones (interop/w3c/SHA256SUMS);
- the service stops on SIGTERM with status 0.

    interop/w3c_e2e.py --service target/debug/examples/w3c_service

Needs aiohttp (the suite's harness). Prints `w3c_e2e: ok: ...` per level and exits 1 on a failed
check, with the suite's report and the service's output.
"""

import argparse
import hashlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

SUITE = Path(__file__).resolve().parent / "w3c"
SUITE_TIMEOUT = 300  # seconds, for one run of the suite (about 1 s here)

# The suite's tests: (class, test) names, as upstream's test.py defines them.
LEVEL2_TESTS = {"TraceContext2Test.test_propagates_random_flag"}

# Tests that fail on purpose: name -> (why, text the failure's report must contain). Anything
# else that fails, errors or is skipped fails this script.
EXPECTED_FAILURES = {
    "TraceContextTest.test_tracestate_member_count_limit": (
        "a tracestate of 33 members: the suite wants it discarded whole; towerscope keeps the "
        "first 32 whole members (the cap runs before the grammar). The spec allows both: "
        "discarding an unparsable header is a MAY, truncating whole entries from the end is "
        "how it says to truncate. Documented in the README (W3C Trace Context) and kept by "
        "issue 25. The 32-member half of the test, earlier in it, must pass: the failure must "
        "be the 33-member assertion.",
        ("self.assertRaises(KeyError, lambda: tracestate['bar01'])",
         "AssertionError: KeyError not raised"),
    ),
}


class Failure(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


def ok(message):
    print(f"w3c_e2e: ok: {message}", flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_vendored():
    """The vendored files hash as interop/w3c/SHA256SUMS says (the upstream blobs)."""
    lines = (SUITE / "SHA256SUMS").read_text().splitlines()
    for line in lines:
        digest, name = line.split(maxsplit=1)
        got = hashlib.sha256((SUITE / name).read_bytes()).hexdigest()
        check(got == digest, f"interop/w3c/{name} differs from upstream's ({got} != {digest})")
    ok(f"{len(lines)} vendored files are upstream's (SHA256SUMS)")


class Service:
    """The example service on a port chosen by the system."""

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
        found = re.match(r"w3c_service: (http://127\.0\.0\.1:\d+/test)$", (line or "").strip())
        check(found, f"the service did not start: {line!r}")
        self.endpoint = found.group(1)

    def stop(self):
        """SIGTERM; the exit status (None if it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode

    def output(self):
        return "".join(self.lines)


# `test_x (__main__.Class.test_x)` (Python 3.11+) or `test_x (__main__.Class)`, the docstring's
# first line on the next line when there is one, then ` ... <status>`.
STATUS = re.compile(
    r"^(test_\w+) \(([\w.]+)\)(?:\n[^\n]*?)? \.\.\. "
    r"(ok|FAIL|ERROR|skipped.*|expected failure|unexpected success)$", re.M)
BLOCK = re.compile(r"^={70}\n(FAIL|ERROR): (test_\w+) \(([\w.]+)\)\n(.*?)(?=^={70}\n|^-{70}\nRan )",
                   re.M | re.S)


def qualified(test, test_id):
    """`Class.test` from a test's name and its id in parentheses."""
    parts = test_id.split(".")
    cls = parts[-2] if parts[-1] == test else parts[-1]
    return f"{cls}.{test}"


def suite_tests():
    """`Class.test` of every test the vendored test.py defines."""
    names, cls = set(), None
    for line in (SUITE / "test.py").read_text().splitlines():
        m = re.match(r"class (\w+)\(", line)
        if m:
            cls = m.group(1)
        m = re.match(r"\s+def (test_\w+)\(", line)
        if m and cls:
            names.add(f"{cls}.{m.group(1)}")
    return names


def parse_report(report):
    """{name: status} and {name: failure text} from unittest's verbose report."""
    statuses = {}
    for m in STATUS.finditer(report):
        name = qualified(m.group(1), m.group(2))
        check(name not in statuses, f"{name} reported twice")
        statuses[name] = m.group(3)
    blocks = {qualified(m.group(2), m.group(3)): m.group(4) for m in BLOCK.finditer(report)}
    ran = re.search(r"^Ran (\d+) tests? in ", report, re.M)
    check(ran, "no `Ran N tests` line in the report")
    check(int(ran.group(1)) == len(statuses),
          f"the report says {ran.group(1)} tests ran, {len(statuses)} status lines were read")
    return statuses, blocks


def judge(level, statuses, blocks, exit_status):
    """Raises Failure unless the run is what this script expects; returns the counts."""
    problems = []
    passed = failed_as_expected = skipped = 0
    for name, status in sorted(statuses.items()):
        expected = EXPECTED_FAILURES.get(name)
        if status == "ok":
            if expected:
                problems.append(f"{name} passes now: remove it from EXPECTED_FAILURES")
            passed += 1
        elif status.startswith("skipped"):
            if level == 1 and name in LEVEL2_TESTS:
                skipped += 1
            else:
                problems.append(f"{name} was {status}")
        elif status == "FAIL" and expected:
            text = blocks.get(name, "")
            missing = [s for s in expected[1] if s not in text]
            if missing:
                problems.append(f"{name} failed, but not as expected (no {missing!r}):\n{text}")
            failed_as_expected += 1
        else:
            problems.append(f"{name}: {status}\n{blocks.get(name, '')}")
    for name in sorted(suite_tests() - set(statuses)):
        problems.append(f"{name} did not run")
    # test.py exits with the number of failures and errors.
    if exit_status != failed_as_expected and not problems:
        problems.append(f"test.py exited with {exit_status}, {failed_as_expected} failures expected")
    check(not problems, "\n".join(problems))
    return passed, failed_as_expected, skipped


def run_suite(service, level):
    """One run of the suite at SPEC_LEVEL=`level`, STRICT_LEVEL=2; its report."""
    env = dict(os.environ, SPEC_LEVEL=str(level), STRICT_LEVEL="2", HARNESS_HOST="127.0.0.1",
               HARNESS_PORT=str(free_port()), PYTHONDONTWRITEBYTECODE="1")
    env.pop("HARNESS_DEBUG", None)
    env.pop("HARNESS_BIND_PORT", None)
    env.pop("HARNESS_BIND_HOST", None)
    try:
        done = subprocess.run([sys.executable, "test.py", service.endpoint], cwd=SUITE, env=env,
                              capture_output=True, text=True, timeout=SUITE_TIMEOUT)
    except subprocess.TimeoutExpired as err:
        raise Failure(f"level {level}: the suite did not finish in {SUITE_TIMEOUT} s:\n"
                      f"{err.stderr or ''}") from err
    report = done.stderr
    try:
        statuses, blocks = parse_report(report)
        passed, expected, skipped = judge(level, statuses, blocks, done.returncode)
    except Failure as err:
        raise Failure(f"level {level}: {err}\n--- the suite's output\n{done.stdout}{report}") from err
    return len(statuses), passed, expected, skipped


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--service", default="target/debug/examples/w3c_service",
                   help="the w3c_service example binary")
    args = p.parse_args()
    started = time.monotonic()
    service = None
    try:
        try:
            import aiohttp  # noqa: F401  (the suite's harness imports it)
        except ImportError as err:
            raise Failure("the suite needs aiohttp: pip install aiohttp (see .ci/run)") from err
        check_vendored()
        service = Service(args.service)
        totals = [0, 0]
        for level in (1, 2):
            ran, passed, expected, skipped = run_suite(service, level)
            note = "".join(
                f"; expected failure {name}: {EXPECTED_FAILURES[name][0].split(':')[0]}"
                for name in sorted(EXPECTED_FAILURES)) if expected else ""
            gate = " (the level-2 test, by the suite's SPEC_LEVEL gate)" if skipped else ""
            ok(f"level {level} (STRICT_LEVEL=2): {ran} tests, {passed} passed, {expected} "
               f"expected failure(s), {skipped} skipped{gate}{note}")
            totals[0] += passed
            totals[1] += expected
        status = service.stop()
        check(status == 0, f"the service exited with {status} on SIGTERM")
        ok("the service stopped on SIGTERM with status 0")
    except Failure as err:
        print(f"w3c_e2e: FAIL: {err}", file=sys.stderr)
        if service is not None:
            service.stop()
            print(f"--- service output\n{service.output()}", file=sys.stderr)
        return 1
    print(f"w3c_e2e: passed in {time.monotonic() - started:.1f} s ({totals[0]} tests passed, "
          f"{totals[1]} expected failures, over both levels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
