//! What a relay allows: its configuration, the per-circuit limits it tells both ends, and the
//! token bucket that paces a circuit.
//!
//! Limits that protect the relay's resources (circuit counts) refuse a new circuit; limits on a
//! running circuit either throttle it (rate: the relay stops reading, QUIC flow control pushes
//! back, the ends' bounded queues drop packets as a congested UDP path would) or end it (bytes,
//! duration) with a [`crate::relay::CircuitEnd`] code that both ends see.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::relay::tap::RelayTap;

/// Relay settings of a node, both as a relay (`serve`) and as an end of relayed circuits.
/// Start from `RelayConfig::default()` and change what you need with the `with_*` setters or
/// by assigning the public fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Whether this node relays circuits between other nodes. Default `false` (opt-in): a node
    /// that does not serve refuses every circuit request with [`crate::RelayError::Refused`].
    pub serve: bool,
    /// Limits applied when serving.
    pub limits: RelayLimits,
    /// Whether this node accepts circuits that other nodes open to it through a relay.
    /// Default `true`.
    pub accept: bool,
    /// Most relayed circuits this node is an end of at once (opened or accepted); at most a
    /// quarter of them (at least one) may be accepted through any one relay. Default 64.
    pub max_client_circuits: usize,
    /// Packets that may wait to enter one circuit; more are dropped, as a full UDP send buffer
    /// would. Default 256.
    pub circuit_queue_packets: usize,
    /// Packets that arrived on circuits and wait for the QUIC endpoint; more are dropped (the
    /// queue also holds at most 1500 bytes per packet slot). Default 1024.
    pub inbound_queue_packets: usize,
    /// Diagnostics only: when set, a relay copies the first bytes it forwards into this tap so
    /// that tests can check what a relay can see (only ciphertext). Default `None`.
    pub tap: Option<RelayTap>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            serve: false,
            limits: RelayLimits::default(),
            accept: true,
            max_client_circuits: 64,
            circuit_queue_packets: 256,
            inbound_queue_packets: 1024,
            tap: None,
        }
    }
}

impl RelayConfig {
    /// Sets [`serve`](Self::serve).
    #[must_use]
    pub fn with_serve(mut self, serve: bool) -> Self {
        self.serve = serve;
        self
    }

    /// Sets [`limits`](Self::limits).
    #[must_use]
    pub fn with_limits(mut self, limits: RelayLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets [`accept`](Self::accept).
    #[must_use]
    pub fn with_accept(mut self, accept: bool) -> Self {
        self.accept = accept;
        self
    }

    /// Sets [`max_client_circuits`](Self::max_client_circuits).
    #[must_use]
    pub fn with_max_client_circuits(mut self, max_client_circuits: usize) -> Self {
        self.max_client_circuits = max_client_circuits;
        self
    }

    /// Sets [`circuit_queue_packets`](Self::circuit_queue_packets).
    #[must_use]
    pub fn with_circuit_queue_packets(mut self, circuit_queue_packets: usize) -> Self {
        self.circuit_queue_packets = circuit_queue_packets;
        self
    }

    /// Sets [`inbound_queue_packets`](Self::inbound_queue_packets).
    #[must_use]
    pub fn with_inbound_queue_packets(mut self, inbound_queue_packets: usize) -> Self {
        self.inbound_queue_packets = inbound_queue_packets;
        self
    }

    /// Sets [`tap`](Self::tap).
    #[must_use]
    pub fn with_tap(mut self, tap: Option<RelayTap>) -> Self {
        self.tap = tap;
        self
    }
}

/// Limits of a relay. Start from `RelayLimits::default()` and change what you need with the
/// `with_*` setters or by assigning the public fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayLimits {
    /// Most circuits relayed at once. Default 128.
    pub max_circuits: usize,
    /// Most circuits relayed at once in which one node is an end. Default 8.
    pub max_circuits_per_peer: usize,
    /// Limits of each circuit, told to both ends when it is set up.
    pub circuit: CircuitLimits,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_circuits: 128,
            max_circuits_per_peer: 8,
            circuit: CircuitLimits::default(),
        }
    }
}

impl RelayLimits {
    /// Sets [`max_circuits`](Self::max_circuits).
    #[must_use]
    pub fn with_max_circuits(mut self, max_circuits: usize) -> Self {
        self.max_circuits = max_circuits;
        self
    }

