//! `p2ps node`'s resource limits (issue #12): connection admission, memory budgets, the rate
//! of overlay messages one peer may send and the rate at which one origin may start casts, as
//! flags and as the `[limits]` table of the `--config` file, applied to the node's settings.
//! Unset values keep the defaults (`AdmissionLimits`, `MemoryLimits`,
//! `Config::peer_message_rate`, `CastRate`).

use p2ps_overlay::cast::CastConfig;
use p2ps_overlay::Config as OverlayConfig;
use p2ps_transport::{AdmissionLimits, MemoryLimits};
use serde::Deserialize;
use std::time::Duration;

/// Limits on what other nodes can make this one hold; flags override the file's `[limits]`.
#[derive(Debug, Default, Clone, PartialEq, Eq, clap::Args, Deserialize)]
#[command(next_help_heading = "Resource limits")]
#[serde(deny_unknown_fields)]
pub(super) struct LimitArgs {
    /// Most connections the node holds, both directions [default: 512].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Of those, the ones only the node's routing-table peers and its own dials may take
    /// [default: 64].
    #[arg(long, value_name = "N")]
    pub reserved_connections: Option<usize>,
    /// Most incoming connections from one IP address [default: 16].
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Most incoming connections from one /24 (IPv4) or /48 (IPv6) [default: 64].
    #[arg(long, value_name = "N")]
    pub max_connections_per_subnet: Option<usize>,
    /// Most incoming connections from one node id at once [default: 4].
    #[arg(long, value_name = "N")]
    pub max_connections_per_node: Option<usize>,
    /// Apply the per-IP and per-subnet quotas to loopback sources too (by default they are
    /// exempt, since local clusters run many nodes on 127.0.0.1).
    #[arg(long)]
    #[serde(default)]
    pub limit_loopback: bool,
    /// Close an incoming connection from a stranger that sends no message within this time;
    /// 0 turns it off [default: 10000].
    #[arg(long, value_name = "MS")]
    pub first_frame_timeout_ms: Option<u64>,
    /// Bytes of partial messages buffered per connection [default: 4 MiB].
    #[arg(long, value_name = "BYTES")]
    pub connection_buffer_bytes: Option<usize>,
    /// Bytes of partial messages buffered for all connections together [default: 32 MiB].
    #[arg(long, value_name = "BYTES")]
    pub node_buffer_bytes: Option<usize>,
    /// Bytes of received messages waiting for the node to handle them [default: 16 MiB].
    #[arg(long, value_name = "BYTES")]
    pub event_queue_bytes: Option<usize>,
    /// QUIC receive window of one stream [default: 512 KiB].
    #[arg(long, value_name = "BYTES")]
    pub stream_window_bytes: Option<u32>,
    /// QUIC receive window of one connection, all its streams together [default: 2 MiB].
    #[arg(long, value_name = "BYTES")]
    pub connection_window_bytes: Option<u32>,
    /// Bytes in flight (sent, not yet acknowledged) per connection [default: 4 MiB].
    #[arg(long, value_name = "BYTES")]
    pub send_window_bytes: Option<u64>,
    /// Broadcasts and range multicasts one origin may start per second, as this node counts
    /// them: more are neither delivered nor passed on here [default: 64].
    #[arg(long, value_name = "N")]
    pub casts_per_sec: Option<u32>,
    /// Casts one origin may start at once, after a quiet while [default: 256].
    #[arg(long, value_name = "N")]
    pub cast_burst: Option<u32>,
    /// Overlay messages of every kind one connected peer may send per second; more are
    /// dropped unread and counted [default: 10000].
    #[arg(long, value_name = "N")]
    pub peer_messages_per_sec: Option<u32>,
    /// Overlay messages one connected peer may send at once, after a quiet while
    /// [default: 20000].
    #[arg(long, value_name = "N")]
    pub peer_message_burst: Option<u32>,
}

