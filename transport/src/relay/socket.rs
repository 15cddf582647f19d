//! The node's UDP socket, extended with relayed circuits.
//!
//! quinn sees one [`AsyncUdpSocket`]. Datagrams to ordinary addresses go to the real UDP socket.
//! Each circuit gets a *synthetic* address from a reserved range that never reaches the network
//! (see [`is_relayed`]); datagrams quinn sends to it are queued for the circuit's stream to the
//! relay, and packets arriving on the circuit are handed to quinn as datagrams from that address.
//! So the end-to-end QUIC connection over a relay is an ordinary quinn connection (same TLS, same
//! node id check), and the relay only ever carries its encrypted packets. Queues are bounded and
//! drop when full, exactly as a congested UDP path would; QUIC recovers.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::connections::lock;
use crate::event::CloseCode;
use crate::identity::NodeId;
use crate::relay::limits::{CircuitLimits, RelayConfig};
use crate::relay::protocol::CircuitEnd;
use crate::relay::{CircuitInfo, RelayCounters};
use crate::stats::bump;

/// IPv4 synthetic addresses: `240.0.0.0/8` (inside the reserved `240.0.0.0/4`), port 1.
const V4_PREFIX: u8 = 240;
/// IPv6 synthetic addresses: the unique-local prefix `fd70:3270:7372::/48`, port 1.
const V6_PREFIX: [u16; 3] = [0xfd70, 0x3270, 0x7372];
/// Port of every synthetic address (quinn refuses port 0).
const SYNTHETIC_PORT: u16 = 1;
/// Circuit indexes use 24 bits (the host part of the IPv4 range).
const INDEX_MASK: u32 = 0x00ff_ffff;
/// Ended circuits whose reason is remembered for the connection manager.
const ENDED_MEMORY: usize = 256;
/// Time a circuit stays up after its connection closed, so the CONNECTION_CLOSE gets through.
const CLOSE_LINGER: Duration = Duration::from_millis(100);
/// Largest read from a circuit stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// Whether `addr` is a synthetic address standing for a relayed circuit (IPv4 `240.0.0.0/8`,
/// IPv6 `fd70:3270:7372::/48`, or the IPv4 range mapped into IPv6). Such an address means
/// nothing to other nodes: never advertise or dial it.
pub fn is_relayed(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(v4) => v4.octets()[0] == V4_PREFIX,
        IpAddr::V6(v6) => {
            v6.segments()[..3] == V6_PREFIX
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.octets()[0] == V4_PREFIX)
        }
    }
}

fn synthetic(v6: bool, index: u32) -> SocketAddr {
    let ip = if v6 {
        let [a, b, c] = V6_PREFIX;
        IpAddr::V6(Ipv6Addr::new(
            a,
            b,
            c,
            0,
            0,
            0,
            (index >> 16) as u16,
            index as u16,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from(
            u32::from(V4_PREFIX) << 24 | (index & INDEX_MASK),
        ))
    };
    SocketAddr::new(ip, SYNTHETIC_PORT)
}

/// One circuit as the socket knows it.
struct Circuit {
    tx: mpsc::Sender<Bytes>,
    info: CircuitInfo,
    conn: Option<quinn::Connection>,
}

#[derive(Default)]
struct Circuits {
    map: HashMap<SocketAddr, Circuit>,
    next: u32,
    ended: VecDeque<(SocketAddr, NodeId, CircuitEnd)>,
}

#[derive(Default)]
struct Inbound {
    queue: VecDeque<(SocketAddr, Bytes)>,
    /// Bytes in `queue`.
    bytes: usize,
    waker: Option<Waker>,
}

/// Bytes budgeted per inbound packet slot: QUIC packets stay below 1500 bytes (quinn's path MTU
/// discovery tops out at 1452), so a relay sending larger ones cannot make the queue hold more
/// than `inbound_queue_packets` typical packets' worth of memory.
const INBOUND_BYTES_PER_PACKET: usize = 1500;

/// The socket quinn uses: the real UDP socket plus the circuits.
pub(crate) struct RelaySocket {
    inner: Arc<dyn AsyncUdpSocket>,
    v6: bool,
    circuits: Mutex<Circuits>,
    inbound: Mutex<Inbound>,
    /// Alternates which source `poll_recv` tries first, so neither starves the other.
    relay_first: AtomicBool,
    max_circuits: usize,
    circuit_queue: usize,
    inbound_capacity: usize,
    counters: Arc<RelayCounters>,
}

impl std::fmt::Debug for RelaySocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySocket")
            .field("inner", &self.inner)
            .field("circuits", &lock(&self.circuits).map.len())
            .finish()
    }
}

