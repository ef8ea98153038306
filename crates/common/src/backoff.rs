//! Exponential backoff: the wait after each failure in a row doubles, from a first wait up
//! to a cap. One policy for every retry loop: user-sync's start-up, its batches, and its
//! Clerk API client.

use std::time::Duration;

/// Waits that double from `first` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// Waits from `first`, doubling up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max }
    }

    /// The wait after `failures` failures in a row (1 for the first): `first` doubled
    /// `failures - 1` times, at most `max`. Never overflows, however many failures.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }

    /// [`Backoff::delay`] scaled into its upper half by `unit` (a random number in
    /// `[0, 1)`), so that replicas failing together don't retry together.
    pub fn jittered(&self, failures: u32, unit: f64) -> Duration {
        self.delay(failures)
            .mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_never_overflow() {
        let b = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let waits: Vec<u128> = (1..=9).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(
            waits,
            [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000]
        );
        assert_eq!(b.delay(0), b.first, "no failure yet reads as the first");
        assert_eq!(b.delay(u32::MAX), b.max);
    }

    #[test]
    fn jitter_keeps_the_upper_half() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        assert_eq!(b.jittered(2, 0.0), Duration::from_secs(1));
        assert_eq!(b.jittered(2, 0.5), Duration::from_millis(1500));
        assert!(b.jittered(2, 0.999_999) < Duration::from_secs(2));
    }
}
