//! How a service puts its typed messages into bytes: a postcard-encoded header followed by an
//! optional payload, which decoding hands back as a slice of the received buffer (no copy, so
//! a payload fanned out to many peers is shared, not duplicated).

use bytes::{Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

/// A service message that could not be read.
#[derive(Debug, Error)]
#[error("malformed service message: {0}")]
pub struct CodecError(#[from] postcard::Error);

/// `header` (postcard) followed by `payload`.
pub fn encode<H: Serialize>(header: &H, payload: &[u8]) -> Bytes {
    // A header of plain fields cannot fail to encode; an empty header is refused later.
    let head = postcard::to_stdvec(header).unwrap_or_default();
    let mut b = BytesMut::with_capacity(head.len() + payload.len());
    b.extend_from_slice(&head);
    b.extend_from_slice(payload);
    b.freeze()
}

/// The header and the payload after it (a slice of `data`).
pub fn decode<H: DeserializeOwned>(data: &Bytes) -> Result<(H, Bytes), CodecError> {
    let (h, rest) = postcard::take_from_bytes::<H>(data)?;
    let at = data.len() - rest.len();
    Ok((h, data.slice(at..)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    enum Head {
        A { n: u64 },
        B,
    }

    #[test]
    fn header_and_payload_round_trip() {
        let b = encode(&Head::A { n: 300 }, b"payload");
        let (h, p) = decode::<Head>(&b).expect("decodes");
        assert_eq!(h, Head::A { n: 300 });
        assert_eq!(&p[..], b"payload");
        let (h, p) = decode::<Head>(&encode(&Head::B, &[])).expect("decodes");
        assert_eq!((h, p.len()), (Head::B, 0));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode::<Head>(&Bytes::from_static(&[7, 1, 2])).is_err());
        assert!(decode::<Head>(&Bytes::new()).is_err());
        // A truncated varint.
        assert!(decode::<Head>(&Bytes::from_static(&[0, 0xff])).is_err());
    }
}