/// A circuit registered in the socket but not yet pumping.
pub(crate) struct Registered {
    pub(crate) addr: SocketAddr,
    rx: mpsc::Receiver<Bytes>,
}

impl RelaySocket {
    /// Wraps the real socket.
    pub(crate) fn new(
        inner: Arc<dyn AsyncUdpSocket>,
        config: &RelayConfig,
        counters: Arc<RelayCounters>,
    ) -> io::Result<Self> {
        let v6 = inner.local_addr()?.is_ipv6();
        Ok(Self {
            inner,
            v6,
            circuits: Mutex::default(),
            inbound: Mutex::default(),
            relay_first: AtomicBool::new(false),
            max_circuits: config.max_client_circuits,
            circuit_queue: config.circuit_queue_packets,
            inbound_capacity: config.inbound_queue_packets,
            counters,
        })
    }

    /// Gives a new circuit a synthetic address; `None` when this node has too many circuits.
    pub(crate) fn register(
        &self,
        peer: NodeId,
        relay: NodeId,
        limits: CircuitLimits,
        outbound: bool,
    ) -> Option<Registered> {
        let mut c = lock(&self.circuits);
        if c.map.len() >= self.max_circuits {
            return None;
        }
        // One relay (or a peer posing as one) cannot take every slot with announced circuits.
        let from_relay = c
            .map
            .values()
            .filter(|k| !k.info.outbound && k.info.relay == relay)
            .count();
        if !outbound && from_relay >= (self.max_circuits / 4).max(1) {
            return None;
        }
        let addr = loop {
            c.next = (c.next + 1) & INDEX_MASK;
            let addr = synthetic(self.v6, c.next);
            if c.next != 0 && !c.map.contains_key(&addr) {
                break addr;
            }
        };
        let (tx, rx) = mpsc::channel(self.circuit_queue);
        let info = CircuitInfo {
            peer,
            relay,
            addr,
            limits,
            outbound,
        };
        c.map.insert(
            addr,
            Circuit {
                tx,
                info,
                conn: None,
            },
        );
        Some(Registered { addr, rx })
    }

    /// The circuits this node is an end of.
    pub(crate) fn circuits(&self) -> Vec<CircuitInfo> {
        lock(&self.circuits)
            .map
            .values()
            .map(|c| c.info.clone())
            .collect()
    }

    /// The relay carrying the circuit at `addr`, if it is live.
    pub(crate) fn relay_of(&self, addr: &SocketAddr) -> Option<NodeId> {
        lock(&self.circuits).map.get(addr).map(|c| c.info.relay)
    }

    /// Why the circuit at `addr` ended, if it ended on its own (not because its connection
    /// closed). Taken once.
    pub(crate) fn take_end(&self, addr: &SocketAddr) -> Option<(NodeId, CircuitEnd)> {
        let mut c = lock(&self.circuits);
        let pos = c.ended.iter().position(|(a, _, _)| a == addr)?;
        c.ended.remove(pos).map(|(_, relay, end)| (relay, end))
    }

