//! The message codec: a 4-byte big-endian body length, then the postcard encoding of the message.
//!
//! Length-prefixing lets the receiver refuse an oversized frame as soon as it has read the
//! header, before buffering the body, so a misbehaving peer costs at most `max_frame_size` of
//! memory per stream. Decoding is strict: a body must decode to exactly one message with no
//! bytes left over.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::FrameError;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Default maximum frame body size: 1 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 1024 * 1024;

/// A message already encoded as a complete frame (header and body).
///
/// Encode once with [`encode`] (or `Transport::encode`) and send the same frame to many peers
/// without serializing again. Cloning is cheap (reference counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// Total length on the wire, header included.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the frame is empty (never true for frames made by [`encode`]).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The body length (without the header).
    pub fn body_len(&self) -> usize {
        self.0.len().saturating_sub(HEADER_LEN)
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    pub(crate) fn into_bytes(self) -> Bytes {
        self.0
    }
}

/// Encodes `msg` as a frame, refusing bodies larger than `max_frame_size`.
pub fn encode<M: Serialize + ?Sized>(msg: &M, max_frame_size: usize) -> Result<Frame, FrameError> {
    // Measure first so the frame is built in one exact allocation.
    let len = postcard::serialize_with_flavor::<M, postcard::ser_flavors::Size, usize>(
        msg,
        postcard::ser_flavors::Size::default(),
    )
    .map_err(FrameError::Encode)?;
    if len > max_frame_size || len > u32::MAX as usize {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame_size,
        });
    }
    let mut buf = Vec::with_capacity(HEADER_LEN + len);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    let buf = postcard::to_extend(msg, buf).map_err(FrameError::Encode)?;
    debug_assert_eq!(buf.len(), HEADER_LEN + len);
    Ok(Frame(Bytes::from(buf)))
}

/// Decodes a frame body into exactly one message.
pub fn decode<M: DeserializeOwned>(body: &[u8]) -> Result<M, FrameError> {
    let (msg, rest) = postcard::take_from_bytes::<M>(body).map_err(FrameError::Decode)?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes(rest.len()));
    }
    Ok(msg)
}

/// Below this capacity a decoder keeps its buffer while a small partial frame waits in it.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Incremental frame splitter for a byte stream that arrives in arbitrary chunks.
///
/// Frames are handed out as slices of an internal buffer (decode them before pushing more).
/// The buffer holds at most one partial frame plus the last chunk pushed, and its memory
/// follows what was received, not what a header announces: it grows by doubling up to the end
/// of the frame being received, is freed whenever the decoder is empty at a frame boundary,
/// and shrinks when a small partial frame follows a large one. [`FrameDecoder::capacity_after_push`]
/// tells the memory a push will hold before it is made, so that callers can charge it to a
/// budget first.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the unread part of `buf`.
    start: usize,
    max_frame_size: usize,
}

