#!/usr/bin/env python3
"""Decode towerscope's Jaeger Thrift output with thriftpy2 and print it as JSON.

An independent decoder for tests/jaeger_wire.rs: thriftpy2 parses the Jaeger IDL itself
(shared/data/jaeger-idl/, or $JAEGER_IDL_DIR) and reads the bytes with its own protocols,
so nothing here shares code with the Rust encoder.

Usage:
    jaeger_decode.py agent FILE      FILE holds UDP datagrams, each as a 4-byte big-endian
                                     length followed by that many bytes. Each datagram must be
                                     one compact-protocol ONEWAY `Agent.emitBatch` message.
    jaeger_decode.py collector FILE  FILE holds one bare `jaeger.Batch` struct in the strict
                                     binary protocol (the body of POST /api/traces).

Output (stdout, one JSON document):
    agent:     {"datagrams": [{"size": N, "message": {"name", "type", "seqid"},
                               "batch": BATCH}, ...]}
    collector: {"batch": BATCH}
BATCH is {"process": {"serviceName", "tags"}, "spans": [...], "seqNo", "stats"}; a tag is
{"key", "vType" (enum name), "vStr", "vDouble", "vBool", "vLong", "vBinary" (hex)}; unset
optional fields are null. Non-finite doubles are printed as the strings "NaN", "Infinity",
"-Infinity" so that the output stays strict JSON.

Decoding is strict: strings must be UTF-8, every byte must be consumed, required fields must be
present, and any error exits with status 1 and a message on stderr.
"""

import json
import math
import os
import struct
import sys

try:
    import thriftpy2
    from thriftpy2.protocol.binary import TBinaryProtocol
    from thriftpy2.protocol.compact import TCompactProtocol
    from thriftpy2.thrift import TMessageType
except ImportError as e:  # pragma: no cover - reported to the test
    sys.exit("jaeger_decode.py needs thriftpy2 (pip install thriftpy2): %s" % e)

HERE = os.path.dirname(os.path.realpath(__file__))


def idl_dir():
    candidates = [
        os.environ.get("JAEGER_IDL_DIR"),
        os.path.join(HERE, "..", "..", "shared", "data", "jaeger-idl"),
        os.path.join(HERE, "..", "shared", "data", "jaeger-idl"),
    ]
    for c in candidates:
        if c and os.path.isfile(os.path.join(c, "agent.thrift")):
            return os.path.abspath(c)
    sys.exit("jaeger_decode.py: cannot find the Jaeger IDL; set JAEGER_IDL_DIR")


def load_idl():
    d = idl_dir()
    # agent.thrift includes "jaeger.thrift" and "zipkincore.thrift"; thriftpy2 resolves
    # includes against include_dirs (and the including file's directory).
    jaeger = thriftpy2.load(
        os.path.join(d, "jaeger.thrift"), module_name="jaeger_thrift", include_dirs=[d]
    )
    agent = thriftpy2.load(
        os.path.join(d, "agent.thrift"), module_name="agent_thrift", include_dirs=[d]
    )
    return jaeger, agent


JAEGER, AGENT = load_idl()
TAG_TYPES = {v: k for k, v in JAEGER.TagType._NAMES_TO_VALUES.items()}
REF_TYPES = {v: k for k, v in JAEGER.SpanRefType._NAMES_TO_VALUES.items()}


class DecodeError(Exception):
    pass


def require(obj, *fields):
    for f in fields:
        if getattr(obj, f) is None:
            raise DecodeError("%s: required field %r missing" % (type(obj).__name__, f))


def double(x):
    if x is None:
        return None
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def enum_name(table, value, what):
    if value not in table:
        raise DecodeError("unknown %s value %r" % (what, value))
    return table[value]


def binary_hex(v):
    return (v.encode("utf-8") if isinstance(v, str) else bytes(v)).hex()


def tag(t):
    require(t, "key", "vType")
    return {
        "key": t.key,
        "vType": enum_name(TAG_TYPES, t.vType, "TagType"),
        "vStr": t.vStr,
        "vDouble": double(t.vDouble),
        "vBool": t.vBool,
        "vLong": t.vLong,
        "vBinary": None if t.vBinary is None else binary_hex(t.vBinary),
    }


def tags(ts):
    return None if ts is None else [tag(t) for t in ts]


def log(entry):
    require(entry, "timestamp", "fields")
    return {"timestamp": entry.timestamp, "fields": tags(entry.fields)}