    /// Ties the QUIC connection that uses the circuit at `addr` to it: the circuit closes when
    /// the connection does, and the connection is closed when the circuit ends.
    pub(crate) fn bind_connection(self: &Arc<Self>, addr: SocketAddr, conn: &quinn::Connection) {
        {
            let mut c = lock(&self.circuits);
            let Some(circuit) = c.map.get_mut(&addr) else {
                // The circuit is already gone: the connection cannot work.
                conn.close(CloseCode::Normal.varint(), b"relay circuit closed");
                return;
            };
            circuit.conn = Some(conn.clone());
        }
        let this = self.clone();
        let conn = conn.clone();
        tokio::spawn(async move {
            conn.closed().await;
            tokio::time::sleep(CLOSE_LINGER).await;
            // Dropping the queue's sender lets the writer deliver what is queued and finish.
            let gone = lock(&this.circuits).map.remove(&addr);
            if gone.is_some() {
                debug!(%addr, "relayed connection closed, closing its circuit");
            }
        });
    }

    fn is_bound(&self, addr: &SocketAddr) -> bool {
        lock(&self.circuits)
            .map
            .get(addr)
            .is_none_or(|c| c.conn.is_some())
    }

    /// Moves packets between the circuit's stream to the relay and quinn until the circuit ends.
    pub(crate) async fn run(
        self: Arc<Self>,
        registered: Registered,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        unused_after: Duration,
    ) {
        let Registered { addr, rx } = registered;
        let unused = async {
            tokio::time::sleep(unused_after).await;
            if self.is_bound(&addr) {
                std::future::pending::<()>().await;
            }
        };
        let end = tokio::select! {
            end = self.read_loop(addr, recv) => end,
            end = write_loop(send, rx) => end,
            () = unused => CircuitEnd::Unused,
        };
        let circuit = lock(&self.circuits).map.remove(&addr);
        let Some(circuit) = circuit else {
            debug!(%addr, %end, "circuit closed");
            return;
        };
        let info = &circuit.info;
        if end != CircuitEnd::Closed {
            {
                let mut c = lock(&self.circuits);
                if c.ended.len() >= ENDED_MEMORY {
                    c.ended.pop_front();
                }
                c.ended.push_back((addr, info.relay, end));
            }
            if matches!(end, CircuitEnd::ByteLimit | CircuitEnd::DurationLimit) {
                bump(&self.counters.client_circuits_limited);
            }
            warn!(
                peer = %info.peer.short(),
                relay = %info.relay.short(),
                %addr,
                code = end.to_u64(),
                %end,
                "relay circuit ended"
            );
        }
        if let Some(conn) = circuit.conn {
            conn.close(CloseCode::Normal.varint(), end.to_string().as_bytes());
        }
    }

    async fn read_loop(&self, addr: SocketAddr, mut recv: quinn::RecvStream) -> CircuitEnd {
        let mut buf = BytesMut::new();
        loop {
            match recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                Ok(None) => return CircuitEnd::PeerClosed,
                Err(e) => return read_end(e),
            }
            while buf.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                if buf.len() < 2 + len {
                    break;
                }
                buf.advance(2);
                let packet = buf.split_to(len).freeze();
                self.push_inbound(addr, packet);
            }
        }
    }

    fn push_inbound(&self, addr: SocketAddr, packet: Bytes) {
        let waker = {
            let mut inbound = lock(&self.inbound);
            if inbound.queue.len() >= self.inbound_capacity
                || inbound.bytes + packet.len() > self.inbound_capacity * INBOUND_BYTES_PER_PACKET
            {
                bump(&self.counters.packets_dropped);
                return;
            }
            inbound.bytes += packet.len();
            inbound.queue.push_back((addr, packet));
            inbound.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Fills `bufs` from the circuits' packets; registers the waker when there are none.
    fn poll_inbound(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Option<usize> {
        let mut inbound = lock(&self.inbound);
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some((addr, packet)) = inbound.queue.pop_front() else {
                break;
            };
            inbound.bytes -= packet.len();
            if packet.len() > bufs[n].len() {
                bump(&self.counters.packets_dropped);
                continue;
            }
            bufs[n][..packet.len()].copy_from_slice(&packet);
            meta[n] = RecvMeta {
                addr,
                len: packet.len(),
                stride: packet.len(),
                ecn: None,
                dst_ip: None,
            };
            n += 1;
        }
        if n == 0 {
            // Nothing to hand over: be woken by the next packet.
            match &inbound.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => inbound.waker = Some(cx.waker().clone()),
            }
            return None;
        }
        Some(n)
    }

    fn send_relayed(&self, transmit: &Transmit) {
        let tx = lock(&self.circuits)
            .map
            .get(&transmit.destination)
            .map(|c| c.tx.clone());
        let Some(tx) = tx else {
            // No such circuit (any more): lost, as UDP to nowhere would be.
            return;
        };
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for segment in transmit.contents.chunks(size) {
            if segment.len() > usize::from(u16::MAX) {
                bump(&self.counters.packets_dropped);
                continue;
            }
            if tx.try_send(Bytes::copy_from_slice(segment)).is_err() {
                bump(&self.counters.packets_dropped);
            }
        }
    }
}

