//! What an answer calls for: retry (after how long) or fail. The decisions are pure functions,
//! tested on their own; [`super::Source::fetch`] only carries them out. Bodies are classified
//! by [`crate::wire::classify_body`].

use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;

/// What an HTTP status calls for.
#[derive(Debug, PartialEq)]
pub enum StatusVerdict {
    /// 200: read the body.
    Read,
    /// 429 (after `wait` when it sent `Retry-After`), 5xx: try again.
    Retry { why: String, wait: Option<Duration> },
    /// 401, 403: the token.
    Unauthorized,
    /// 400: read the message and fail.
    BadRequest,
    /// Anything else: fail.
    Fail,
}

/// Decides what an HTTP status (and its `Retry-After`, cut to `retry_after_max`) calls for.
pub fn classify_status(
    status: StatusCode,
    headers: &HeaderMap,
    retry_after_max: Duration,
) -> StatusVerdict {
    match status {
        StatusCode::OK => StatusVerdict::Read,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => StatusVerdict::Unauthorized,
        StatusCode::BAD_REQUEST => StatusVerdict::BadRequest,
        StatusCode::TOO_MANY_REQUESTS => {
            let secs = headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0);
            StatusVerdict::Retry {
                why: format!("HTTP 429, Retry-After {secs:?}"),
                wait: secs.map(|s| Duration::from_secs_f64(s.min(1e6)).min(retry_after_max)),
            }
        }
        s if s.is_server_error() => StatusVerdict::Retry {
            why: format!("HTTP {}", s.as_u16()),
            wait: None,
        },
        _ => StatusVerdict::Fail,
    }
}

/// Capped exponential backoff with jitter: attempt n waits between half and all of
/// `base × 2ⁿ`, never more than `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after failed attempt `attempt` (1-based), drawn with `rng`.
    pub fn wait(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max)
            .as_millis() as u64;
        Duration::from_millis(rng.random_range(cap / 2..=cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use reqwest::header::HeaderValue;

    #[test]
    fn statuses_are_classified() {
        let max = Duration::from_secs(120);
        let none = HeaderMap::new();
        assert_eq!(
            classify_status(StatusCode::OK, &none, max),
            StatusVerdict::Read
        );
        assert_eq!(
            classify_status(StatusCode::UNAUTHORIZED, &none, max),
            StatusVerdict::Unauthorized
        );
        assert_eq!(
            classify_status(StatusCode::FORBIDDEN, &none, max),
            StatusVerdict::Unauthorized
        );
        assert_eq!(
            classify_status(StatusCode::BAD_REQUEST, &none, max),
            StatusVerdict::BadRequest
        );
        assert_eq!(
            classify_status(StatusCode::NOT_FOUND, &none, max),
            StatusVerdict::Fail
        );
        for s in [500, 502, 503, 504] {
            assert!(matches!(
                classify_status(StatusCode::from_u16(s).unwrap(), &none, max),
                StatusVerdict::Retry { wait: None, .. }
            ));
        }
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert!(matches!(
            classify_status(StatusCode::TOO_MANY_REQUESTS, &h, max),
            StatusVerdict::Retry { wait: Some(w), .. } if w == Duration::from_secs(3)
        ));
        h.insert(RETRY_AFTER, HeaderValue::from_static("86400"));
        assert!(matches!(
            classify_status(StatusCode::TOO_MANY_REQUESTS, &h, max),
            StatusVerdict::Retry { wait: Some(w), .. } if w == max
        ));
        for odd in ["-1", "soon", "NaN", "1e400"] {
            h.insert(RETRY_AFTER, HeaderValue::from_static(odd));
            assert!(
                matches!(
                    classify_status(StatusCode::TOO_MANY_REQUESTS, &h, max),
                    StatusVerdict::Retry { wait: None, .. }
                ),
                "{odd}"
            );
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for attempt in 1..40 {
            let cap = (100u64 << attempt.min(16)).min(2000);
            for _ in 0..50 {
                let w = b.wait(attempt, &mut rng).as_millis() as u64;
                assert!(w >= cap / 2 && w <= cap, "attempt {attempt}: {w} ms");
            }
        }
        let zero = Backoff {
            base: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(zero.wait(3, &mut rng), Duration::ZERO);
    }
}
