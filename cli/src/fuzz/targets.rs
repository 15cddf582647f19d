//! The fuzz targets: every decoder that takes bytes from outside, fed the way a node feeds it,
//! with valid examples as seeds; and one stateful target that hands decoded messages to
//! simulated nodes, so that handlers meet what decoders let through.

use anyhow::{Context, Result};
use bytes::Bytes;
use p2ps::{KeySigner, OverlayId};
use p2ps_dict::wire::Wire as DictWire;
use p2ps_dict::{DictKey, Part, Record, Stamp};
use p2ps_overlay::service::{encode, service_signed_bytes};
use p2ps_overlay::sim::{SimConfig, SimId, Simulator};
use p2ps_overlay::{
    proof::Signer, Body, Class, Contact, Envelope, Message, RingId, Routed, Sealed, ServiceMessage,
    Time,
};
use p2ps_transport::{frame, fuzz, Identity, SigningKey};

/// Runs one input; whether the decoder accepted it.
pub(crate) type Run = Box<dyn FnMut(&[u8]) -> bool>;

/// A fuzz target.
pub(crate) struct Target {
    /// Its name on the command line.
    pub(crate) name: &'static str,
    /// What it feeds.
    pub(crate) about: &'static str,
    /// Valid inputs to mutate.
    pub(crate) seeds: fn() -> Result<Vec<Vec<u8>>>,
    /// Builds the function that runs one input (with any state it keeps between inputs).
    pub(crate) make: fn() -> Result<Run>,
}

/// Every target.
pub(crate) const TARGETS: &[Target] = &[
    Target {
        name: "frames",
        about: "the frame splitter fed in random chunks, each frame decoded as an overlay message",
        seeds: framed_seeds,
        make: || {
            Ok(Box::new(|b: &[u8]| {
                let cuts: Vec<usize> = b.iter().take(4).map(|x| usize::from(*x) * 7).collect();
                fuzz::frames(b, &cuts, 1 << 20, |body| {
                    let _ = frame::decode::<Message<OverlayId>>(body);
                }) > 0
            }))
        },
    },
    Target {
        name: "overlay",
        about: "an overlay message (a frame body), as a node decodes it",
        seeds: message_seeds,
        make: || Ok(Box::new(|b: &[u8]| frame::decode::<Message<OverlayId>>(b).is_ok())),
    },
    Target {
        name: "services",
        about: "the data of a service message, as the cast, group, messaging and dictionary services decode it",
        seeds: service_seeds,
        make: || {
            Ok(Box::new(|b: &[u8]| {
                let data = Bytes::copy_from_slice(b);
                let cast = p2ps_overlay::service::decode::<p2ps_overlay::cast::Wire<OverlayId>>(&data).is_ok();
                let groups = p2ps_overlay::service::decode::<p2ps_overlay::groups::Wire>(&data).is_ok();
                let msgs = p2ps_overlay::service::decode::<p2ps_overlay::messaging::Wire>(&data).is_ok();
                let dict = p2ps_overlay::service::decode::<DictWire<OverlayId>>(&data).is_ok();
                cast || groups || msgs || dict
            }))
        },
    },
    Target {
        name: "record",
        about: "a dictionary record, decoded and its signature checked",
        seeds: record_seeds,
        make: || {
            Ok(Box::new(|b: &[u8]| {
                postcard::from_bytes::<Record<OverlayId>>(b)
                    .map(|r| {
                        let _ = r.verify();
                        let _ = r.position();
                    })
                    .is_ok()
            }))
        },
    },
    Target {
        name: "transport-control",
        about: "a transport control message (observed addresses, hole punching)",
        seeds: || Ok(fuzz::control_seeds()),
        make: || Ok(Box::new(fuzz::control)),
    },
    Target {
        name: "relay",
        about: "a relay circuit header, as each kind a relay or an end reads",
        seeds: || Ok(fuzz::relay_seeds()),
        make: || Ok(Box::new(|b: &[u8]| fuzz::relay_header(b) > 0)),
    },
    Target {
        name: "ticket",
        about: "a ticket, as `p2ps node --join` and `Node::join` parse it",
        seeds: ticket_seeds,
        make: || {
            Ok(Box::new(|b: &[u8]| {
                String::from_utf8_lossy(b).parse::<p2ps::Ticket>().is_ok()
            }))
        },
    },
    Target {
        name: "network-key",
        about: "a network key file's content, as `p2ps node --network-key` reads it",
        seeds: || {
            let key = p2ps_transport::NetworkKey::generate().context("making a network key")?;
            Ok(vec![format!("{}\n", key.secret_hex()).into_bytes()])
        },
        make: || {
            Ok(Box::new(|b: &[u8]| {
                p2ps_transport::NetworkKey::from_hex(&String::from_utf8_lossy(b)).is_ok()
            }))
        },
    },
    Target {
        name: "control-request",
        about: "a control socket request line, as a running node parses it",
        seeds: || Ok(crate::control::protocol::EXAMPLES.iter().map(|s| s.as_bytes().to_vec()).collect()),
        make: || Ok(Box::new(crate::control::protocol::parses)),
    },
    Target {
        name: "config",
        about: "a `p2ps node --config` file",
        seeds: || Ok(vec![crate::node_cmd::CONFIG_EXAMPLE.as_bytes().to_vec()]),
        make: || {
            Ok(Box::new(|b: &[u8]| {
                crate::node_cmd::config_parses(&String::from_utf8_lossy(b))
            }))
        },
    },
    Target {
        name: "handlers",
        about: "decoded overlay messages handed to simulated nodes running every standard service and the dictionary, from their neighbours",
        seeds: sim_seeds,
        make: sim_handlers,
    },
];

