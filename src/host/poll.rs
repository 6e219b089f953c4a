//! Waiting for another process by looking again: the first looks come soon (most
//! answers take a few milliseconds, and a fixed pause makes every one wait all of it),
//! later ones further apart.

use std::time::Duration;

/// The pause before look `round + 1`: 1 ms, doubling each round, at most `cap`.
pub fn pause(round: u32, cap: Duration) -> Duration {
    Duration::from_millis(1u64 << round.min(16)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_from_a_millisecond_up_to_the_cap() {
        let cap = Duration::from_millis(20);
        let got: Vec<u128> = (0..7).map(|r| pause(r, cap).as_millis()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 20, 20]);
        assert_eq!(pause(u32::MAX, cap), cap);
    }
}
