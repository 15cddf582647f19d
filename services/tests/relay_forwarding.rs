//! Forwarding through a relay (`Wire::Forward` / `Wire::Forwarded`, used while a node behind a
//! NAT has no connection yet) refuses what it must — application data, addressees the relay is
//! not connected to, and forwarded messages that do not come from the addressee's own relay —
//! passes on overlay upkeep, and the nodes keep serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use p2ps::wire::{forward_bytes, Wire};
use p2ps::{key_of, wall_clock, Identity, KeySigner, NodeId, OverlayId};
use p2ps_overlay::{Answer, Body, Contact, Envelope, Message, Routed, Sealed};
use p2ps_transport::{StreamClass, Transport, TransportConfig};
use std::time::Duration;

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn forwarding_refuses_bad_requests_and_passes_on_upkeep() {
    // Node 1 joined through node 0: node 0 is its relay, and they are connected.
    let nodes = common::network(3).await;
    let (relay, member) = (&nodes[0], &nodes[1]);

    // A raw peer speaking the wire protocol.
    let identity = Identity::generate().unwrap();
    let signer = KeySigner(p2ps_transport::SigningKey::new(&identity).unwrap());
    let cfg = TransportConfig::new(identity, "127.0.0.1:0".parse().unwrap());
    let (x, _events) = Transport::<Wire>::bind(cfg).unwrap();
    for n in [relay, member] {
        x.connect(n.id(), n.addrs()[0]).await.unwrap();
    }
    let send = |to: NodeId, w: Wire| {
        let x = x.clone();
        async move { x.send(to, StreamClass::Routing, &w).await.unwrap() }
    };
    let sealed = |key, body| {
        let now = wall_clock();
        let origin = Contact::signed(&signer, vec![x.local_addr().unwrap()], None, now);
        let env = Envelope {
            origin,
            seq: 77,
            issued: now,
            key,
            body,
        };
        Sealed::seal(&signer, env)
    };
    let answer = Message::Answer(Answer {
        trail: vec![],
        sealed: sealed(
            key_of(b"k"),
            Body::Answer {
                req: 77,
                asker: OverlayId(member.id()),
                pred: None,
                hops: 1,
            },
        ),
    });

    // Application data is never forwarded: the relay would read it.
    let data = Message::Routed(Routed::new(sealed(
        p2ps::id::ring_id_of(&member.id()),
        Body::Service {
            service: p2ps_overlay::messaging::MESSAGES,
            class: p2ps_overlay::Class::User,
            target: Some(OverlayId(member.id())),
            data: p2ps_overlay::service::encode(&p2ps_overlay::messaging::Wire::Data, b"secret"),
        },
    )));
    send(
        relay.id(),
        Wire::Forward {
            to: OverlayId(member.id()),
            proof: signer
                .0
                .sign(&forward_bytes(&OverlayId(member.id()), &data)),
            msg: data,
        },
    )
    .await;
    // The relay is not connected to this one.
    let stranger = Identity::generate().unwrap().node_id();
    send(
        relay.id(),
        Wire::Forward {
            to: OverlayId(stranger),
            proof: signer.0.sign(&forward_bytes(&OverlayId(stranger), &answer)),
            msg: answer.clone(),
        },
    )
    .await;
    // Only a node's own relay may hand it forwarded messages.
    send(
        member.id(),
        Wire::Forwarded {
            from: OverlayId(relay.id()),
            proof: signer
                .0
                .sign(&forward_bytes(&OverlayId(member.id()), &answer)),
            msg: answer.clone(),
        },
    )
    .await;
    eventually("the relay refused two requests", async || {
        relay.status().await.unwrap().counters.forwards_refused == 2
    })
    .await;
    eventually("the member refused a forwarded message", async || {
        member.status().await.unwrap().counters.forwards_refused == 1
    })
    .await;
    assert_eq!(
        relay.status().await.unwrap().counters.forwarded_for_peers,
        0
    );

    // Upkeep for a node the relay serves is passed on.
    send(
        relay.id(),
        Wire::Forward {
            to: OverlayId(member.id()),
            proof: signer
                .0
                .sign(&forward_bytes(&OverlayId(member.id()), &answer)),
            msg: answer,
        },
    )
    .await;
    eventually("the relay passed an answer on", async || {
        relay.status().await.unwrap().counters.forwarded_for_peers == 1
    })
    .await;
    assert_eq!(member.status().await.unwrap().counters.forwards_refused, 1);

    // Everyone keeps serving.
    let key = key_of(b"still fine");
    let a = nodes[2].lookup(key).await.unwrap();
    let b = member.lookup(key).await.unwrap();
    assert_eq!(a.node, b.node);
    x.shutdown("done").await;
    for n in &nodes {
        n.shutdown().await;
    }
}
