//! A small seeded random sequence for tests and their worker processes, so
//! that the harness needs no random-number dependency.

/// xorshift64: fast, seeded, and good enough to pick delays and routes.
pub struct Xorshift(u64);

impl Xorshift {
    /// A sequence from `seed`; any seed works, 0 included.
    pub fn new(seed: u64) -> Xorshift {
        // xorshift stays at 0 forever from 0: mix the seed into a constant.
        Xorshift((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let state = &mut self.0;
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// True once in `times` on average.
    pub fn one_in(&mut self, times: u64) -> bool {
        self.below(times) == 0
    }
}
