//! [`MessageFrames`]: counts the gRPC messages of a body from its length-prefixed framing.
//!
//! Every gRPC message on the wire is a 5-byte prefix (a compression flag, `0` or `1`, then the
//! length as a 4-byte big-endian integer) followed by that many bytes. HTTP/2 data frames do
//! not line up with messages: a message may span several frames and a frame may hold several
//! messages. The reader keeps only its position in the framing (how much of a prefix it has
//! seen, how many payload bytes are left), never the bytes themselves.
//!
//! A message is counted when its last byte has been seen. A partial message (a body that
//! ends, fails or is dropped inside a prefix or a payload) counts nothing, whatever length
//! its prefix announced. A flag byte other than `0` or `1` is not gRPC framing (the peer
//! will reject the body too): the reader counts nothing more in that body.

use std::io::IoSlice;

use bytes::Buf;

/// The length of a message's prefix: the compression flag and the 4-byte length.
const PREFIX_LEN: u8 = 5;

/// How many pieces of a non-contiguous data frame are read; a frame in more pieces than
/// this stops the count (no frame type used by hyper or tonic has more than one).
const MAX_PIECES: usize = 8;

/// The position of a reader in the framing of one body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Inside a prefix: `seen` of its 5 bytes, and the length read so far.
    Prefix { seen: u8, len: u32 },
    /// Inside a message's payload, with `left` bytes to go.
    Payload { left: u32 },
    /// Not gRPC framing, or bytes the reader could not see: counts nothing more.
    Lost,
}

/// Counts the messages of one body's data frames, across frame boundaries, without
/// buffering or allocating. See the [module docs](self) for what counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageFrames {
    position: Position,
}

impl Default for MessageFrames {
    fn default() -> Self {
        Self {
            position: Position::Prefix { seen: 0, len: 0 },
        }
    }
}

impl MessageFrames {
    /// Reads the data of one frame; returns how many messages ended in it.
    pub(crate) fn read_buf<D: Buf>(&mut self, data: &D) -> u64 {
        let total = data.remaining();
        if data.chunk().len() == total {
            return self.read(data.chunk());
        }
        let mut pieces = [IoSlice::new(&[]); MAX_PIECES];
        let filled = data.chunks_vectored(&mut pieces);
        let mut ended = 0;
        let mut seen = 0;
        for piece in &pieces[..filled] {
            ended += self.read(piece);
            seen += piece.len();
        }
        if seen < total {
            // Bytes we could not see: where the next prefix starts is unknown.
            self.position = Position::Lost;
        }
        ended
    }

    /// Reads `bytes`, the next bytes of the body; returns how many messages ended in them.
    pub(crate) fn read(&mut self, mut bytes: &[u8]) -> u64 {
        let mut ended = 0;
        while !bytes.is_empty() {
            match &mut self.position {
                Position::Lost => break,
                Position::Prefix { seen, len } => {
                    let Some((&byte, rest)) = bytes.split_first() else {
                        break;
                    };
                    bytes = rest;
                    if *seen == 0 && byte > 1 {
                        self.position = Position::Lost;
                        break;
                    }
                    if *seen > 0 {
                        *len = (*len << 8) | u32::from(byte);
                    }
                    *seen += 1;
                    if *seen == PREFIX_LEN {
                        let left = *len;
                        self.position = Position::Payload { left };
                        // An empty message ends with its prefix.
                        ended += self.end_if_done();
                    }
                }
                Position::Payload { left } => {
                    let take = bytes
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    bytes = &bytes[take..];
                    // `take <= left`, so it fits.
                    *left -= u32::try_from(take).unwrap_or(*left);
                    ended += self.end_if_done();
                }
            }
        }
        ended
    }

    /// Whether the reader is between messages (nothing partial read).
    #[cfg(test)]
    fn between_messages(&self) -> bool {
        self.position == Position::Prefix { seen: 0, len: 0 }
    }

