//! The Jaeger Thrift model (`jaeger.thrift`, `agent.thrift`) and its two wire encodings.
//!
//! The structs mirror the IDL field for field: a `required` field is a plain Rust field and is
//! always written, an `optional` one is an `Option` and is left out of the encoding when `None`.
//! Each struct writes itself with `write_to_out_protocol`, by hand, with the field ids and
//! Thrift types of the IDL.
//!
//! Two encodings are used on the wire:
//!
//! - [`BatchRef::encode_agent_emit_batch`]: what a Jaeger agent reads from UDP: a oneway
//!   `Agent.emitBatch` message in the compact protocol, whose argument struct has the batch
//!   as field 1.
//! - [`BatchRef::encode_binary`]: what a Jaeger collector reads from `POST /api/traces`: a
//!   bare `Batch` struct in the strict binary protocol.
//!
//! The exporter encodes borrowed [`BatchRef`]s; the owned `Batch` and the free encoders exist
//! for the unit tests.
//!
//! Encoding never panics. A string or byte array longer than Thrift can frame (`i32::MAX`
//! bytes) is cut to that length (on a character boundary), and a list longer than `i32::MAX`
//! items keeps its first `i32::MAX`, so every output is a well-formed message.

use std::{
    borrow::Cow,
    cell::RefCell,
    io::{self, Write},
    rc::Rc,
};

use thrift::protocol::{
    TBinaryOutputProtocol, TCompactOutputProtocol, TFieldIdentifier, TListIdentifier,
    TMessageIdentifier, TMessageType, TOutputProtocol, TStructIdentifier, TType,
};

/// The type of a [`Tag`]'s value (`enum TagType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TagType {
    /// The value is in [`Tag::v_str`].
    String = 0,
    /// The value is in [`Tag::v_double`].
    Double = 1,
    /// The value is in [`Tag::v_bool`].
    Bool = 2,
    /// The value is in [`Tag::v_long`].
    Long = 3,
    /// The value is in [`Tag::v_binary`].
    // Part of the IDL; the exporter never makes a binary tag, only the tests do.
    #[cfg_attr(not(test), allow(dead_code))]
    Binary = 4,
}

/// A typed key/value pair (`struct Tag`), its strings borrowed from the span it was converted
/// from where they can be (`'static` when owned).
///
/// Exactly one `v_*` field should be set, the one named by `v_type`; the constructors
/// ([`Tag::string`], [`Tag::double`], [`Tag::bool`], [`Tag::long`], [`Tag::binary`]) do that.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tag<'a> {
    /// 1: the key.
    pub(crate) key: Cow<'a, str>,
    /// 2: which of the value fields holds the value.
    pub(crate) v_type: TagType,
    /// 3: the string value.
    pub(crate) v_str: Option<Cow<'a, str>>,
    /// 4: the floating-point value.
    pub(crate) v_double: Option<f64>,
    /// 5: the boolean value.
    pub(crate) v_bool: Option<bool>,
    /// 6: the integer value.
    pub(crate) v_long: Option<i64>,
    /// 7: the binary value.
    pub(crate) v_binary: Option<Vec<u8>>,
}

impl<'a> Tag<'a> {
    fn empty(key: Cow<'a, str>, v_type: TagType) -> Self {
        Tag {
            key,
            v_type,
            v_str: None,
            v_double: None,
            v_bool: None,
            v_long: None,
            v_binary: None,
        }
    }

    /// A `STRING` tag.
    pub(crate) fn string(key: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) -> Self {
        Tag {
            v_str: Some(value.into()),
            ..Tag::empty(key.into(), TagType::String)
        }
    }

    /// A `DOUBLE` tag.
    pub(crate) fn double(key: impl Into<Cow<'a, str>>, value: f64) -> Self {
        Tag {
            v_double: Some(value),
            ..Tag::empty(key.into(), TagType::Double)
        }
    }

    /// A `BOOL` tag.
    pub(crate) fn bool(key: impl Into<Cow<'a, str>>, value: bool) -> Self {
        Tag {
            v_bool: Some(value),
            ..Tag::empty(key.into(), TagType::Bool)
        }
    }

    /// A `LONG` tag.
    pub(crate) fn long(key: impl Into<Cow<'a, str>>, value: i64) -> Self {
        Tag {
            v_long: Some(value),
            ..Tag::empty(key.into(), TagType::Long)
        }
    }

