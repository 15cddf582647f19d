//! One-way message latency between simulated nodes.
//!
//! Each node gets a random point in a unit square; latency grows linearly with distance between
//! `min` and `max`. That gives a triangle inequality and stable per-pair delays (so messages
//! between two nodes stay in order, as on a QUIC stream) without an N×N table.

use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Latency model parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencyModel {
    /// Latency between two nodes at the same point, in milliseconds.
    pub min_ms: f64,
    /// Latency between opposite corners, in milliseconds.
    pub max_ms: f64,
}

impl Default for LatencyModel {
    fn default() -> Self {
        LatencyModel {
            min_ms: 5.0,
            max_ms: 150.0,
        }
    }
}

impl LatencyModel {
    /// One-way latency between nodes at points `a` and `b`.
    pub fn between(&self, a: (f32, f32), b: (f32, f32)) -> Duration {
        let dx = (a.0 - b.0) as f64;
        let dy = (a.1 - b.1) as f64;
        let frac = (dx * dx + dy * dy).sqrt() / std::f64::consts::SQRT_2;
        let ms = self.min_ms + (self.max_ms - self.min_ms).max(0.0) * frac;
        Duration::from_micros((ms.max(0.0) * 1000.0) as u64)
    }

    /// Arrival time of a message sent at `now` between `a` and `b`.
    pub fn arrival(&self, now: Time, a: (f32, f32), b: (f32, f32)) -> Time {
        now + self.between(a, b)
    }
}
