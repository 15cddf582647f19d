//! Five nodes in one process: form a network through tickets, look a key up, send to a node,
//! route to a key, and watch a neighbour leave.
//!
//! Run with `cargo run -p p2ps --example local_network`.

use p2ps::{key_of, Identity, Node, NodeConfig, NodeEvent};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = || -> Result<NodeConfig, Box<dyn std::error::Error>> {
        let mut c = NodeConfig::new(Identity::generate()?, "127.0.0.1:0".parse()?);
        c.overlay.stabilize_interval = Duration::from_millis(300);
        Ok(c)
    };
    let first = Node::start(config()?).await?;
    first.create().await?;
    println!("created a network; ticket: {}", first.ticket());

    let mut nodes = vec![first];
    for _ in 0..4 {
        let node = Node::start(config()?).await?;
        node.join(&nodes[0].ticket()).await?;
        println!("{} joined", node.id().short());
        nodes.push(node);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let answer = nodes[1].lookup_key("my key").await?;
    println!(
        "\"my key\" is held by {} ({} hops)",
        answer.node.short(),
        answer.hops
    );

    nodes[1].send(nodes[3].id(), &b"hello, node 3"[..]).await?;
    let m = nodes[3].recv().await.ok_or("node 3 stopped")?;
    println!(
        "node 3 got {:?} from {}",
        String::from_utf8_lossy(&m.payload),
        m.from.short()
    );

    nodes[2]
        .route(key_of("my key"), &b"for whoever holds my key"[..])
        .await?;
    let holder = nodes
        .iter()
        .find(|n| n.id() == answer.node)
        .ok_or("holder not found")?;
    let m = holder.recv().await.ok_or("holder stopped")?;
    println!("the holder got {:?}", String::from_utf8_lossy(&m.payload));

    let mut events = nodes[0].events();
    let leaver = nodes.pop().ok_or("no node")?;
    println!("{} leaves", leaver.id().short());
    leaver.shutdown().await;
    let deadline = tokio::time::sleep(Duration::from_secs(3));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(NodeEvent::NeighbourDown(id)) => println!("node 0 saw neighbour {} go", id.short()),
                Ok(other) => println!("node 0 event: {other:?}"),
                Err(_) => break,
            },
            _ = &mut deadline => break,
        }
    }
    let status = nodes[0].status().await?;
    println!(
        "node 0 now has {} successors, {} connections",
        status.successors.len(),
        status.connections.len()
    );
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}