    /// A `BINARY` tag.
    #[cfg(test)]
    pub(crate) fn binary(key: impl Into<Cow<'a, str>>, value: impl Into<Vec<u8>>) -> Self {
        Tag {
            v_binary: Some(value.into()),
            ..Tag::empty(key.into(), TagType::Binary)
        }
    }

    /// Writes this struct with the given protocol.
    /// The same tag owning its strings.
    pub(crate) fn into_owned(self) -> Tag<'static> {
        Tag {
            key: Cow::Owned(self.key.into_owned()),
            v_type: self.v_type,
            v_str: self.v_str.map(|v| Cow::Owned(v.into_owned())),
            v_double: self.v_double,
            v_bool: self.v_bool,
            v_long: self.v_long,
            v_binary: self.v_binary,
        }
    }

    pub(crate) fn write_to_out_protocol(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_struct_begin(&TStructIdentifier::new("Tag"))?;
        write_string_field(o, 1, &self.key)?;
        write_i32_field(o, 2, self.v_type as i32)?;
        if let Some(v) = &self.v_str {
            write_string_field(o, 3, v)?;
        }
        if let Some(v) = self.v_double {
            field_begin(o, TType::Double, 4)?;
            o.write_double(v)?;
            o.write_field_end()?;
        }
        if let Some(v) = self.v_bool {
            field_begin(o, TType::Bool, 5)?;
            o.write_bool(v)?;
            o.write_field_end()?;
        }
        if let Some(v) = self.v_long {
            write_i64_field(o, 6, v)?;
        }
        if let Some(v) = &self.v_binary {
            field_begin(o, TType::String, 7)?;
            o.write_bytes(clamp_bytes(v))?;
            o.write_field_end()?;
        }
        o.write_field_stop()?;
        o.write_struct_end()
    }
}

/// A timed event with fields (`struct Log`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Log<'a> {
    /// 1: microseconds since the Unix epoch.
    pub(crate) timestamp: i64,
    /// 2: the event's fields; OpenTelemetry exporters put the event name in `event`.
    pub(crate) fields: Vec<Tag<'a>>,
}

impl Log<'_> {
    /// Writes this struct with the given protocol.
    pub(crate) fn write_to_out_protocol(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_struct_begin(&TStructIdentifier::new("Log"))?;
        write_i64_field(o, 1, self.timestamp)?;
        field_begin(o, TType::List, 2)?;
        write_list(o, &self.fields, Tag::write_to_out_protocol)?;
        o.write_field_end()?;
        o.write_field_stop()?;
        o.write_struct_end()
    }
}

/// The kind of a [`SpanRef`] (`enum SpanRefType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SpanRefType {
    /// The span is a child of the referenced span.
    ChildOf = 0,
    /// The span follows from the referenced span (an OpenTelemetry link).
    FollowsFrom = 1,
}

/// A causal reference to another span (`struct SpanRef`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SpanRef {
    /// 1: the kind of reference.
    pub(crate) ref_type: SpanRefType,
    /// 2: the low 64 bits of the referenced trace id.
    pub(crate) trace_id_low: i64,
    /// 3: the high 64 bits of the referenced trace id.
    pub(crate) trace_id_high: i64,
    /// 4: the referenced span id.
    pub(crate) span_id: i64,
}

impl SpanRef {
    /// Writes this struct with the given protocol.
    pub(crate) fn write_to_out_protocol(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_struct_begin(&TStructIdentifier::new("SpanRef"))?;
        write_i32_field(o, 1, self.ref_type as i32)?;
        write_i64_field(o, 2, self.trace_id_low)?;
        write_i64_field(o, 3, self.trace_id_high)?;
        write_i64_field(o, 4, self.span_id)?;
        o.write_field_stop()?;
        o.write_struct_end()
    }
}

/// A named, timed unit of work (`struct Span`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Span<'a> {
    /// 1: the low 64 bits of the trace id.
    pub(crate) trace_id_low: i64,
    /// 2: the high 64 bits of the trace id (0 for 64-bit trace ids).
    pub(crate) trace_id_high: i64,
    /// 3: the span id.
    pub(crate) span_id: i64,
    /// 4: the parent's span id, 0 for a root span.
    pub(crate) parent_span_id: i64,
    /// 5: the operation name.
    pub(crate) operation_name: Cow<'a, str>,
    /// 6: causal references to other spans.
    pub(crate) references: Option<Vec<SpanRef>>,
    /// 7: bit field: 1 = sampled, 2 = debug.
    pub(crate) flags: i32,
    /// 8: start, microseconds since the Unix epoch.
    pub(crate) start_time: i64,
    /// 9: duration in microseconds.
    pub(crate) duration: i64,
    /// 10: the span's tags.
    pub(crate) tags: Option<Vec<Tag<'a>>>,
    /// 11: the span's logs.
    pub(crate) logs: Option<Vec<Log<'a>>>,
}

