#!/usr/bin/env python3
"""Streaming end to end against the example registry: a 1 GiB layer in bounded memory, clients
that walk away, and durations that run to the last byte.

Started by interop/registry_stream_e2e.sh with two instances: A (the registry) and B (a proxy
cache of A). Arguments: A's API URL, A's metrics URL, A's pid, B's API URL, B's metrics URL,
B's pid. Both run with `metric: { namespace: harbor, subsystem: core }`.

1. Push a 1 GiB random layer (generated here, never stored) in two chunked PATCHes with
   Content-Range, then PUT ?digest=; pull it back whole and hashed, and a Range of its end.
   A's peak resident memory (VmHWM) must stay under the bound.
2. Pull it through B: the digest matches, B caches it (a second pull does not reach A), and B's
   peak resident memory stays under the bound too.
3. 12 downloads of a 48 MiB blob abandoned after 1 MiB: every in-flight gauge returns to 0 and
   they are counted code="499" in both harbor_core_http_request_total and
   registry_http_requests_total.
4. A slow full download (about 2 s): its recorded duration covers the transfer.

Prints one line per check; exits non-zero on the first failure.
"""
import hashlib
import http.client
import random
import re
import socket
import sys
import time
import urllib.parse
import urllib.request

GIB = 1 << 30
MIB = 1 << 20
RSS_BOUND_MIB = 128

a_api, a_metrics, a_pid, b_api, b_metrics, b_pid = sys.argv[1:7]


def ok(message):
    print(f"registry_stream: ok: {message}", flush=True)


def fail(message):
    print(f"registry_stream: FAIL: {message}", flush=True)
    sys.exit(1)


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    fail(f"no VmHWM for pid {pid}")


def connection(api):
    url = urllib.parse.urlsplit(api)
    return http.client.HTTPConnection(url.hostname, url.port, timeout=120)


