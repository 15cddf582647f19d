//! Mutations of inputs: what a fuzzer does to valid messages to find the inputs a decoder was
//! not written for (flipped bits, boundary bytes, huge lengths, cut, repeated and spliced
//! pieces), and purely random bytes now and then.

use rand::{Rng, RngCore};

/// Bytes that sit at the boundaries decoders test: varint continuation bits, signs, zero.
const INTERESTING: &[u8] = &[0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0x40, 0x20];

/// A varint as large as a u64 goes: what a length or count field is most tempted to trust.
const HUGE_VARINT: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];

/// A new input from `seeds`: usually a seed with one to four mutations, sometimes random
/// bytes, sometimes two seeds spliced.
pub(crate) fn input(rng: &mut impl RngCore, seeds: &[Vec<u8>]) -> Vec<u8> {
    if seeds.is_empty() || rng.gen_ratio(1, 10) {
        let len = rng.gen_range(0..256);
        let mut v = vec![0u8; len];
        rng.fill_bytes(&mut v);
        return v;
    }
    let mut v = seeds[rng.gen_range(0..seeds.len())].clone();
    for _ in 0..rng.gen_range(1..=4) {
        mutate(rng, &mut v, seeds);
    }
    v
}

/// One mutation of `v`, in place.
fn mutate(rng: &mut impl RngCore, v: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let at = |rng: &mut dyn RngCore, len: usize| {
        if len == 0 {
            0
        } else {
            rng.gen_range(0..len)
        }
    };
    match rng.gen_range(0..8) {
        0 if !v.is_empty() => {
            let i = at(rng, v.len());
            v[i] ^= 1 << rng.gen_range(0..8);
        }
        1 if !v.is_empty() => {
            let i = at(rng, v.len());
            v[i] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
        }
        2 => {
            let i = at(rng, v.len() + 1);
            let n = rng.gen_range(1..=8);
            let mut bytes = vec![0u8; n];
            rng.fill_bytes(&mut bytes);
            v.splice(i..i, bytes);
        }
        3 if !v.is_empty() => {
            let i = at(rng, v.len());
            let n = rng.gen_range(1..=(v.len() - i).min(16));
            v.drain(i..i + n);
        }
        4 if !v.is_empty() => {
            let i = at(rng, v.len());
            let n = rng.gen_range(1..=(v.len() - i).min(32));
            let piece: Vec<u8> = v[i..i + n].to_vec();
            let j = at(rng, v.len() + 1);
            v.splice(j..j, piece);
        }
        5 => {
            let len = at(rng, v.len() + 1);
            v.truncate(len);
        }
        6 if !seeds.is_empty() => {
            let other = &seeds[rng.gen_range(0..seeds.len())];
            let i = at(rng, v.len() + 1);
            let j = at(rng, other.len() + 1);
            v.truncate(i);
            v.extend_from_slice(&other[j..]);
        }
        _ => {
            let i = at(rng, v.len() + 1);
            let end = (i + HUGE_VARINT.len()).min(v.len());
            v.splice(i..end, HUGE_VARINT.iter().copied());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn mutations_change_inputs_and_stay_bounded() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let seeds = vec![b"hello, world".to_vec(), vec![1, 2, 3]];
        let mut changed = 0;
        for _ in 0..1000 {
            let v = input(&mut rng, &seeds);
            assert!(v.len() < 512);
            if !seeds.contains(&v) {
                changed += 1;
            }
        }
        assert!(changed > 900, "{changed}");
    }
}
