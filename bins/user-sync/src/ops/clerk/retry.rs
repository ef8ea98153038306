//! How persistent a request to Clerk is: `429` waited out as `Retry-After` says, `5xx` and
//! network failures retried with backoff a bounded number of times, anything else final.
//! A decision without I/O ([`next_step`]), tested as such.

use std::time::Duration;

use common::backoff::Backoff;

/// How persistent requests are.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts for a `5xx` or a network failure, the first included.
    pub attempts: u32,
    /// The first wait after such a failure; doubled each time.
    pub first_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// `429`s waited out for one request before giving up.
    pub rate_limited: u32,
    /// The longest `Retry-After` honoured (a longer one is waited for this long).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            rate_limited: 50,
            max_retry_after: Duration::from_secs(120),
        }
    }
}

/// What one failed attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Wait this long, then ask again.
    Retry(Duration),
    /// Stop: the failure is final.
    Fail,
}

/// The answer (or its absence) of one attempt, as the retry decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt<'a> {
    /// An HTTP status other than success, with its `Retry-After` header if any.
    Status(u16, Option<&'a str>),
    /// No answer: connection refused or reset, timeout.
    Network,
}

/// The retry decision. `failures` counts earlier failures of the same kind for this
/// request (0 for the first); 429s and the rest are counted apart, so a rate limit never
/// uses up the attempts meant for outages.
pub(super) fn next_step(policy: &RetryPolicy, attempt: Attempt<'_>, failures: u32) -> Step {
    let backoff = || {
        let backoff = Backoff::new(policy.first_backoff, policy.max_backoff);
        Step::Retry(backoff.delay(failures + 1))
    };
    match attempt {
        Attempt::Status(429, retry_after) => {
            if failures >= policy.rate_limited {
                return Step::Fail;
            }
            // Retry-After is seconds here (Clerk sends seconds); an HTTP date or garbage
            // falls back to the backoff.
            match retry_after.and_then(|v| v.trim().parse::<f64>().ok()) {
                Some(seconds) if seconds.is_finite() && seconds >= 0.0 => Step::Retry(
                    Duration::from_secs_f64(seconds.min(policy.max_retry_after.as_secs_f64())),
                ),
                _ => backoff(),
            }
        }
        Attempt::Status(500..=599, _) | Attempt::Network => {
            if failures + 1 >= policy.attempts {
                Step::Fail
            } else {
                backoff()
            }
        }
        Attempt::Status(..) => Step::Fail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
            rate_limited: 4,
            max_retry_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_rate_limit_waits_what_retry_after_says() {
        let p = policy();
        assert_eq!(
            next_step(&p, Attempt::Status(429, Some("2")), 0),
            Step::Retry(Duration::from_secs(2))
        );
        assert_eq!(
            next_step(&p, Attempt::Status(429, Some(" 0.5 ")), 1),
            Step::Retry(Duration::from_millis(500))
        );
        // Capped, and a value that isn't seconds falls back to the backoff.
        assert_eq!(
            next_step(&p, Attempt::Status(429, Some("86400")), 0),
            Step::Retry(Duration::from_secs(60))
        );
        assert_eq!(
            next_step(
                &p,
                Attempt::Status(429, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
                0
            ),
            Step::Retry(Duration::from_millis(100))
        );
        assert_eq!(
            next_step(&p, Attempt::Status(429, Some("-1")), 0),
            Step::Retry(Duration::from_millis(100))
        );
        // …`rate_limited` times for one request, then no more.
        assert_eq!(
            next_step(&p, Attempt::Status(429, Some("1")), 3),
            Step::Retry(Duration::from_secs(1))
        );
        assert_eq!(
            next_step(&p, Attempt::Status(429, Some("1")), 4),
            Step::Fail
        );
    }

    #[test]
    fn outages_back_off_a_bounded_number_of_times() {
        let p = policy();
        for attempt in [
            Attempt::Status(500, None),
            Attempt::Status(503, Some("1")),
            Attempt::Network,
        ] {
            assert_eq!(
                next_step(&p, attempt, 0),
                Step::Retry(Duration::from_millis(100))
            );
            assert_eq!(
                next_step(&p, attempt, 1),
                Step::Retry(Duration::from_millis(200))
            );
            assert_eq!(next_step(&p, attempt, 2), Step::Fail);
        }
        let patient = RetryPolicy { attempts: 100, ..p };
        assert_eq!(
            next_step(&patient, Attempt::Network, 40),
            Step::Retry(Duration::from_millis(250)),
            "the backoff is capped and never overflows"
        );
    }

    #[test]
    fn other_answers_are_final() {
        for status in [400, 401, 403, 404, 422, 302] {
            assert_eq!(
                next_step(&policy(), Attempt::Status(status, Some("1")), 0),
                Step::Fail
            );
        }
    }
}