fn signer() -> Result<KeySigner> {
    let identity = Identity::generate().context("generating a key")?;
    Ok(KeySigner(
        SigningKey::new(&identity).context("loading the key")?,
    ))
}

/// Valid overlay messages: a sealed routed message and a few service messages.
fn message_seeds() -> Result<Vec<Vec<u8>>> {
    let signer = signer()?;
    let now = Time::from_secs(1_800_000_000);
    let origin = Contact::signed(&signer, vec!["192.0.2.1:7000".parse()?], None, now);
    let env = Envelope {
        origin,
        seq: 7,
        issued: now,
        key: RingId(u128::MAX / 3),
        body: Body::Service {
            service: p2ps_overlay::messaging::MESSAGES,
            class: Class::User,
            target: None,
            data: encode(&p2ps_overlay::messaging::Wire::Data, b"hello"),
        },
    };
    let sealed = Sealed::seal(&signer, env);
    let mut out = vec![postcard::to_allocvec(&Message::Routed(Routed::at_hop(
        2,
        Vec::new(),
        sealed,
    )))?];
    for data in service_seeds()? {
        let m: Message<OverlayId> = Message::Service(ServiceMessage {
            service: p2ps_dict::DICT,
            class: Class::User,
            data: Bytes::from(data),
            sealed: None,
        });
        out.push(postcard::to_allocvec(&m)?);
    }
    Ok(out)
}

/// Overlay messages as frames (length prefix and body), two to a seed.
fn framed_seeds() -> Result<Vec<Vec<u8>>> {
    let msgs = message_seeds()?;
    Ok(msgs
        .windows(2)
        .map(|w| {
            let mut v = Vec::new();
            for m in w {
                v.extend_from_slice(&(m.len() as u32).to_be_bytes());
                v.extend_from_slice(m);
            }
            v
        })
        .collect())
}

fn record(signer: &KeySigner) -> Record<OverlayId> {
    let key = DictKey::open(&b"colour"[..]);
    Record::new(
        &key,
        signer.id(),
        42,
        Time::from_secs(1_800_000_600),
        Some(Bytes::from_static(b"blue")),
        |domain, content| signer.sign(&service_signed_bytes(domain, content)),
    )
}

fn record_seeds() -> Result<Vec<Vec<u8>>> {
    Ok(vec![postcard::to_allocvec(&record(&signer()?))?])
}

/// Dictionary, cast and group messages as their services encode them.
fn service_seeds() -> Result<Vec<Vec<u8>>> {
    let signer = signer()?;
    let r = record(&signer);
    let stamp = r.stamp();
    let pos = r.position();
    let dict: Vec<DictWire<OverlayId>> = vec![
        DictWire::Put {
            req: 1,
            w: 2,
            expect: Some(3),
            record: r.clone(),
        },
        DictWire::Get { req: 2, r: 2 },
        DictWire::Replicate { op: 3, record: r },
        DictWire::Sync {
            round: 4,
            parts: vec![
                Part::Digest {
                    after: RingId(1),
                    end: RingId(9),
                    count: 3,
                    hash: [7; 16],
                },
                Part::Items {
                    after: RingId(9),
                    end: RingId(99),
                    items: vec![
                        (pos, stamp),
                        (
                            RingId(50),
                            Stamp {
                                version: 1,
                                hash: 2,
                            },
                        ),
                    ],
                },
            ],
            opening: true,
        },
        DictWire::Want {
            round: 4,
            keys: vec![pos],
        },
        DictWire::Watch {
            req: 5,
            lease_ms: 30_000,
        },
    ];
    let mut out: Vec<Vec<u8>> = dict.iter().map(|w| encode(w, &[]).to_vec()).collect();
    out.push(encode(&p2ps_overlay::groups::Wire::Join { group: pos }, &[]).to_vec());
    out.extend(group_seeds(signer.id()));
    out.push(encode(&p2ps_overlay::messaging::Wire::Data, b"payload").to_vec());
    Ok(out)
}

