#!/usr/bin/env python3
"""An OTLP trace and metrics sink for the wire tests: decodes what towerscope sends with the
official protobuf definitions (opentelemetry-proto) and grpcio, not with our own code.

Listens on 127.0.0.1 for OTLP/gRPC and OTLP/HTTP (protobuf, optionally gzip) on free ports,
prints "READY grpc=<port> http=<port>" and then one JSON line per export request received:

  {"transport": "grpc"|"http", "path": ..., "headers": {...}, "resource": {...}, "spans": [...]}

or, for metrics (HTTP paths ending in /metrics, and the gRPC MetricsService):

  {"transport": ..., "path": ..., "headers": {...}, "resource": {...}, "scope": ...,
   "metrics": [{"name", "description", "unit", "kind": "sum"|"gauge"|"histogram"|"summary",
                "temporality", "monotonic", "points": [...]}]}

With --hang, the HTTP endpoint accepts requests and never answers (a stuck collector).
With --tls CERT KEY, both endpoints speak TLS with that certificate chain and key.
Stops when stdin closes.
"""
import argparse
import gzip
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

LOCK = threading.Lock()


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind in ("array_value",):
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attrs(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def emit(transport, path, headers, request):
    spans, resource = [], {}
    for rs in request.resource_spans:
        resource.update(attrs(rs.resource.attributes))
        for ss in rs.scope_spans:
            for s in ss.spans:
                spans.append({
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "name": s.name,
                    "kind": s.kind,
                    "start": s.start_time_unix_nano,
                    "end": s.end_time_unix_nano,
                    "attributes": attrs(s.attributes),
                    "status_code": s.status.code,
                    "scope": ss.scope.name,
                })
    line = json.dumps({"transport": transport, "path": path, "headers": headers,
                       "resource": resource, "spans": spans})
    with LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


TEMPORALITY = {0: "unspecified", 1: "delta", 2: "cumulative"}


def emit_metrics(transport, path, headers, request):
    resource, scope, metrics = {}, None, []
    for rm in request.resource_metrics:
        resource.update(attrs(rm.resource.attributes))
        for sm in rm.scope_metrics:
            scope = {"name": sm.scope.name, "version": sm.scope.version}
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                data = getattr(m, kind)
                out = {"name": m.name, "description": m.description, "unit": m.unit, "kind": kind,
                       "temporality": TEMPORALITY.get(getattr(data, "aggregation_temporality", 0)),
                       "monotonic": getattr(data, "is_monotonic", None), "points": []}
                for p in data.data_points:
                    point = {"attributes": attrs(p.attributes), "start": p.start_time_unix_nano,
                             "time": p.time_unix_nano}
                    if kind in ("sum", "gauge"):
                        point["value"] = getattr(p, p.WhichOneof("value"))
                    elif kind == "histogram":
                        point.update(count=p.count, sum=p.sum, bucket_counts=list(p.bucket_counts),
                                     explicit_bounds=list(p.explicit_bounds))
                    elif kind == "summary":
                        point.update(count=p.count, sum=p.sum,
                                     quantiles=[[q.quantile, q.value] for q in p.quantile_values])
                    out["points"].append(point)
                metrics.append(out)
    line = json.dumps({"transport": transport, "path": path, "headers": headers,
                       "resource": resource, "scope": scope, "metrics": metrics})
    with LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request, context):
        headers = {k: v for k, v in context.invocation_metadata()}
        emit_metrics("grpc", "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", headers, request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        headers = {k: v for k, v in context.invocation_metadata()}
        emit("grpc", "/opentelemetry.proto.collector.trace.v1.TraceService/Export", headers, request)
        return trace_service_pb2.ExportTraceServiceResponse()


def make_handler(hang):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            if hang:
                threading.Event().wait()  # never answer
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            headers = {k.lower(): v for k, v in self.headers.items()}
            if self.path.endswith("/metrics"):
                request = metrics_service_pb2.ExportMetricsServiceRequest()
                request.ParseFromString(body)
                emit_metrics("http", self.path, headers, request)
                response = metrics_service_pb2.ExportMetricsServiceResponse()
            else:
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                emit("http", self.path, headers, request)
                response = trace_service_pb2.ExportTraceServiceResponse()
            out = response.SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hang", action="store_true")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(MetricsService(), server)
    if args.tls:
        cert, key = (open(path, "rb").read() for path in args.tls)
        creds = grpc.ssl_server_credentials([(key, cert)])
        grpc_port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    http = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(args.hang))
    http.daemon_threads = True
    if args.tls:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls[0], args.tls[1])
        http.socket = context.wrap_socket(http.socket, server_side=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()

    print(f"READY grpc={grpc_port} http={http.server_address[1]}", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    server.stop(0)


if __name__ == "__main__":
    main()