def ref(r):
    require(r, "refType", "traceIdLow", "traceIdHigh", "spanId")
    return {
        "refType": enum_name(REF_TYPES, r.refType, "SpanRefType"),
        "traceIdLow": r.traceIdLow,
        "traceIdHigh": r.traceIdHigh,
        "spanId": r.spanId,
    }


def span(s):
    require(
        s,
        "traceIdLow",
        "traceIdHigh",
        "spanId",
        "parentSpanId",
        "operationName",
        "flags",
        "startTime",
        "duration",
    )
    return {
        "traceIdLow": s.traceIdLow,
        "traceIdHigh": s.traceIdHigh,
        "spanId": s.spanId,
        "parentSpanId": s.parentSpanId,
        "operationName": s.operationName,
        "references": None if s.references is None else [ref(r) for r in s.references],
        "flags": s.flags,
        "startTime": s.startTime,
        "duration": s.duration,
        "tags": tags(s.tags),
        "logs": None if s.logs is None else [log(entry) for entry in s.logs],
    }


def batch(b):
    require(b, "process", "spans")
    require(b.process, "serviceName")
    stats = None
    if b.stats is not None:
        require(b.stats, "fullQueueDroppedSpans", "tooLargeDroppedSpans", "failedToEmitSpans")
        stats = {
            "fullQueueDroppedSpans": b.stats.fullQueueDroppedSpans,
            "tooLargeDroppedSpans": b.stats.tooLargeDroppedSpans,
            "failedToEmitSpans": b.stats.failedToEmitSpans,
        }
    return {
        "process": {"serviceName": b.process.serviceName, "tags": tags(b.process.tags)},
        "spans": [span(s) for s in b.spans],
        "seqNo": b.seqNo,
        "stats": stats,
    }


class Reader(object):
    """A read-only transport that fails on a short read instead of returning less."""

    def __init__(self, data):
        self.data = bytes(data)
        self.pos = 0

    def read(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise DecodeError(
                "read of %d bytes at offset %d runs past the end (%d bytes)"
                % (n, self.pos, len(self.data))
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def remaining(self):
        return len(self.data) - self.pos


def decode_agent_datagram(data):
    buf = Reader(data)
    proto = TCompactProtocol(buf, strict_decode=True)
    name, mtype, seqid = proto.read_message_begin()
    if name != "emitBatch":
        raise DecodeError("message name %r, expected 'emitBatch'" % name)
    if mtype != TMessageType.ONEWAY:
        raise DecodeError("message type %r, expected ONEWAY (%d)" % (mtype, TMessageType.ONEWAY))
    args = AGENT.Agent.emitBatch_args()
    args.read(proto)
    proto.read_message_end()
    if args.batch is None:
        raise DecodeError("emitBatch_args.batch missing")
    left = buf.remaining()
    if left:
        raise DecodeError("%d bytes left after the message" % left)
    return {
        "size": len(data),
        "message": {"name": name, "type": mtype, "seqid": seqid},
        "batch": batch(args.batch),
    }


def split_datagrams(raw):
    out = []
    i = 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise DecodeError("truncated length prefix at offset %d" % i)
        (n,) = struct.unpack(">I", raw[i : i + 4])
        i += 4
        if i + n > len(raw):
            raise DecodeError("datagram at offset %d claims %d bytes, %d left" % (i, n, len(raw) - i))
        out.append(raw[i : i + n])
        i += n
    return out


def decode_collector(data):
    buf = Reader(data)
    proto = TBinaryProtocol(buf, strict_read=True, strict_decode=True)
    b = JAEGER.Batch()
    b.read(proto)
    left = buf.remaining()
    if left:
        raise DecodeError("%d bytes left after the batch" % left)
    return {"batch": batch(b)}


def main(argv):
    if len(argv) != 3 or argv[1] not in ("agent", "collector"):
        sys.stderr.write(__doc__)
        return 2
    with open(argv[2], "rb") as f:
        raw = f.read()
    try:
        if argv[1] == "agent":
            result = {"datagrams": [decode_agent_datagram(d) for d in split_datagrams(raw)]}
        else:
            result = decode_collector(raw)
    except Exception as e:  # any decoding failure is a test failure with a reason
        sys.stderr.write("jaeger_decode.py: %s: %s\n" % (type(e).__name__, e))
        return 1
    json.dump(result, sys.stdout, allow_nan=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