impl LimitArgs {
    /// `self`'s values, falling back to `other`'s.
    pub(super) fn or(self, other: LimitArgs) -> LimitArgs {
        LimitArgs {
            max_connections: self.max_connections.or(other.max_connections),
            reserved_connections: self.reserved_connections.or(other.reserved_connections),
            max_connections_per_ip: self.max_connections_per_ip.or(other.max_connections_per_ip),
            max_connections_per_subnet: self
                .max_connections_per_subnet
                .or(other.max_connections_per_subnet),
            max_connections_per_node: self
                .max_connections_per_node
                .or(other.max_connections_per_node),
            limit_loopback: self.limit_loopback || other.limit_loopback,
            first_frame_timeout_ms: self.first_frame_timeout_ms.or(other.first_frame_timeout_ms),
            connection_buffer_bytes: self
                .connection_buffer_bytes
                .or(other.connection_buffer_bytes),
            node_buffer_bytes: self.node_buffer_bytes.or(other.node_buffer_bytes),
            event_queue_bytes: self.event_queue_bytes.or(other.event_queue_bytes),
            stream_window_bytes: self.stream_window_bytes.or(other.stream_window_bytes),
            connection_window_bytes: self
                .connection_window_bytes
                .or(other.connection_window_bytes),
            send_window_bytes: self.send_window_bytes.or(other.send_window_bytes),
            casts_per_sec: self.casts_per_sec.or(other.casts_per_sec),
            cast_burst: self.cast_burst.or(other.cast_burst),
            peer_messages_per_sec: self.peer_messages_per_sec.or(other.peer_messages_per_sec),
            peer_message_burst: self.peer_message_burst.or(other.peer_message_burst),
        }
    }

    /// Sets what is given on the transport's limits, the overlay's per-peer message rate and
    /// the cast service's rate (checked when the node starts).
    pub(super) fn apply(
        &self,
        admission: &mut AdmissionLimits,
        memory: &mut MemoryLimits,
        overlay: &mut OverlayConfig,
        cast: &mut CastConfig,
    ) {
        fn set<T: Copy>(to: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *to = v;
            }
        }
        set(&mut admission.max_connections, self.max_connections);
        set(
            &mut admission.reserved_connections,
            self.reserved_connections,
        );
        set(&mut admission.per_ip, self.max_connections_per_ip);
        set(&mut admission.per_subnet, self.max_connections_per_subnet);
        set(&mut admission.per_node, self.max_connections_per_node);
        if self.limit_loopback {
            admission.exempt_loopback = false;
        }
        if let Some(ms) = self.first_frame_timeout_ms {
            admission.first_frame_timeout = (ms > 0).then(|| Duration::from_millis(ms));
        }
        set(
            &mut memory.connection_buffer_bytes,
            self.connection_buffer_bytes,
        );
        set(&mut memory.node_buffer_bytes, self.node_buffer_bytes);
        set(&mut memory.event_queue_bytes, self.event_queue_bytes);
        set(&mut memory.stream_receive_window, self.stream_window_bytes);
        set(
            &mut memory.connection_receive_window,
            self.connection_window_bytes,
        );
        set(&mut memory.send_window, self.send_window_bytes);
        set(&mut cast.rate.per_sec, self.casts_per_sec);
        set(&mut cast.rate.burst, self.cast_burst);
        set(
            &mut overlay.peer_message_rate.per_sec,
            self.peer_messages_per_sec,
        );
        set(
            &mut overlay.peer_message_rate.burst,
            self.peer_message_burst,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_unset_values_keep_the_defaults() {
        // Unknown keys are refused.
        assert!(toml::from_str::<LimitArgs>("per_ip = 1\n").is_err());
        let file: LimitArgs = toml::from_str(
            "max_connections = 100\nlimit_loopback = true\nfirst_frame_timeout_ms = 0\n\
             cast_burst = 10\npeer_message_burst = 500\n",
        )
        .unwrap();
        let flags = LimitArgs {
            max_connections: Some(200),
            ..LimitArgs::default()
        };
        let merged = flags.or(file);
        let (mut a, mut m) = (AdmissionLimits::default(), MemoryLimits::default());
        let mut c = CastConfig::default();
        let mut o = OverlayConfig::default();
        merged.apply(&mut a, &mut m, &mut o, &mut c);
        assert_eq!((c.rate.burst, c.rate.per_sec), (10, 64));
        assert_eq!(o.peer_message_rate.burst, 500);
        assert_eq!(
            o.peer_message_rate.per_sec,
            OverlayConfig::default().peer_message_rate.per_sec
        );
        assert_eq!(a.max_connections, 200);
        assert!(!a.exempt_loopback);
        assert_eq!(a.first_frame_timeout, None);
        assert_eq!(a.per_ip, AdmissionLimits::default().per_ip);
        assert_eq!(m, MemoryLimits::default());
    }
}