impl Span<'_> {
    /// The same span owning its strings.
    #[cfg(test)]
    pub(crate) fn into_owned(self) -> Span<'static> {
        Span {
            trace_id_low: self.trace_id_low,
            trace_id_high: self.trace_id_high,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            operation_name: Cow::Owned(self.operation_name.into_owned()),
            references: self.references,
            flags: self.flags,
            start_time: self.start_time,
            duration: self.duration,
            tags: self
                .tags
                .map(|tags| tags.into_iter().map(Tag::into_owned).collect()),
            logs: self.logs.map(|logs| {
                logs.into_iter()
                    .map(|log| Log {
                        timestamp: log.timestamp,
                        fields: log.fields.into_iter().map(Tag::into_owned).collect(),
                    })
                    .collect()
            }),
        }
    }

    /// Writes this struct with the given protocol.
    pub(crate) fn write_to_out_protocol(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_struct_begin(&TStructIdentifier::new("Span"))?;
        write_i64_field(o, 1, self.trace_id_low)?;
        write_i64_field(o, 2, self.trace_id_high)?;
        write_i64_field(o, 3, self.span_id)?;
        write_i64_field(o, 4, self.parent_span_id)?;
        write_string_field(o, 5, &self.operation_name)?;
        if let Some(refs) = &self.references {
            field_begin(o, TType::List, 6)?;
            write_list(o, refs, SpanRef::write_to_out_protocol)?;
            o.write_field_end()?;
        }
        write_i32_field(o, 7, self.flags)?;
        write_i64_field(o, 8, self.start_time)?;
        write_i64_field(o, 9, self.duration)?;
        if let Some(tags) = &self.tags {
            field_begin(o, TType::List, 10)?;
            write_list(o, tags, Tag::write_to_out_protocol)?;
            o.write_field_end()?;
        }
        if let Some(logs) = &self.logs {
            field_begin(o, TType::List, 11)?;
            write_list(o, logs, Log::write_to_out_protocol)?;
            o.write_field_end()?;
        }
        o.write_field_stop()?;
        o.write_struct_end()
    }
}

/// The process that emitted a batch (`struct Process`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Process {
    /// 1: the service name.
    pub(crate) service_name: String,
    /// 2: the process's tags (OpenTelemetry resource attributes).
    pub(crate) tags: Option<Vec<Tag<'static>>>,
}

impl Process {
    /// Writes this struct with the given protocol.
    pub(crate) fn write_to_out_protocol(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_struct_begin(&TStructIdentifier::new("Process"))?;
        write_string_field(o, 1, &self.service_name)?;
        if let Some(tags) = &self.tags {
            field_begin(o, TType::List, 2)?;
            write_list(o, tags, Tag::write_to_out_protocol)?;
            o.write_field_end()?;
        }
        o.write_field_stop()?;
        o.write_struct_end()
    }
}

/// The client's own counters, reported with a batch (`struct ClientStats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct ClientStats {
    /// 1: spans dropped because a queue was full.
    pub(crate) full_queue_dropped_spans: i64,
    /// 2: spans dropped because they could not fit in a packet.
    pub(crate) too_large_dropped_spans: i64,
    /// 3: spans in batches that could not be sent.
    pub(crate) failed_to_emit_spans: i64,
}

impl ClientStats {
    /// Writes this struct with the given protocol.
    pub(crate) fn write_to_out_protocol(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_struct_begin(&TStructIdentifier::new("ClientStats"))?;
        write_i64_field(o, 1, self.full_queue_dropped_spans)?;
        write_i64_field(o, 2, self.too_large_dropped_spans)?;
        write_i64_field(o, 3, self.failed_to_emit_spans)?;
        o.write_field_stop()?;
        o.write_struct_end()
    }
}

/// Spans of one process, reported together (`struct Batch`).
#[cfg(test)]
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Batch {
    /// 1: the process that emitted the spans.
    pub(crate) process: Process,
    /// 2: the spans.
    pub(crate) spans: Vec<Span<'static>>,
    /// 3: an incrementing sequence number, so that a backend can see lost packets.
    pub(crate) seq_no: Option<i64>,
    /// 4: the client's counters.
    pub(crate) stats: Option<ClientStats>,
}

