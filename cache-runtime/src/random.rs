//! Cheap randomness for TTL jitter and lock tokens, without a dependency:
//! a per-thread xorshift generator seeded from the standard library's
//! randomly keyed hasher.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::process::id().into());
    hasher.finish() | 1
}

/// A uniformly distributed `u64` (xorshift64*; not for cryptography).
pub(crate) fn next_u64() -> u64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A number in `[0, 1)`.
pub(crate) fn unit() -> f64 {
    (next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A token that no other lock holder has: 128 random bits, in hex.
pub(crate) fn token() -> String {
    // Mixing in a fresh RandomState makes tokens unpredictable across
    // processes even if two generators ever met the same state.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(next_u64());
    format!("{:016x}{:016x}", hasher.finish(), next_u64())
}

#[cfg(test)]
mod tests {
    #[test]
    fn unit_is_in_range_and_varies() {
        let samples: Vec<f64> = (0..1000).map(|_| super::unit()).collect();
        assert!(samples.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = samples.iter().sum::<f64>() / 1000.0;
        assert!((0.4..0.6).contains(&mean), "mean {mean}");
        assert_ne!(super::token(), super::token());
    }
}
