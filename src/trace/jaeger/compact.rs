//! A span in the Thrift compact protocol, written straight into a buffer.
//!
//! The agent encodes every span once, as a compact list item (see `agent`), and that is most
//! of an export's time. The `thrift` crate's protocol writes each field through a trait object
//! and `io::Write` calls of a few bytes each; this writer pushes the same bytes directly, for
//! the four structs a span is made of (`Span`, `SpanRef`, `Tag`, `Log`). The message around the
//! spans (`Agent.emitBatch`, the `Batch`, the `Process`) is still written by the `thrift`
//! crate. The output is byte for byte what `TCompactOutputProtocol` writes: a property test
//! compares the two, and the wire tests decode it with thriftpy2.
//!
//! The compact protocol, as the `thrift` crate writes it: a field is a header byte
//! `(id delta << 4) | type` when the id is 1 to 14 past the previous field's of the same
//! struct (else the type byte and the id as a zigzag varint); a bool field has its value in
//! the type (1 true, 2 false) and no body; integers are zigzag varints; a double is 8 bytes
//! little-endian; a string is its length as a varint, then its bytes; a list is a header byte
//! `(size << 4) | element type` for up to 14 items (else `0xF0 | type` and the size as a
//! varint), then its items; a struct ends with a 0 byte.

use super::model::{clamp_bytes, clamp_str, Log, Span, SpanRef, Tag, MAX_THRIFT_LEN};

const BOOL_TRUE: u8 = 0x01;
const BOOL_FALSE: u8 = 0x02;
const I32: u8 = 0x05;
const I64: u8 = 0x06;
const DOUBLE: u8 = 0x07;
const BINARY: u8 = 0x08;
const LIST: u8 = 0x09;
const STRUCT: u8 = 0x0C;
const STOP: u8 = 0x00;

/// Appends `span` to `out` as the compact protocol encodes a struct (a list item: its fields
/// numbered from 0), and returns the bytes appended.
pub(crate) fn encode_span(span: &Span, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    let mut s = Struct::new(out);
    s.i64(1, span.trace_id_low);
    s.i64(2, span.trace_id_high);
    s.i64(3, span.span_id);
    s.i64(4, span.parent_span_id);
    s.string(5, &span.operation_name);
    if let Some(refs) = &span.references {
        s.list(6, refs, span_ref);
    }
    s.i32(7, span.flags);
    s.i64(8, span.start_time);
    s.i64(9, span.duration);
    if let Some(tags) = &span.tags {
        s.list(10, tags, tag);
    }
    if let Some(logs) = &span.logs {
        s.list(11, logs, log);
    }
    s.stop();
    out.len() - start
}

fn span_ref(r: &SpanRef, out: &mut Vec<u8>) {
    let mut s = Struct::new(out);
    s.i32(1, r.ref_type as i32);
    s.i64(2, r.trace_id_low);
    s.i64(3, r.trace_id_high);
    s.i64(4, r.span_id);
    s.stop();
}

fn tag(t: &Tag, out: &mut Vec<u8>) {
    let mut s = Struct::new(out);
    s.string(1, &t.key);
    s.i32(2, t.v_type as i32);
    if let Some(v) = &t.v_str {
        s.string(3, v);
    }
    if let Some(v) = t.v_double {
        s.header(DOUBLE, 4);
        s.out.extend_from_slice(&v.to_le_bytes());
    }
    if let Some(v) = t.v_bool {
        s.header(if v { BOOL_TRUE } else { BOOL_FALSE }, 5);
    }
    if let Some(v) = t.v_long {
        s.i64(6, v);
    }
    if let Some(v) = &t.v_binary {
        s.header(BINARY, 7);
        bytes(clamp_bytes(v), s.out);
    }
    s.stop();
}

fn log(l: &Log, out: &mut Vec<u8>) {
    let mut s = Struct::new(out);
    s.i64(1, l.timestamp);
    s.list(2, &l.fields, tag);
    s.stop();
}

/// The fields of one struct being written: the last field id, for the header deltas.
struct Struct<'a> {
    out: &'a mut Vec<u8>,
    last_id: i16,
}