/// Writes queued packets, length-prefixed, to the circuit stream; finishes it when the queue's
/// sender is dropped.
async fn write_loop(mut send: quinn::SendStream, mut rx: mpsc::Receiver<Bytes>) -> CircuitEnd {
    let mut buf = BytesMut::new();
    while let Some(packet) = rx.recv().await {
        put_packet(&mut buf, &packet);
        while buf.len() < READ_CHUNK {
            match rx.try_recv() {
                Ok(p) => put_packet(&mut buf, &p),
                Err(_) => break,
            }
        }
        if let Err(e) = send.write_all(&buf).await {
            return write_end(e);
        }
        buf.clear();
    }
    let _ = send.finish();
    CircuitEnd::Closed
}

fn put_packet(buf: &mut BytesMut, packet: &[u8]) {
    // Packets above 64 KiB were dropped before being queued.
    buf.extend_from_slice(&(packet.len() as u16).to_be_bytes());
    buf.extend_from_slice(packet);
}

pub(crate) fn read_end(e: quinn::ReadError) -> CircuitEnd {
    match e {
        quinn::ReadError::Reset(code) => CircuitEnd::from_u64(code.into_inner()),
        _ => CircuitEnd::RelayConnectionLost,
    }
}

pub(crate) fn write_end(e: quinn::WriteError) -> CircuitEnd {
    match e {
        quinn::WriteError::Stopped(code) => CircuitEnd::from_u64(code.into_inner()),
        _ => CircuitEnd::RelayConnectionLost,
    }
}

impl AsyncUdpSocket for RelaySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        // Sends to circuits never block, so writability is the real socket's.
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if is_relayed(&transmit.destination) {
            self.send_relayed(transmit);
            bump(&self.counters.packets_sent);
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let relay_first = !self.relay_first.fetch_xor(true, Ordering::Relaxed);
        if relay_first {
            if let Some(n) = self.poll_inbound(cx, bufs, meta) {
                return Poll::Ready(Ok(n));
            }
        }
        if let Poll::Ready(r) = self.inner.poll_recv(cx, bufs, meta) {
            return Poll::Ready(r);
        }
        if !relay_first {
            if let Some(n) = self.poll_inbound(cx, bufs, meta) {
                return Poll::Ready(Ok(n));
            }
        }
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_addresses_are_recognised_and_real_ones_are_not() {
        for i in [1, 2, 0x00ff_ffff] {
            assert!(is_relayed(&synthetic(false, i)));
            assert!(is_relayed(&synthetic(true, i)));
        }
        let mapped = SocketAddr::new(
            IpAddr::V6(Ipv4Addr::new(240, 0, 0, 9).to_ipv6_mapped()),
            SYNTHETIC_PORT,
        );
        assert!(is_relayed(&mapped));
        for real in [
            "127.0.0.1:1",
            "10.0.0.1:4433",
            "[::1]:1",
            "[fd00::1]:1",
            "[::ffff:10.0.0.1]:1",
        ] {
            assert!(!is_relayed(&real.parse().unwrap()), "{real}");
        }
        assert_ne!(synthetic(false, 1), synthetic(false, 2));
    }
}
