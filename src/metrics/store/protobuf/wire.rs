//! The protobuf wire format, as much of it as the `io.prometheus.client` messages need:
//! varints, fixed 64-bit doubles, zigzag `sint32`/`sint64`, strings and nested messages
//! written straight into the answer's buffer.
//!
//! A nested message's length comes before its bytes but is known only after them: one byte
//! is reserved for it and, when the message turns out 128 bytes or longer, its bytes are moved
//! up to make room for the longer varint (a copy of the message, once per level).

/// The wire types used here.
#[derive(Clone, Copy)]
#[repr(u8)]
enum WireType {
    Varint = 0,
    Fixed64 = 1,
    Len = 2,
}

/// A buffer protobuf fields are appended to.
pub(super) struct Wire {
    pub(super) buf: Vec<u8>,
}

impl Wire {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    fn varint(&mut self, mut value: u64) {
        if value < 0x80 {
            self.buf.push(value as u8);
            return;
        }
        while value >= 0x80 {
            self.buf.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        self.buf.push(value as u8);
    }

    fn key(&mut self, field: u32, wire_type: WireType) {
        self.varint(u64::from(field << 3 | wire_type as u32));
    }

    /// A `double` field.
    pub(super) fn double(&mut self, field: u32, value: f64) {
        self.key(field, WireType::Fixed64);
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    /// A `uint64` or `uint32` field (and an enum's or `int64`'s non-negative value).
    pub(super) fn uint64(&mut self, field: u32, value: u64) {
        self.key(field, WireType::Varint);
        self.varint(value);
    }

    /// An `int64` or `int32` field: a negative value takes ten bytes, its two's complement.
    pub(super) fn int64(&mut self, field: u32, value: i64) {
        self.uint64(field, value as u64);
    }

    /// A `sint64` or `sint32` field (zigzag: small magnitudes of either sign are short).
    pub(super) fn sint64(&mut self, field: u32, value: i64) {
        self.uint64(field, ((value << 1) ^ (value >> 63)) as u64);
    }

    /// A `string` field.
    pub(super) fn string(&mut self, field: u32, value: &str) {
        self.key(field, WireType::Len);
        self.varint(value.len() as u64);
        self.buf.extend_from_slice(value.as_bytes());
    }

    /// A message field whose fields `write` appends.
    pub(super) fn message(&mut self, field: u32, write: impl FnOnce(&mut Self)) {
        let mark = self.begin(field);
        write(self);
        self.end(mark);
    }

    /// Opens a message field: its fields follow, then [`end`](Self::end) with the mark.
    pub(super) fn begin(&mut self, field: u32) -> Mark {
        self.key(field, WireType::Len);
        self.begin_delimited()
    }

    /// Opens a message preceded by its length, no key: one message of a delimited stream.
    pub(super) fn begin_delimited(&mut self) -> Mark {
        self.buf.push(0);
        Mark(self.buf.len())
    }

    /// Closes the message opened at `mark`: its length goes before it.
    pub(super) fn end(&mut self, Mark(start): Mark) {
        let len = self.buf.len() - start;
        if len < 0x80 {
            self.buf[start - 1] = len as u8;
            return;
        }
        let mut prefix = [0_u8; 10];
        let mut n = 0;
        let mut rest = len as u64;
        while rest >= 0x80 {
            prefix[n] = (rest as u8 & 0x7f) | 0x80;
            rest >>= 7;
            n += 1;
        }
        prefix[n] = rest as u8;
        n += 1;
        // Room for the longer prefix: the message moves up by `n - 1` bytes.
        let end = self.buf.len();
        self.buf.resize(end + n - 1, 0);
        self.buf.copy_within(start..end, start + n - 1);
        self.buf[start - 1..start - 1 + n].copy_from_slice(&prefix[..n]);
    }
}

/// Where an open message's bytes start (its one-byte length placeholder just before).
#[must_use = "a message opened is closed with Wire::end"]
pub(super) struct Mark(usize);
