//! Entry points for fuzzing the transport's decoders of what peers send (`p2ps fuzz`): control
//! messages, relay headers, and the frame splitter fed in arbitrary chunks. Each takes bytes,
//! decodes them the way a node does, and says whether they decoded; valid examples serve as
//! seeds for mutations. Not an API for applications.

use crate::control::{parse, Control};
use crate::frame::FrameDecoder;
use crate::relay::protocol::{
    decode_header_body, encode_header, ConnectReply, ConnectRequest, IncomingCircuit,
    IncomingReply, RefuseCode, MAX_HEADER,
};
use crate::relay::CircuitLimits;
use std::net::SocketAddr;

/// Decodes a control frame body as a node does; whether it decoded to a known message.
pub fn control(body: &[u8]) -> bool {
    matches!(parse(body), Ok(Some(_)))
}

/// Valid control frame bodies, one of each kind.
pub fn control_seeds() -> Vec<Vec<u8>> {
    let a: SocketAddr = SocketAddr::from(([192, 0, 2, 1], 7000));
    let b: SocketAddr = "[2001:db8::1]:4433".parse().unwrap_or(a);
    let msgs = [
        Control::Observed(a),
        Control::PunchRequest {
            id: 1,
            target: [7; 32],
            candidates: vec![a, b],
        },
        Control::PunchOffer {
            id: 2,
            from: [8; 32],
            candidates: vec![b],
        },
        Control::PunchAccept {
            id: 3,
            requester: [9; 32],
            candidates: vec![a],
        },
        Control::PunchDecline {
            id: 4,
            requester: [1; 32],
            code: 2,
        },
        Control::PunchGo {
            id: 5,
            target: [2; 32],
            candidates: Vec::new(),
        },
        Control::PunchRefused {
            id: 6,
            target: [3; 32],
            code: 1,
        },
    ];
    msgs.iter()
        .filter_map(|m| postcard::to_allocvec(m).ok())
        .collect()
}

/// Decodes a length-prefixed relay header as each kind a relay or an end reads; how many
/// kinds it decoded as.
pub fn relay_header(bytes: &[u8]) -> usize {
    let Some((len, body)) = bytes.split_first_chunk::<2>() else {
        return 0;
    };
    let len = usize::from(u16::from_be_bytes(*len));
    if len > MAX_HEADER || body.len() < len {
        return 0;
    }
    let body = &body[..len];
    [
        decode_header_body::<ConnectRequest>(body).is_ok(),
        decode_header_body::<ConnectReply>(body).is_ok(),
        decode_header_body::<IncomingCircuit>(body).is_ok(),
        decode_header_body::<IncomingReply>(body).is_ok(),
    ]
    .into_iter()
    .filter(|ok| *ok)
    .count()
}

/// Valid relay headers, one of each kind.
pub fn relay_seeds() -> Vec<Vec<u8>> {
    let limits = CircuitLimits::default();
    [
        encode_header(&ConnectRequest::Connect { target: [5; 32] }),
        encode_header(&ConnectReply::Accepted { limits }),
        encode_header(&ConnectReply::Refused {
            code: RefuseCode::NotServing,
            reason: "busy".into(),
        }),
        encode_header(&IncomingCircuit {
            from: [6; 32],
            limits,
        }),
        encode_header(&IncomingReply::Accepted),
        encode_header(&IncomingReply::Refused {
            reason: "no".into(),
        }),
    ]
    .into_iter()
    .filter_map(Result::ok)
    .collect()
}

/// Feeds `bytes` to a frame splitter (frames of at most `max_frame` bytes) in chunks cut at
/// `cuts`, handing each whole frame to `body`; stops at the first framing error. The number of
/// frames split.
pub fn frames(
    bytes: &[u8],
    cuts: &[usize],
    max_frame: usize,
    mut body: impl FnMut(&[u8]),
) -> usize {
    let mut d = FrameDecoder::new(max_frame);
    let mut n = 0;
    let mut at = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    points.push(bytes.len());
    for p in points {
        if p < at {
            continue;
        }
        d.push(&bytes[at..p]);
        at = p;
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    body(f);
                    n += 1;
                }
                Ok(None) => break,
                Err(_) => return n,
            }
        }
    }
    n
}