impl<'a> Struct<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out, last_id: 0 }
    }

    fn header(&mut self, field_type: u8, id: i16) {
        let delta = id - self.last_id;
        if delta > 0 && delta < 15 {
            self.out.push(((delta as u8) << 4) | field_type);
        } else {
            self.out.push(field_type);
            varint(zigzag(i64::from(id)), self.out);
        }
        self.last_id = id;
    }

    fn i32(&mut self, id: i16, value: i32) {
        self.header(I32, id);
        varint(zigzag(i64::from(value)), self.out);
    }

    fn i64(&mut self, id: i16, value: i64) {
        self.header(I64, id);
        varint(zigzag(value), self.out);
    }

    fn string(&mut self, id: i16, value: &str) {
        self.header(BINARY, id);
        bytes(clamp_str(value).as_bytes(), self.out);
    }

    fn list<T>(&mut self, id: i16, items: &[T], write: fn(&T, &mut Vec<u8>)) {
        self.header(LIST, id);
        let items = &items[..items.len().min(MAX_THRIFT_LEN)];
        if items.len() <= 14 {
            self.out.push(((items.len() as u8) << 4) | STRUCT);
        } else {
            self.out.push(0xF0 | STRUCT);
            varint(items.len() as u64, self.out);
        }
        for item in items {
            write(item, self.out);
        }
    }

    fn stop(self) {
        self.out.push(STOP);
    }
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn bytes(b: &[u8], out: &mut Vec<u8>) {
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use proptest::prelude::*;
    use thrift::protocol::TCompactOutputProtocol;

    use super::*;
    use crate::trace::jaeger::model::{SpanRefType, TagType};

    /// The `thrift` crate's encoding of `span`: the reference.
    fn reference(span: &Span) -> Vec<u8> {
        let mut out = Vec::new();
        span.write_to_out_protocol(&mut TCompactOutputProtocol::new(&mut out))
            .expect("writing into memory");
        out
    }

    fn any_tag() -> impl Strategy<Value = Tag<'static>> {
        let key = any::<String>;
        prop_oneof![
            (key(), any::<String>()).prop_map(|(k, v)| Tag::string(k, v)),
            (key(), any::<f64>()).prop_map(|(k, v)| Tag::double(k, v)),
            (key(), any::<bool>()).prop_map(|(k, v)| Tag::bool(k, v)),
            (key(), any::<i64>()).prop_map(|(k, v)| Tag::long(k, v)),
            (key(), proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(k, v)| Tag::binary(k, v)),
        ]
    }

    fn any_span() -> impl Strategy<Value = Span<'static>> {
        let ids = (any::<i64>(), any::<i64>(), any::<i64>(), any::<i64>());
        let refs = proptest::option::of(proptest::collection::vec(
            (any::<bool>(), any::<i64>(), any::<i64>(), any::<i64>()).prop_map(
                |(follows, low, high, span)| SpanRef {
                    ref_type: if follows {
                        SpanRefType::FollowsFrom
                    } else {
                        SpanRefType::ChildOf
                    },
                    trace_id_low: low,
                    trace_id_high: high,
                    span_id: span,
                },
            ),
            0..20,
        ));
        let tags = proptest::option::of(proptest::collection::vec(any_tag(), 0..20));
        let logs = proptest::option::of(proptest::collection::vec(
            (any::<i64>(), proptest::collection::vec(any_tag(), 0..16))
                .prop_map(|(timestamp, fields)| Log { timestamp, fields }),
            0..17,
        ));
        (
            ids,
            any::<String>(),
            refs,
            any::<i32>(),
            (any::<i64>(), any::<i64>()),
            tags,
            logs,
        )
            .prop_map(
                |(
                    (low, high, id, parent),
                    name,
                    references,
                    flags,
                    (start, duration),
                    tags,
                    logs,
                )| {
                    Span {
                        trace_id_low: low,
                        trace_id_high: high,
                        span_id: id,
                        parent_span_id: parent,
                        operation_name: Cow::Owned(name),
                        references,
                        flags,
                        start_time: start,
                        duration,
                        tags,
                        logs,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn a_span_is_encoded_byte_for_byte_as_the_thrift_crate_encodes_it(span in any_span()) {
            let mut out = vec![0xAB];
            let size = encode_span(&span, &mut out);
            prop_assert_eq!(size, out.len() - 1);
            prop_assert_eq!(&out[1..], &reference(&span)[..]);
        }
    }

    #[test]
    fn every_tag_type_and_long_lists() {
        let tags: Vec<Tag> = (0..40)
            .map(|i| match i % 5 {
                0 => Tag::string(format!("k{i}"), "v".repeat(i)),
                1 => Tag::double("d", i as f64 / 3.0),
                2 => Tag::bool("b", i % 2 == 0),
                3 => Tag::long("l", -(i as i64) << 40),
                _ => Tag::binary("bin", vec![i as u8; i]),
            })
            .collect();
        assert!(tags.iter().any(|t| t.v_type == TagType::Binary));
        let span = Span {
            trace_id_low: i64::MIN,
            trace_id_high: i64::MAX,
            span_id: -1,
            parent_span_id: 0,
            operation_name: Cow::Borrowed("GET /v2/{name}/blobs/{digest}"),
            references: Some(Vec::new()),
            flags: 1,
            start_time: 1_700_000_000_000_000,
            duration: 1234,
            tags: Some(tags.clone()),
            logs: Some(vec![Log {
                timestamp: 1,
                fields: tags,
            }]),
        };
        let mut out = Vec::new();
        encode_span(&span, &mut out);
        assert_eq!(out, reference(&span));
    }
}
