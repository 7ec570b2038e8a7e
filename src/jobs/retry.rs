//! When a failed job runs again.
//!
//! | attempt that failed | delay before the next (before jitter) |
//! |---|---|
//! | 1 | base (default 10 s) |
//! | 2 | 2 × base |
//! | n | min(base × 2^(n−1), cap) (cap default 1 h) |
//!
//! Jitter is additive, uniform in [0, delay / 4], so replicas that failed together spread
//! out, and a retry never comes earlier than the base delay. A rate-limit hint
//! (`Retry-After`, a platform's rate-limit code) replaces the delay when longer and does not
//! use up an attempt.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(3600),
            max_attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// The delay without jitter after `attempt` (1-based) failed.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(31);
        let grown = self.base.saturating_mul(1u32 << exp);
        grown.min(self.cap).max(self.base)
    }

    /// The delay with jitter, drawn from `jitter_unit` in [0, 1).
    pub fn delay_with(&self, attempt: u32, jitter_unit: f64) -> Duration {
        let d = self.backoff(attempt);
        let unit = jitter_unit.clamp(0.0, 1.0);
        d + d.mul_f64(0.25 * unit)
    }

    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, rand::thread_rng().gen::<f64>())
    }

    /// A rate-limit hint only delays: the retry waits for the longer of the hint and the
    /// base delay.
    pub fn rate_limited(&self, hint: Option<Duration>) -> Duration {
        hint.unwrap_or(self.base).max(self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> impl Strategy<Value = RetryPolicy> {
        (1u64..120, 1u64..100_000, 1u32..30).prop_map(|(base, cap_factor, max)| RetryPolicy {
            base: Duration::from_secs(base),
            cap: Duration::from_secs(base.saturating_mul(cap_factor)),
            max_attempts: max,
        })
    }

    proptest! {
        #[test]
        fn never_earlier_than_base(p in policy(), attempt in 1u32..200, j in 0.0f64..1.0) {
            prop_assert!(p.delay_with(attempt, j) >= p.base);
        }

        #[test]
        fn never_later_than_cap_plus_jitter(p in policy(), attempt in 1u32..200, j in 0.0f64..1.0) {
            let limit = p.cap.max(p.base);
            prop_assert!(p.delay_with(attempt, j) <= limit + limit / 4);
        }

        #[test]
        fn backoff_does_not_shrink(p in policy(), attempt in 1u32..200) {
            prop_assert!(p.backoff(attempt + 1) >= p.backoff(attempt));
        }

        #[test]
        fn jitter_stays_within_a_quarter(p in policy(), attempt in 1u32..200, j in 0.0f64..1.0) {
            let d = p.backoff(attempt);
            let with = p.delay_with(attempt, j);
            prop_assert!(with >= d && with <= d + d / 4 + Duration::from_nanos(1));
        }

        #[test]
        fn rate_limit_hints_only_delay(p in policy(), hint in 0u64..100_000) {
            let h = Duration::from_millis(hint);
            prop_assert!(p.rate_limited(Some(h)) >= h);
            prop_assert!(p.rate_limited(Some(h)) >= p.base);
        }
    }

    #[test]
    fn the_documented_table() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_secs(10));
        assert_eq!(p.backoff(2), Duration::from_secs(20));
        assert_eq!(p.backoff(4), Duration::from_secs(80));
        assert_eq!(p.backoff(20), Duration::from_secs(3600));
    }
}
