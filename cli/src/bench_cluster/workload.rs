//! The keys and values of the dictionary phase: the same for P2PS and for OpenDHT, drawn from
//! the run's seed.

use crate::demo::rng::Rng;

/// Bytes of each value (hex digits of random words).
const VALUE_LEN: usize = 64;

/// Key names and the values put under them.
#[derive(Clone, Debug)]
pub(super) struct Workload {
    /// Put one at a time, then read one at a time.
    pub(super) one: Vec<(String, String)>,
    /// Put, then read, with many requests in flight.
    pub(super) many: Vec<(String, String)>,
}

impl Workload {
    /// `one` pairs for the one-at-a-time passes and `many` for the many-in-flight ones, each key
    /// used once.
    pub(super) fn new(seed: u64, one: usize, many: usize) -> Self {
        let mut rng = Rng::new(seed ^ 0x6469_6374);
        let mut pairs = |tag: &str, count: usize| -> Vec<(String, String)> {
            (0..count)
                .map(|i| (format!("bench-{seed}-{tag}-{i}"), value(&mut rng)))
                .collect()
        };
        let one = pairs("one", one);
        let many = pairs("many", many);
        Workload { one, many }
    }
}

/// A random value of [`VALUE_LEN`] hex digits.
fn value(rng: &mut Rng) -> String {
    let mut s = String::with_capacity(VALUE_LEN);
    while s.len() < VALUE_LEN {
        s.push_str(&format!("{:016x}", rng.next_u64()));
    }
    s.truncate(VALUE_LEN);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_values_sized() {
        let w = Workload::new(7, 50, 100);
        let mut keys: Vec<&String> = w.one.iter().chain(&w.many).map(|(k, _)| k).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 150);
        assert!(w
            .one
            .iter()
            .chain(&w.many)
            .all(|(_, v)| v.len() == VALUE_LEN));
        // The same seed gives the same workload (OpenDHT and P2PS see the same keys).
        assert_eq!(Workload::new(7, 50, 100).many, w.many);
    }
}