def random_chunks(seed, size, chunk=4 * MIB):
    """`size` pseudo-random bytes in chunks, the same for the same seed."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(chunk, left)
        yield rng.randbytes(n)
        left -= n


def digest_of(seed, size):
    h = hashlib.sha256()
    for c in random_chunks(seed, size):
        h.update(c)
    return "sha256:" + h.hexdigest()


def request(api, method, path, body=None, headers=None, length=None):
    conn = connection(api)
    headers = dict(headers or {})
    if length is not None:
        headers["Content-Length"] = str(length)
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def push_chunked(api, name, seed, size, parts=2):
    response, _ = request(api, "POST", f"/v2/{name}/blobs/uploads/", length=0)
    if response.status != 202:
        fail(f"upload start: {response.status}")
    location = response.getheader("Location")
    part = size // parts
    offset = 0
    gen = random_chunks(seed, size)
    for i in range(parts):
        n = part if i < parts - 1 else size - offset

        def body(n=n):
            sent = 0
            while sent < n:
                c = next(gen)
                sent += len(c)
                yield c

        response, data = request(api, "PATCH", location, body=body(), length=n,
                                 headers={"Content-Range": f"{offset}-{offset + n - 1}",
                                          "Content-Type": "application/octet-stream"})
        if response.status != 202:
            fail(f"PATCH {i}: {response.status} {data[:200]!r}")
        if response.getheader("Range") != f"0-{offset + n - 1}":
            fail(f"PATCH {i}: Range {response.getheader('Range')}")
        location = response.getheader("Location")
        offset += n
    digest = digest_of(seed, size)
    sep = "&" if "?" in location else "?"
    response, data = request(api, "PUT", f"{location}{sep}digest={digest}", length=0)
    if response.status != 201:
        fail(f"final PUT: {response.status} {data[:200]!r}")
    return digest


def pull_digest(api, name, digest, headers=None):
    conn = connection(api)
    conn.request("GET", f"/v2/{name}/blobs/{digest}", headers=headers or {})
    response = conn.getresponse()
    h = hashlib.sha256()
    total = 0
    while True:
        c = response.read(4 * MIB)
        if not c:
            break
        h.update(c)
        total += len(c)
    conn.close()
    return response.status, "sha256:" + h.hexdigest(), total, response


def scrape(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def value(text, pattern):
    """The sum of the samples whose line matches `pattern` (a regex on name and labels)."""
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, v = line.rpartition(" ")
        if re.fullmatch(pattern, series):
            total += float(v)
            found = True
    return total if found else None


# --- 1. A 1 GiB layer through A.
seed = 1729
started = time.monotonic()
layer = push_chunked(a_api, "stream/big", seed, GIB)
pushed_in = time.monotonic() - started
status, got, total, _ = pull_digest(a_api, "stream/big", layer)
if status != 200 or got != layer or total != GIB:
    fail(f"pull of the 1 GiB layer: {status} {got} {total}")
status, got, total, response = pull_digest(a_api, "stream/big", layer, {"Range": f"bytes={GIB - MIB}-"})
expected_tail = hashlib.sha256()
skip = GIB - MIB
for c in random_chunks(seed, GIB):
    if skip >= len(c):
        skip -= len(c)
        continue
    expected_tail.update(c[skip:])
    skip = 0
if status != 206 or total != MIB or got != "sha256:" + expected_tail.hexdigest():
    fail(f"Range of the last MiB: {status} {total}")
if response.getheader("Content-Range") != f"bytes {GIB - MIB}-{GIB - 1}/{GIB}":
    fail(f"Content-Range: {response.getheader('Content-Range')}")
peak_a = peak_rss_mib(a_pid)
if peak_a >= RSS_BOUND_MIB:
    fail(f"A's peak resident memory {peak_a:.1f} MiB >= {RSS_BOUND_MIB} MiB")
ok(f"1 GiB layer pushed (2 chunked PATCHes, {pushed_in:.1f} s) and pulled whole and by Range, "
   f"digests intact; A's peak resident memory {peak_a:.1f} MiB (bound {RSS_BOUND_MIB})")

# --- 2. The same layer through the proxy cache B.
a_blob_gets = lambda: value(scrape(a_metrics), r'registry_http_requests_total\{code="200",handler="blob",method="GET"\}') or 0
before = a_blob_gets()
status, got, total, _ = pull_digest(b_api, "stream/big", layer)
if status != 200 or got != layer or total != GIB:
    fail(f"pull through the proxy: {status} {got} {total}")
if a_blob_gets() != before + 1:
    fail(f"A's blob GETs: {before} -> {a_blob_gets()}")
status, got, total, _ = pull_digest(b_api, "stream/big", layer)
if status != 200 or got != layer:
    fail(f"second pull through the proxy: {status} {got}")
if a_blob_gets() != before + 1:
    fail(f"the second pull through the proxy reached A: {before} -> {a_blob_gets()}")
peak_b = peak_rss_mib(b_pid)
if peak_b >= RSS_BOUND_MIB:
    fail(f"B's peak resident memory {peak_b:.1f} MiB >= {RSS_BOUND_MIB} MiB")
ok(f"1 GiB layer pulled through the proxy (streamed to the client and the cache at once), "
   f"served from the cache the second time; B's peak resident memory {peak_b:.1f} MiB")

# --- 3. Clients that walk away.
seed48 = 48
size48 = 48 * MIB
blob48 = digest_of(seed48, size48)
response, data = request(a_api, "POST", f"/v2/stream/medium/blobs/uploads/?digest={blob48}",
                         body=random_chunks(seed48, size48), length=size48)
if response.status != 201:
    fail(f"monolithic push of 48 MiB: {response.status} {data[:200]!r}")
text = scrape(a_metrics)
core_499 = r'harbor_core_http_request_total\{method="GET",code="499",operation="blob"\}'
registry_499 = r'registry_http_requests_total\{code="499",handler="blob",method="GET"\}'
core_before = value(text, core_499) or 0
registry_before = value(text, registry_499) or 0
url = urllib.parse.urlsplit(a_api)
for _ in range(12):
    s = socket.create_connection((url.hostname, url.port), timeout=30)
    s.sendall(f"GET /v2/stream/medium/blobs/{blob48} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    got = 0
    while got < MIB:
        c = s.recv(64 * 1024)
        if not c:
            fail("the server closed before 1 MiB")
        got += len(c)
    s.close()  # unread data: the kernel answers with a reset
deadline = time.monotonic() + 20
while True:
    text = scrape(a_metrics)
    inflight = [l for l in text.splitlines()
                if re.match(r'(harbor_core_http_inflight_requests|registry_http_in_flight_requests)\{', l)]
    busy = [l for l in inflight if not l.endswith(" 0")]
    core = (value(text, core_499) or 0) - core_before
    registry = (value(text, registry_499) or 0) - registry_before
    if not busy and core == 12 and registry == 12:
        break
    if time.monotonic() > deadline:
        fail(f"after 12 abandoned downloads: 499s core {core}, registry {registry}; in flight: {busy}")
    time.sleep(0.1)
if not inflight:
    fail("no in-flight gauges in /metrics")
ok(f"12 downloads of 48 MiB abandoned after 1 MiB: code=\"499\" 12 times in harbor_core_ and "
   f"registry_ families, {len(inflight)} in-flight gauges all 0")

# --- 4. A slow download: the duration runs to its last byte.
duration = r'registry_http_request_duration_seconds_sum\{handler="blob",method="GET"\}'
count = r'registry_http_request_duration_seconds_count\{handler="blob",method="GET"\}'
text = scrape(a_metrics)
sum_before, count_before = value(text, duration), value(text, count)
conn = connection(a_api)
conn.request("GET", f"/v2/stream/medium/blobs/{blob48}")
response = conn.getresponse()
started = time.monotonic()
h = hashlib.sha256()
while True:
    c = response.read(MIB)
    if not c:
        break
    h.update(c)
    time.sleep(0.04)
took = time.monotonic() - started
conn.close()
if "sha256:" + h.hexdigest() != blob48:
    fail("slow download: digest")
deadline = time.monotonic() + 10
while True:
    text = scrape(a_metrics)
    if value(text, count) == count_before + 1:
        break
    if time.monotonic() > deadline:
        fail("slow download not counted")
    time.sleep(0.05)
recorded = value(text, duration) - sum_before
# The kernel's socket buffers hold a few MiB: the server hands over its last frame that much
# before the client reads it.
if recorded < took * 0.5:
    fail(f"slow download took {took:.2f} s at the client, recorded {recorded:.3f} s")
ok(f"a slow 48 MiB download took {took:.2f} s at the client; its recorded duration is {recorded:.2f} s")
