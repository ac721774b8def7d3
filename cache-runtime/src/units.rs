//! Saturating conversions of durations to the integer units that Redis
//! commands, envelopes and logs use.

use std::time::Duration;

/// Whole milliseconds, `u64::MAX` for durations too long to count.
#[inline]
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Whole microseconds, `u64::MAX` for durations too long to count.
#[inline]
pub(crate) fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A TTL in milliseconds as Redis takes it: never zero (an error in Redis),
/// so a store always gets an expiry.
#[inline]
pub(crate) fn ttl_millis(ttl: Duration) -> u64 {
    millis(ttl).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate_and_ttls_are_never_zero() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(micros(Duration::MAX), u64::MAX);
        assert_eq!(ttl_millis(Duration::from_micros(10)), 1);
    }
}