    /// Ends the message in progress if its payload is complete: 1 if it did.
    fn end_if_done(&mut self) -> u64 {
        if self.position == (Position::Payload { left: 0 }) {
            *self = Self::default();
            1
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    /// A message with `payload` as gRPC frames it.
    fn message(payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        [&[0][..], &len, payload].concat()
    }

    #[test]
    fn a_message_split_over_three_frames_counts_once_at_its_last_byte() {
        let wire = message(b"hello world");
        let mut frames = MessageFrames::default();
        assert_eq!(frames.read(&wire[..3]), 0, "inside the prefix");
        assert_eq!(frames.read(&wire[3..9]), 0, "inside the payload");
        assert!(!frames.between_messages());
        assert_eq!(frames.read(&wire[9..]), 1);
        assert!(frames.between_messages());
    }

    #[test]
    fn three_messages_in_one_frame_count_three() {
        let wire = [message(b"a"), message(b""), message(b"ccc")].concat();
        let mut frames = MessageFrames::default();
        assert_eq!(frames.read(&wire), 3);
        assert!(frames.between_messages());
    }

    #[test]
    fn a_frame_ending_one_message_and_starting_the_next_counts_the_first() {
        let wire = [message(b"first"), message(b"second")].concat();
        let mut frames = MessageFrames::default();
        assert_eq!(frames.read(&wire[..12]), 1);
        assert_eq!(frames.read(&wire[12..]), 1);
    }

    #[test]
    fn a_truncated_message_counts_nothing() {
        let wire = message(b"truncated");
        let mut frames = MessageFrames::default();
        assert_eq!(frames.read(&wire[..wire.len() - 1]), 0);
        assert!(!frames.between_messages());
        let mut prefix_only = MessageFrames::default();
        assert_eq!(prefix_only.read(&wire[..4]), 0);
    }

    #[test]
    fn a_length_near_4_gib_counts_only_when_every_byte_arrived() {
        let mut frames = MessageFrames::default();
        let chunk = vec![0u8; 1 << 16];
        assert_eq!(frames.read(&[0, 0xff, 0xff, 0xff, 0xff]), 0);
        for _ in 0..64 {
            assert_eq!(frames.read(&chunk), 0);
        }
        assert_eq!(
            frames.position,
            Position::Payload {
                left: u32::MAX - (64 << 16)
            }
        );
        // The body ends here: nothing counted. Were the rest to arrive, the message would
        // count at its last byte (skipping the 4 GiB in between).
        frames.position = Position::Payload { left: 3 };
        assert_eq!(frames.read(&[1, 2, 3, 0, 0, 0, 0, 0]), 2);
    }

    #[test]
    fn a_bad_compression_flag_stops_the_count() {
        let mut frames = MessageFrames::default();
        let wire = [vec![7, 0, 0, 0, 0], message(b"x")].concat();
        assert_eq!(frames.read(&wire), 0);
        assert_eq!(
            frames.read(&message(b"y")),
            0,
            "lost for the rest of the body"
        );
    }

    #[test]
    fn compressed_messages_count_like_plain_ones() {
        let wire = [vec![1, 0, 0, 0, 2, 9, 9], message(b"z")].concat();
        assert_eq!(MessageFrames::default().read(&wire), 2);
    }

    #[test]
    fn a_non_contiguous_frame_is_read_piece_by_piece() {
        let wire = [message(b"ab"), message(b"cd")].concat();
        let data = Bytes::copy_from_slice(&wire[..4]).chain(Bytes::copy_from_slice(&wire[4..]));
        assert_eq!(MessageFrames::default().read_buf(&data), 2);
    }

    proptest! {
        /// However the bytes of whole messages are cut into frames, each counts once; a cut
        /// body counts only the messages whose last byte it holds.
        #[test]
        fn any_split_counts_each_whole_message_once(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            keep in any::<prop::sample::Index>(),
        ) {
            let messages: Vec<Vec<u8>> = payloads.iter().map(|p| message(p)).collect();
            let wire = messages.concat();
            let kept = if wire.is_empty() { 0 } else { keep.index(wire.len() + 1) };
            let mut ends: Vec<usize> = cuts.iter().map(|c| c.index(kept + 1)).collect();
            ends.push(kept);
            ends.sort_unstable();
            let (mut frames, mut start, mut counted) = (MessageFrames::default(), 0, 0);
            for end in ends {
                counted += frames.read(&wire[start..end]);
                start = end;
            }
            let mut whole = 0;
            let mut at = 0;
            for m in &messages {
                at += m.len();
                if at <= kept {
                    whole += 1;
                }
            }
            prop_assert_eq!(counted, whole);
        }
    }
}