    /// Sets [`max_circuits_per_peer`](Self::max_circuits_per_peer).
    #[must_use]
    pub fn with_max_circuits_per_peer(mut self, max_circuits_per_peer: usize) -> Self {
        self.max_circuits_per_peer = max_circuits_per_peer;
        self
    }

    /// Sets [`circuit`](Self::circuit).
    #[must_use]
    pub fn with_circuit(mut self, circuit: CircuitLimits) -> Self {
        self.circuit = circuit;
        self
    }
}

/// Limits of one circuit, chosen by the relay and told to both ends. Start from
/// `CircuitLimits::default()` and change what you need with the `with_*` setters or by
/// assigning the public fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CircuitLimits {
    /// Bytes (both directions together, framing included) after which the relay ends the circuit
    /// with [`crate::relay::CircuitEnd::ByteLimit`]. `None`: no limit. Default 1 GiB.
    pub max_bytes: Option<u64>,
    /// Bytes per second forwarded in each direction; faster senders are throttled, not cut off.
    /// `None`: no limit. Default 8 MiB/s.
    pub max_rate: Option<u64>,
    /// Time after which the relay ends the circuit with
    /// [`crate::relay::CircuitEnd::DurationLimit`]. `None`: no limit. Default 1 hour.
    pub max_duration: Option<Duration>,
}

impl Default for CircuitLimits {
    fn default() -> Self {
        Self {
            max_bytes: Some(1 << 30),
            max_rate: Some(8 << 20),
            max_duration: Some(Duration::from_secs(3600)),
        }
    }
}

impl CircuitLimits {
    /// Sets [`max_bytes`](Self::max_bytes).
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: Option<u64>) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets [`max_rate`](Self::max_rate).
    #[must_use]
    pub fn with_max_rate(mut self, max_rate: Option<u64>) -> Self {
        self.max_rate = max_rate;
        self
    }

    /// Sets [`max_duration`](Self::max_duration).
    #[must_use]
    pub fn with_max_duration(mut self, max_duration: Option<Duration>) -> Self {
        self.max_duration = max_duration;
        self
    }
}

impl RelayConfig {
    /// Checks the settings; called from `TransportConfig::validate`.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.to_string(),
            })
        };
        if self.serve && (self.limits.max_circuits == 0 || self.limits.max_circuits_per_peer == 0) {
            return bad(
                "relay.limits",
                "circuit counts must be at least 1 when serving",
            );
        }
        if self.limits.circuit.max_rate == Some(0) {
            return bad(
                "relay.limits.circuit.max_rate",
                "must be positive (or None)",
            );
        }
        if self
            .limits
            .circuit
            .max_duration
            .is_some_and(|d| d.is_zero())
        {
            return bad(
                "relay.limits.circuit.max_duration",
                "must be positive (or None)",
            );
        }
        if self.circuit_queue_packets == 0 || self.inbound_queue_packets == 0 {
            return bad(
                "relay.circuit_queue_packets",
                "queues must hold at least 1 packet",
            );
        }
        Ok(())
    }
}

/// Paces one direction of a circuit: `rate` bytes per second with a burst of a quarter second
/// (at least 64 KiB, so one read chunk always fits).
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: u64) -> Self {
        let rate = rate as f64;
        let burst = (rate / 4.0).max(64.0 * 1024.0);
        Self {
            rate,
            burst,
            tokens: burst,
            last: tokio::time::Instant::now(),
        }
    }

    /// Takes `n` tokens; returns how long to wait before forwarding them.
    pub(crate) fn take(&mut self, n: usize) -> Duration {
        let now = tokio::time::Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_waits_in_proportion_to_the_deficit() {
        let mut b = TokenBucket::new(1024 * 1024);
        // The burst is a quarter second of rate.
        assert_eq!(b.take(256 * 1024), Duration::ZERO);
        let wait = b.take(512 * 1024);
        assert!(
            wait > Duration::from_millis(400) && wait < Duration::from_millis(600),
            "{wait:?}"
        );
    }

    #[test]
    fn defaults_validate_and_zero_rate_is_refused() {
        RelayConfig::default().validate().unwrap();
        let mut c = RelayConfig::default();
        c.limits.circuit.max_rate = Some(0);
        assert!(c.validate().is_err());
    }
}