/// The spans of a [`BatchRef`]: structs to encode, or compact list items already encoded.
#[derive(Clone, Copy)]
pub(crate) enum SpanList<'a> {
    /// Spans to encode.
    Structs(&'a [Span<'a>]),
    /// `count` spans already encoded as compact list items, which `append` copies to the
    /// output (a compact struct is encoded the same wherever it stands in a list).
    Compact { count: usize, append: &'a dyn Fn() },
}

impl std::fmt::Debug for SpanList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Structs(spans) => f.debug_tuple("Structs").field(&spans.len()).finish(),
            Self::Compact { count, .. } => f.debug_struct("Compact").field("count", count).finish(),
        }
    }
}

impl SpanList<'_> {
    fn write(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        match self {
            Self::Structs(spans) => write_list(o, spans, Span::write_to_out_protocol),
            Self::Compact { count, append } => {
                let size = i32::try_from(*count).unwrap_or(i32::MAX);
                o.write_list_begin(&TListIdentifier::new(TType::Struct, size))?;
                append();
                o.write_list_end()
            }
        }
    }
}

/// A `Batch` whose process and spans are borrowed, so that the agent can encode parts of
/// one export without cloning them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchRef<'a> {
    pub(crate) process: &'a Process,
    pub(crate) spans: SpanList<'a>,
    pub(crate) seq_no: Option<i64>,
    pub(crate) stats: Option<ClientStats>,
}

impl<'a> BatchRef<'a> {
    #[cfg(test)]
    pub(crate) fn of(batch: &'a Batch) -> Self {
        BatchRef {
            process: &batch.process,
            spans: SpanList::Structs(&batch.spans),
            seq_no: batch.seq_no,
            stats: batch.stats,
        }
    }

    fn write(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_struct_begin(&TStructIdentifier::new("Batch"))?;
        field_begin(o, TType::Struct, 1)?;
        self.process.write_to_out_protocol(o)?;
        o.write_field_end()?;
        field_begin(o, TType::List, 2)?;
        self.spans.write(o)?;
        o.write_field_end()?;
        if let Some(seq_no) = self.seq_no {
            write_i64_field(o, 3, seq_no)?;
        }
        if let Some(stats) = &self.stats {
            field_begin(o, TType::Struct, 4)?;
            stats.write_to_out_protocol(o)?;
            o.write_field_end()?;
        }
        o.write_field_stop()?;
        o.write_struct_end()
    }

    /// Writes the oneway `Agent.emitBatch` message carrying this batch.
    fn write_emit_batch(&self, o: &mut dyn TOutputProtocol, seq_id: i32) -> thrift::Result<()> {
        o.write_message_begin(&TMessageIdentifier::new(
            "emitBatch",
            TMessageType::OneWay,
            seq_id,
        ))?;
        // struct emitBatch_args { 1: jaeger.Batch batch }
        o.write_struct_begin(&TStructIdentifier::new("emitBatch_args"))?;
        field_begin(o, TType::Struct, 1)?;
        self.write(o)?;
        o.write_field_end()?;
        o.write_field_stop()?;
        o.write_struct_end()?;
        o.write_message_end()?;
        o.flush()
    }

    /// The oneway `Agent.emitBatch` message (compact protocol) carrying this batch.
    pub(crate) fn encode_agent_emit_batch(&self, seq_id: i32) -> Vec<u8> {
        let mut buf = Vec::new();
        let written = self.write_emit_batch(&mut TCompactOutputProtocol::new(&mut buf), seq_id);
        or_empty(written, buf)
    }

    /// The same message with the spans already encoded as compact list items: `count` of
    /// them, end to end in `spans`, copied in as they are.
    pub(crate) fn encode_agent_emit_batch_with(
        process: &'a Process,
        (count, spans): (usize, &[u8]),
        seq_no: Option<i64>,
        stats: Option<ClientStats>,
        seq_id: i32,
        capacity: usize,
    ) -> Vec<u8> {
        let out = Rc::new(RefCell::new(Vec::with_capacity(capacity)));
        let append = || out.borrow_mut().extend_from_slice(spans);
        let batch = BatchRef {
            process,
            spans: SpanList::Compact {
                count,
                append: &append,
            },
            seq_no,
            stats,
        };
        let written = batch.write_emit_batch(
            &mut TCompactOutputProtocol::new(SharedBuf(out.clone())),
            seq_id,
        );
        let buf = out.take();
        or_empty(written, buf)
    }

