//! Time as the overlay sees it: a number handed in by whoever drives it.
//!
//! The state machine never reads a clock. The QUIC runtime passes the wall-clock time at its
//! start plus the monotonic time elapsed since; the simulator passes simulated time. Both are
//! `Time`, in microseconds.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A point in time, in microseconds since an epoch chosen by the driver. Signed records carry
/// the time they were made, so drivers of one network share an epoch: the runtime uses the
/// Unix epoch, the simulator its start.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct Time(pub u64);

impl Time {
    /// The epoch.
    pub const ZERO: Time = Time(0);

    /// A time `micros` microseconds after the epoch.
    pub fn from_micros(micros: u64) -> Time {
        Time(micros)
    }

    /// A time `ms` milliseconds after the epoch.
    pub fn from_millis(ms: u64) -> Time {
        Time(ms.saturating_mul(1000))
    }

    /// A time `s` seconds after the epoch.
    pub fn from_secs(s: u64) -> Time {
        Time(s.saturating_mul(1_000_000))
    }

    /// Microseconds since the epoch.
    pub fn as_micros(self) -> u64 {
        self.0
    }

    /// Seconds since the epoch, as a float (for reports).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// How long after `earlier` this is (zero if it is not after).
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }
}

impl std::ops::Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_sub(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }
}
