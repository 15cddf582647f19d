//! `p2ps bench trust`: what signed origins cost per message, against the encoding and decoding
//! every message already pays, measured in the same run.
//!
//! A routed message now carries its origin's signed record and an envelope signed by the
//! origin; every node that handles it checks both (a record seen before is not checked again,
//! so a steady stream from one origin pays one check per hop). Reported: the time to encode
//! and decode a routed 64-byte data message (the baseline), to seal it (one Ed25519 signature)
//! and to verify envelope and record (two verifications), and the bytes on the wire against
//! the same message without proofs, times and message numbers (protocol version 2's layout).

use anyhow::{Context, Result};
use p2ps::{KeySigner, OverlayId};
use p2ps_overlay::{Body, Contact, Envelope, Message, RingId, Routed, Sealed, Time};
use p2ps_transport::{Identity, SigningKey};
use std::hint::black_box;
use std::time::Instant;

/// Arguments of `p2ps bench trust`.
#[derive(Debug, clap::Args)]
pub struct TrustBenchArgs {
    /// Messages per measurement.
    #[arg(long, default_value_t = 5000)]
    pub messages: u32,
    /// Payload bytes of the routed data message.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Nanoseconds per call of `f`, over `n` calls.
fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_nanos() as f64 / f64::from(n.max(1))
}

/// Runs the benchmark and prints its report.
pub fn run(args: TrustBenchArgs) -> Result<()> {
    let identity = Identity::generate().context("generating a key")?;
    let signer = KeySigner(SigningKey::new(&identity).context("loading the signing key")?);
    let me = OverlayId(identity.node_id());
    let addrs = vec!["192.0.2.1:7000".parse().context("address")?];
    let target = OverlayId(Identity::generate().context("generating a key")?.node_id());
    let payload = vec![7u8; args.payload];
    let now = Time::from_secs(1_800_000_000);
    let origin = Contact::signed(&signer, addrs.clone(), None, now);
    let env = Envelope {
        origin,
        seq: 0x1234_5678_9abc_def0,
        issued: now,
        key: RingId(u128::MAX / 3),
        body: Body::Service {
            service: p2ps_overlay::messaging::MESSAGES,
            class: p2ps_overlay::Class::User,
            target: Some(target),
            data: p2ps_overlay::service::encode(&p2ps_overlay::messaging::Wire::Data, &payload),
        },
    };
    let sealed = Sealed::seal(&signer, env.clone());
    let msg = Message::Routed(Routed::at_hop(3, Vec::new(), sealed.clone()));
    let bytes = postcard::to_stdvec(&msg).context("encoding")?;
    // The same message as protocol version 2 laid it out: key, origin contact, hops, body.
    let v2 = postcard::to_stdvec(&(
        RingId(u128::MAX / 3),
        (me, &addrs, None::<()>),
        3u16,
        (Some(target), &payload),
    ))
    .context("encoding")?;

    let n = args.messages;
    let codec = per_call(n, || {
        let b = postcard::to_stdvec(black_box(&msg)).unwrap_or_default();
        let m: Option<Message<OverlayId>> = postcard::from_bytes(&b).ok();
        black_box(m);
    });
    let sign = per_call(n, || {
        black_box(Sealed::seal(&signer, black_box(env.clone())));
    });
    let verify = per_call(n, || {
        black_box(black_box(&sealed).verify() && sealed.env.origin.verify());
    });
    let ok = sealed.verify() && sealed.env.origin.verify();
    anyhow::ensure!(ok, "a sealed message did not verify");
    let report = serde_json::json!({
        "messages": n,
        "payload_bytes": args.payload,
        "codec_ns": codec,
        "sign_ns": sign,
        "verify_ns": verify,
        "sign_vs_codec": sign / codec,
        "verify_vs_codec": verify / codec,
        "bytes": bytes.len(),
        "bytes_v2": v2.len(),
        "bytes_added": bytes.len() as i64 - v2.len() as i64,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "routed {} B data message, {n} each:\n  encode+decode {:>8.0} ns (baseline)\n  \
             seal (1 signature) {:>8.0} ns  ({:.1}x baseline)\n  verify envelope + record \
             {:>8.0} ns  ({:.1}x baseline)\n  bytes {} (protocol 2: {}, +{})",
            args.payload,
            codec,
            sign,
            sign / codec,
            verify,
            verify / codec,
            bytes.len(),
            v2.len(),
            bytes.len() as i64 - v2.len() as i64
        );
    }
    Ok(())
}