    /// This batch as a bare struct in the strict binary protocol.
    pub(crate) fn encode_binary(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let written = {
            let mut o = TBinaryOutputProtocol::new(&mut buf, true);
            self.write(&mut o).and_then(|()| o.flush())
        };
        or_empty(written, buf)
    }
}

/// Encodes `batch` as the oneway `Agent.emitBatch` message a Jaeger agent reads from UDP
/// (compact protocol; message name `emitBatch`, type ONEWAY, sequence id `seq_id`; the
/// argument struct holds the batch as field 1).
///
/// Writing into memory cannot fail, so the result is always a complete message (an empty
/// vector would only come back if the `thrift` crate reported an error, which it does not
/// for in-memory output).
#[cfg(test)]
pub(crate) fn encode_agent_emit_batch(batch: &Batch, seq_id: i32) -> Vec<u8> {
    BatchRef::of(batch).encode_agent_emit_batch(seq_id)
}

/// Encodes `batch` as a bare `Batch` struct in the strict binary protocol, the body a Jaeger
/// collector takes on `POST /api/traces` (`Content-Type: application/vnd.apache.thrift.binary`).
///
/// Like [`encode_agent_emit_batch`], this cannot fail.
#[cfg(test)]
pub(crate) fn encode_batch_binary(batch: &Batch) -> Vec<u8> {
    BatchRef::of(batch).encode_binary()
}

/// Appends `span` to `out` as a compact list element and returns its size. A struct in a
/// compact list is encoded the same wherever it stands, so a batch's list costs its header plus
/// the sum of these sizes, and the bytes can be copied into any batch. Written by
/// [`compact`](super::compact), the same bytes as the `thrift` crate writes, faster.
pub(crate) fn encode_compact_span(span: &Span, out: &mut Vec<u8>) -> usize {
    super::compact::encode_span(span, out)
}

/// A `Write` into a buffer its owner appends to as well, between two protocol calls.
struct SharedBuf(Rc<RefCell<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn or_empty(written: thrift::Result<()>, buf: Vec<u8>) -> Vec<u8> {
    match written {
        Ok(()) => buf,
        Err(_) => Vec::new(),
    }
}

/// The most bytes (or list items) a Thrift length prefix can state.
pub(crate) const MAX_THRIFT_LEN: usize = i32::MAX as usize;

pub(crate) fn clamp_bytes(b: &[u8]) -> &[u8] {
    &b[..b.len().min(MAX_THRIFT_LEN)]
}

pub(crate) fn clamp_str(s: &str) -> &str {
    if s.len() <= MAX_THRIFT_LEN {
        return s;
    }
    let mut end = MAX_THRIFT_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn field_begin(o: &mut dyn TOutputProtocol, field_type: TType, id: i16) -> thrift::Result<()> {
    // Neither protocol writes field names, so none is allocated.
    o.write_field_begin(&TFieldIdentifier {
        name: None,
        field_type,
        id: Some(id),
    })
}

fn write_string_field(o: &mut dyn TOutputProtocol, id: i16, value: &str) -> thrift::Result<()> {
    field_begin(o, TType::String, id)?;
    o.write_string(clamp_str(value))?;
    o.write_field_end()
}

fn write_i32_field(o: &mut dyn TOutputProtocol, id: i16, value: i32) -> thrift::Result<()> {
    field_begin(o, TType::I32, id)?;
    o.write_i32(value)?;
    o.write_field_end()
}

fn write_i64_field(o: &mut dyn TOutputProtocol, id: i16, value: i64) -> thrift::Result<()> {
    field_begin(o, TType::I64, id)?;
    o.write_i64(value)?;
    o.write_field_end()
}

fn write_list<T>(
    o: &mut dyn TOutputProtocol,
    items: &[T],
    write: fn(&T, &mut dyn TOutputProtocol) -> thrift::Result<()>,
) -> thrift::Result<()> {
    let items = &items[..items.len().min(MAX_THRIFT_LEN)];
    let size = i32::try_from(items.len()).unwrap_or(i32::MAX);
    o.write_list_begin(&TListIdentifier::new(TType::Struct, size))?;
    for item in items {
        write(item, o)?;
    }
    o.write_list_end()
}
