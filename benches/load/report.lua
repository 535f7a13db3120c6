-- wrk script for benches/load/run.py: prints one JSON line, prefixed "WRKJSON ", in done().
-- Latencies are in microseconds (wrk's unit); requests/s is completed requests over the
-- measured duration. errors.status counts responses that were not 2xx/3xx.
done = function(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_s":%.6f,"bytes":%d,"rps":%.3f,' ..
    '"lat_mean_us":%.3f,"lat_stdev_us":%.3f,"lat_max_us":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, seconds, summary.bytes, summary.requests / seconds,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9),
    e.connect, e.read, e.write, e.status, e.timeout))
end