/// Closed-group joins and messages, and the counts of group messages, as a member makes them.
fn group_seeds<P: p2ps_overlay::PeerId>(member: P) -> Vec<Vec<u8>> {
    use p2ps_overlay::groups::closed::{ClosedGroup, GroupSecret};
    use p2ps_overlay::groups::Wire as GroupWire;
    let group = ClosedGroup::new(&GroupSecret::from_bytes([7; 32]), "club");
    let cert = group.certify(member);
    vec![
        encode(
            &GroupWire::JoinClosed {
                group: group.id(),
                public: group.public(),
            },
            &[],
        )
        .to_vec(),
        encode(
            &GroupWire::SendClosed {
                cert,
                nonce: [3; 12],
            },
            b"ciphertext",
        )
        .to_vec(),
        encode(
            &GroupWire::CastCounted {
                hops: 1,
                tag: 9,
                wait_ms: 4_000,
            },
            &[],
        )
        .to_vec(),
        encode(
            &GroupWire::Count {
                tag: 9,
                members: 3,
                complete: true,
            },
            &[],
        )
        .to_vec(),
        encode(
            &GroupWire::Counted {
                seq: 4,
                members: 3,
                complete: false,
            },
            &[],
        )
        .to_vec(),
    ]
}

fn ticket_seeds() -> Result<Vec<Vec<u8>>> {
    let identity = Identity::generate().context("generating a key")?;
    let t = p2ps::Ticket::new(
        identity.node_id(),
        vec!["192.0.2.1:7000".parse()?, "[2001:db8::1]:4433".parse()?],
    );
    let private = t
        .clone()
        .with_network(Some(p2ps_transport::NetworkName::from_bytes([7; 8])));
    Ok(vec![
        t.to_string().into_bytes(),
        private.to_string().into_bytes(),
    ])
}

/// Messages of simulated nodes (small ids), for the stateful target.
fn sim_seeds() -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for data in service_seeds_sim() {
        for service in [
            p2ps_dict::DICT,
            p2ps_overlay::cast::CAST,
            p2ps_overlay::groups::GROUPS,
            p2ps_overlay::messaging::MESSAGES,
        ] {
            let m: Message<SimId> = Message::Service(ServiceMessage {
                service,
                class: Class::User,
                data: Bytes::from(data.clone()),
                sealed: None,
            });
            out.push(postcard::to_allocvec(&m)?);
        }
    }
    Ok(out)
}

fn service_seeds_sim() -> Vec<Vec<u8>> {
    let dict: Vec<DictWire<SimId>> = vec![
        DictWire::Get { req: 2, r: 2 },
        DictWire::Sync {
            round: 4,
            parts: vec![Part::Items {
                after: RingId(9),
                end: RingId(u128::MAX / 2),
                items: vec![(
                    RingId(50),
                    Stamp {
                        version: 1,
                        hash: 2,
                    },
                )],
            }],
            opening: true,
        },
        DictWire::Want {
            round: 4,
            keys: vec![RingId(50), RingId(u128::MAX / 3)],
        },
        DictWire::Fetch {
            op: 9,
            key: RingId(77),
        },
    ];
    let mut out: Vec<Vec<u8>> = dict.iter().map(|w| encode(w, &[]).to_vec()).collect();
    out.push(
        encode(
            &p2ps_overlay::groups::Wire::Prune {
                group: RingId(1234),
            },
            &[],
        )
        .to_vec(),
    );
    out.extend(group_seeds(SimId(2)));
    out
}

/// Six simulated nodes with the standard services and the dictionary; each input that decodes
/// is handed to one of them as if a neighbour sent it, and the simulation runs on a little
/// every 32 inputs.
fn sim_handlers() -> Result<Run> {
    type D = p2ps_dict::Dict<SimId, p2ps_dict::MemStore<SimId>>;
    let mut sim = Simulator::new(SimConfig {
        seed: 5,
        ..SimConfig::default()
    });
    sim.register_everywhere(|node| {
        // Registration fails only for a service registered twice.
        let _ = node.register(D::new(
            p2ps_dict::DictConfig::default(),
            p2ps_dict::MemStore::default(),
        ));
    });
    let ids = sim.warm_start(6);
    sim.run_for(std::time::Duration::from_secs(1));
    let mut n = 0u64;
    Ok(Box::new(move |b: &[u8]| {
        let Ok(msg) = frame::decode::<Message<SimId>>(b) else {
            return false;
        };
        n += 1;
        let pick = b.first().copied().unwrap_or(0) as usize;
        let to = ids[pick % ids.len()];
        let from = ids[(pick / ids.len() + 1) % ids.len()];
        let from = if from == to {
            ids[(pick + 1) % ids.len()]
        } else {
            from
        };
        if sim.is_alive(to) {
            sim.command(to, |node, now| node.handle_message(now, from, msg));
        }
        if n.is_multiple_of(32) {
            sim.run_for(std::time::Duration::from_millis(50));
        }
        true
    }))
}
