//! Retry policy: bounded by attempts AND total time, jittered exponential backoff, and never shorter
//! than the largest wait any throttling header asks for.

use reqwest::header::HeaderMap;
use std::time::Duration;

/// Every header Azure uses to say "come back later", in seconds unless named `-ms`.
pub const RETRY_HEADERS_SECS: &[&str] = &[
    "retry-after",
    "x-ms-ratelimit-microsoft.consumption-retry-after",
    "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after",
    "x-ms-ratelimit-microsoft.costmanagement-entity-retry-after",
    "x-ms-ratelimit-microsoft.costmanagement-tenant-retry-after",
    "x-ms-ratelimit-microsoft.costmanagement-clienttype-retry-after",
    "x-ms-ratelimit-microsoft.costmanagement-client-retry-after",
];
pub const RETRY_HEADERS_MS: &[&str] = &["retry-after-ms", "x-ms-retry-after-ms"];

/// The largest wait asked for by any retry header present (`Retry-After` may also be an HTTP date).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let secs = RETRY_HEADERS_SECS.iter().filter_map(|h| {
        let t = text(h)?;
        if let Ok(s) = t.parse::<f64>() {
            return (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s.min(86_400.0)));
        }
        let when = chrono::DateTime::parse_from_rfc2822(t).ok()?;
        let d = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
        Some(d.to_std().unwrap_or(Duration::ZERO))
    });
    let ms = RETRY_HEADERS_MS.iter().filter_map(|h| {
        text(h)?
            .parse::<u64>()
            .ok()
            .map(|m| Duration::from_millis(m.min(86_400_000)))
    });
    secs.chain(ms).max()
}

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// No retry starts after this much time since the first attempt (waits included).
    pub max_elapsed: Duration,
    pub base: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 10,
            max_elapsed: Duration::from_secs(15 * 60),
            base: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Full-jitter exponential backoff for retry number `n` (0-based), floored by the server's ask.
    pub fn wait(&self, n: u32, server: Option<Duration>) -> Duration {
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(n.min(20)))
            .min(self.max_backoff);
        let jittered = exp.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        match server {
            Some(s) => s.max(jittered.min(s / 4 + self.base / 4)),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn largest_header_wins() {
        let m = h(&[
            ("Retry-After", "2"),
            ("x-ms-ratelimit-microsoft.consumption-retry-after", "7"),
            ("retry-after-ms", "300"),
        ]);
        assert_eq!(retry_after(&m), Some(Duration::from_secs(7)));
        let m = h(&[("retry-after-ms", "1500"), ("Retry-After", "1")]);
        assert_eq!(retry_after(&m), Some(Duration::from_millis(1500)));
        let m = h(&[(
            "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after",
            "12",
        )]);
        assert_eq!(retry_after(&m), Some(Duration::from_secs(12)));
        assert_eq!(retry_after(&h(&[("Retry-After", "soon")])), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn wait_never_below_server_ask_and_bounded() {
        let p = RetryPolicy::default();
        for n in 0..30 {
            let w = p.wait(n, Some(Duration::from_secs(3)));
            assert!(w >= Duration::from_secs(3));
            assert!(p.wait(n, None) <= p.max_backoff);
        }
    }
}
