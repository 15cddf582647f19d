//! The demo's and the cluster bench's own choices (keys, which node asks, who leaves), seeded
//! so that a run can be repeated with the same `--seed` (node keys stay fresh).

use p2ps::RingId;

/// A small seeded generator (SplitMix64): the demo's choices are reproducible from `--seed`.
pub(crate) struct Rng(u64);

impl Rng {
    /// The generator for `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough index below `n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// A random ring position.
    pub(crate) fn ring(&mut self) -> RingId {
        RingId((u128::from(self.next_u64()) << 64) | u128::from(self.next_u64()))
    }
}
