//! Webhooks: the server tells a game backend, durably, that a session
//! changed (API.md "Webhooks"; docs/WEBHOOKS.md).
//!
//! ```text
//! write.lua ─XADD─> outbox ─XREADGROUP "webhooks"─> accept (schedule + XACK, atomically)
//!                                                      └─> deliver ─2xx─> done
//!                                                              └─ else ─> retry at the next delay, or dead letter
//! ```
//!
//! Every recorded state change is in the outbox with the write itself, so it
//! produces its webhook even if the instance dies right after the write. The
//! deliveries wait in the store (a per-bucket schedule), never in memory
//! alone: one in flight is leased for `WEBHOOK_CLAIM_IDLE_MS`, and another
//! instance takes it over when the lease runs out.

pub mod deliver;
pub mod event;
pub mod sign;

use std::time::Duration;

use reqwest::Url;

pub use event::{EventSet, WebhookType};
pub use sign::SigningKey;

use crate::config::Config;

/// Webhook settings, checked once at start-up.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// `WEBHOOK_URL`: where every session's events go, unless it has its own.
    pub url: Option<Url>,
    pub key: SigningKey,
    pub events: EventSet,
    /// Per attempt: a 2xx within it is a success.
    pub timeout: Duration,
    /// The delays between attempts (1 + as many attempts as delays).
    pub schedule: Vec<Duration>,
    /// Prefixes a session's own `webhook_url` must be under.
    pub allowed: Vec<Url>,
    /// An attempt unfinished this long is taken over by another instance.
    pub claim_idle: Duration,
}

impl WebhookSettings {
    /// The settings from the configuration: `None` when webhooks are off
    /// (no `WEBHOOK_SECRET`, `WEBHOOK_URL` nor `WEBHOOK_ALLOWED_URLS`);
    /// an error names the one thing that is wrong.
    pub fn from_config(config: &Config) -> Result<Option<Self>, String> {
        let url = config
            .webhook_url
            .as_deref()
            .map(|u| endpoint(u, "WEBHOOK_URL"))
            .transpose()?;
        let allowed = config
            .webhook_allowed_urls
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|u| endpoint(u, "WEBHOOK_ALLOWED_URLS"))
            .collect::<Result<Vec<_>, _>>()?;
        // Checked even with webhooks off: a typo must not wait for the day
        // they are turned on.
        let events = EventSet::parse(&config.webhook_events)?;
        let schedule = parse_schedule(&config.webhook_retry_schedule)?;
        let Some(secret) = &config.webhook_secret else {
            if url.is_some() || !allowed.is_empty() {
                return Err(
                    "WEBHOOK_SECRET is required with WEBHOOK_URL or WEBHOOK_ALLOWED_URLS".into(),
                );
            }
            return Ok(None);
        };
        if url.is_none() && allowed.is_empty() {
            return Err(
                "WEBHOOK_SECRET is set but neither WEBHOOK_URL nor WEBHOOK_ALLOWED_URLS is".into(),
            );
        }
        Ok(Some(Self {
            url,
            key: SigningKey::parse(secret.expose())?,
            events,
            timeout: Duration::from_millis(config.webhook_timeout_ms),
            schedule,
            allowed,
            claim_idle: Duration::from_millis(config.webhook_claim_idle_ms),
        }))
    }

    /// Whether a session's own `webhook_url` is under one of the allowed
    /// prefixes: same scheme, host and port, and the prefix's path segments
    /// first (`…/hooks` admits `…/hooks/x`, not `…/hooksX`).
    pub fn admits(&self, url: &Url) -> bool {
        self.allowed.iter().any(|prefix| under(prefix, url))
    }
}

/// An http(s) URL without credentials. Errors do not repeat the URL: it
/// may hold a secret (a token in its path, or the very credentials refused).
fn endpoint(s: &str, name: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{name}: not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("{name}: must be an http or https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{name}: must not carry credentials"));
    }
    Ok(url)
}

/// A session's `webhook_url`, checked as [`endpoint`] does (for a 400).
pub fn parse_session_url(s: &str) -> Result<Url, String> {
    endpoint(s, "webhook_url").map_err(|e| e.trim_start_matches("webhook_url: ").to_owned())
}

fn under(prefix: &Url, url: &Url) -> bool {
    if prefix.scheme() != url.scheme()
        || prefix.host() != url.host()
        || prefix.port_or_known_default() != url.port_or_known_default()
    {
        return false;
    }
    let segments = |u: &Url| -> Vec<String> {
        u.path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let (want, got) = (segments(prefix), segments(url));
    got.len() >= want.len() && want.iter().zip(&got).all(|(a, b)| a == b)
}

/// `5s,5m,30m,2h`: delays with a unit each (`ms`, `s`, `m`, `h`).
pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, String> {
    let bad = |part: &str| {
        format!("WEBHOOK_RETRY_SCHEDULE: {part:?} is not a delay such as 500ms, 5s, 5m or 2h")
    };
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let digits = part
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(part.len());
        let (n, unit) = part.split_at(digits);
        let n: u64 = n.parse().map_err(|_| bad(part))?;
        let ms = match unit {
            "ms" => n,
            "s" => n.saturating_mul(1_000),
            "m" => n.saturating_mul(60_000),
            "h" => n.saturating_mul(3_600_000),
            _ => return Err(bad(part)),
        };
        out.push(Duration::from_millis(ms));
    }
    if out.len() > 20 {
        return Err("WEBHOOK_RETRY_SCHEDULE: at most 20 delays".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn prefixes_match_on_whole_path_segments() {
        let prefix = url("https://game.example/hooks");
        assert!(under(&prefix, &url("https://game.example/hooks")));
        assert!(under(&prefix, &url("https://game.example/hooks/")));
        assert!(under(&prefix, &url("https://game.example/hooks/x?y=1")));
        assert!(under(
            &url("https://game.example/hooks/"),
            &url("https://game.example/hooks/x")
        ));
        assert!(under(
            &url("https://game.example:443"),
            &url("https://game.example/any")
        ));
        assert!(!under(&prefix, &url("https://game.example/hooksX")));
        assert!(!under(&prefix, &url("https://game.example/other/hooks")));
        assert!(!under(&prefix, &url("http://game.example/hooks/x")));
        assert!(!under(&prefix, &url("https://game.example:8443/hooks/x")));
        assert!(!under(&prefix, &url("https://game.example.evil/hooks/x")));
        assert!(!under(&prefix, &url("https://evil.example/hooks")));
    }

    #[test]
    fn schedules_read_units() {
        assert_eq!(
            parse_schedule("500ms, 5s,5m,2h").unwrap(),
            [500, 5_000, 300_000, 7_200_000].map(Duration::from_millis)
        );
        assert!(parse_schedule("").unwrap().is_empty());
        for bad in ["5", "5d", "s", "-5s", "5 s"] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_are_http_without_credentials() {
        assert!(endpoint("https://a.example/x", "X").is_ok());
        assert!(endpoint("ftp://a.example/x", "X").is_err());
        let refused = endpoint("https://user:pw@a.example/x", "X").unwrap_err();
        assert!(!refused.contains("pw"), "{refused}");
        assert!(endpoint("not a url", "X").is_err());
    }
}