impl FrameDecoder {
    /// A decoder refusing bodies larger than `max_frame_size`.
    pub fn new(max_frame_size: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max_frame_size,
        }
    }

    /// Header and body length of the frame at the front, once its header is buffered and
    /// announces an acceptable size.
    fn frame_end(&self) -> Option<usize> {
        let avail = &self.buf[self.start..];
        let header: [u8; HEADER_LEN] = avail.get(..HEADER_LEN)?.try_into().ok()?;
        let len = u32::from_be_bytes(header) as usize;
        (len <= self.max_frame_size).then_some(HEADER_LEN + len)
    }

    /// The buffer's capacity once `n` more bytes are pushed.
    pub fn capacity_after_push(&self, n: usize) -> usize {
        let needed = self.buffered().saturating_add(n);
        let cap = self.buf.capacity();
        let grown = match self.frame_end() {
            // Double towards the end of the announced frame, never past it.
            Some(end) if end > needed => cap.saturating_mul(2).clamp(needed, end),
            _ => needed,
        };
        if needed > cap || cap > 2 * grown.max(KEEP_CAPACITY) {
            grown
        } else {
            cap
        }
    }

    /// Memory the decoder holds now, in bytes.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        let target = self.capacity_after_push(data.len());
        if target == self.buf.capacity() {
            if self.start > 0 {
                // Move the partial frame to the front (it is at most one frame).
                self.buf.drain(..self.start);
                self.start = 0;
            }
        } else {
            let mut buf = Vec::with_capacity(target);
            buf.extend_from_slice(&self.buf[self.start..]);
            self.buf = buf;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The body of the next complete frame, if one is buffered.
    ///
    /// Fails with [`FrameError::TooLarge`] as soon as a header announces an oversized body; the
    /// decoder must not be used after an error.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let avail = &self.buf[self.start..];
        if avail.len() < HEADER_LEN {
            if avail.is_empty() {
                // At a frame boundary with nothing buffered: give the memory back.
                self.buf = Vec::new();
                self.start = 0;
            }
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > self.max_frame_size {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_size,
            });
        }
        if avail.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let body = self.start + HEADER_LEN;
        self.start = body + len;
        Ok(Some(&self.buf[body..body + len]))
    }

    /// Bytes buffered that do not yet form a complete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Checks that the stream ended on a frame boundary.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.buffered() {
            0 => Ok(()),
            n => Err(FrameError::Truncated(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Ping(u64),
        Data { to: [u8; 32], payload: Vec<u8> },
        Text(String),
        Empty,
    }

    fn arb_msg() -> impl Strategy<Value = Msg> {
        prop_oneof![
            any::<u64>().prop_map(Msg::Ping),
            (
                any::<[u8; 32]>(),
                proptest::collection::vec(any::<u8>(), 0..3000)
            )
                .prop_map(|(to, payload)| Msg::Data { to, payload }),
            ".{0,200}".prop_map(Msg::Text),
            Just(Msg::Empty),
        ]
    }

    proptest! {
        /// Any sequence of messages, cut into arbitrary chunks, decodes back in order.
        #[test]
        fn round_trip_in_arbitrary_chunks(
            msgs in proptest::collection::vec(arb_msg(), 0..20),
            cuts in proptest::collection::vec(1usize..700, 1..50),
        ) {
            let mut wire = Vec::new();
            for m in &msgs {
                let f = encode(m, DEFAULT_MAX_FRAME_SIZE).unwrap();
                prop_assert_eq!(f.body_len() + HEADER_LEN, f.len());
                wire.extend_from_slice(f.as_bytes());
            }
            let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
            let mut out = Vec::new();
            let mut pos = 0;
            let mut i = 0;
            while pos < wire.len() {
                let n = cuts[i % cuts.len()].min(wire.len() - pos);
                dec.push(&wire[pos..pos + n]);
                pos += n;
                i += 1;
                while let Some(body) = dec.next_frame().unwrap() {
                    out.push(decode::<Msg>(body).unwrap());
                }
            }
            prop_assert!(dec.finish().is_ok());
            prop_assert_eq!(out, msgs);
        }

        /// Random bytes never panic the decoder; they give frames, errors or need more data.
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut dec = FrameDecoder::new(1024);
            dec.push(&data);
            while let Ok(Some(body)) = dec.next_frame() {
                let _ = decode::<Msg>(body);
            }
        }
    }

    #[test]
    fn encode_refuses_oversized() {
        let m = Msg::Data {
            to: [0; 32],
            payload: vec![0; 2000],
        };
        match encode(&m, 1000) {
            Err(FrameError::TooLarge { len, max: 1000 }) => assert!(len > 2000),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn decoder_refuses_oversized_header_before_body() {
        let mut dec = FrameDecoder::new(100);
        dec.push(&101u32.to_be_bytes());
        assert!(matches!(
            dec.next_frame(),
            Err(FrameError::TooLarge { len: 101, max: 100 })
        ));
    }

    #[test]
    fn trailing_and_truncated_are_errors() {
        let f = encode(&Msg::Ping(7), 100).unwrap();
        let mut body = f.as_bytes()[HEADER_LEN..].to_vec();
        body.push(0);
        assert!(matches!(
            decode::<Msg>(&body),
            Err(FrameError::TrailingBytes(1))
        ));
        let mut dec = FrameDecoder::new(100);
        dec.push(&f.as_bytes()[..f.len() - 1]);
        assert!(dec.next_frame().unwrap().is_none());
        assert!(matches!(dec.finish(), Err(FrameError::Truncated(_))));
        assert!(matches!(
            decode::<Msg>(&[0xff, 0xff]),
            Err(FrameError::Decode(_))
        ));
    }

    #[test]
    fn memory_follows_the_bytes_received_not_the_header() {
        let max = 1024 * 1024;
        let mut dec = FrameDecoder::new(max);
        let mut wire = (max as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(&[7; 100]);
        dec.push(&wire);
        assert!(dec.next_frame().unwrap().is_none());
        // A header announcing 1 MiB does not allocate 1 MiB.
        assert!(dec.capacity() < 1024, "capacity {}", dec.capacity());
        // Growing never passes the end of the announced frame, and the plan is what happens.
        let mut got = wire.len() - HEADER_LEN;
        let chunk = vec![7u8; 1400];
        while got < max {
            let n = chunk.len().min(max - got);
            let plan = dec.capacity_after_push(n);
            dec.push(&chunk[..n]);
            assert_eq!(dec.capacity(), plan);
            assert!(dec.capacity() <= HEADER_LEN + max);
            got += n;
        }
        assert_eq!(dec.next_frame().unwrap().map(|b| b.len()), Some(max));
        // Empty at a frame boundary: the memory is given back.
        assert!(dec.next_frame().unwrap().is_none());
        assert_eq!(dec.capacity(), 0);
    }

    #[test]
    fn a_small_partial_frame_after_a_large_one_shrinks_the_buffer() {
        let mut dec = FrameDecoder::new(1 << 20);
        let big = encode(
            &Msg::Data {
                to: [1; 32],
                payload: vec![0; 300_000],
            },
            1 << 20,
        )
        .unwrap();
        let small = encode(&Msg::Ping(9), 100).unwrap();
        let mut wire = big.as_bytes().to_vec();
        wire.extend_from_slice(&small.as_bytes()[..3]);
        dec.push(&wire);
        assert!(dec.next_frame().unwrap().is_some());
        assert!(dec.next_frame().unwrap().is_none());
        dec.push(&small.as_bytes()[3..]);
        assert!(
            dec.capacity() <= KEEP_CAPACITY,
            "capacity {}",
            dec.capacity()
        );
        let body = dec.next_frame().unwrap().unwrap();
        assert_eq!(decode::<Msg>(body).unwrap(), Msg::Ping(9));
    }

    #[test]
    fn exact_header_layout() {
        let f = encode(&Msg::Ping(1), 100).unwrap();
        // enum variant 0, varint 1
        assert_eq!(f.as_bytes().as_ref(), &[0, 0, 0, 2, 0, 1]);
    }
}
