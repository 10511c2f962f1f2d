//! [`RedisConfig`] and [`FailurePolicy`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// How [`RedisStore`](crate::RedisStore) is built.
///
/// Lock, processed and failure TTLs are not here: the worker's `IdempotencyLayer` passes them
/// with every call (5 minutes and 24 hours by default), so one store can serve workers with
/// different settings.
///
/// The struct is `#[non_exhaustive]`: start from [`Default`] or [`from_url`](Self::from_url)
/// and set the fields you need.
///
/// ```
/// use std::time::Duration;
/// use firefly_webhook_redis::{FailurePolicy, RedisConfig};
///
/// let mut config = RedisConfig::from_url("redis://:s3cret@10.0.0.5:6379/0");
/// config.key_prefix = "billing:webhooks".into();
/// config.command_timeout = Duration::from_millis(500);
/// config.failure_policy = "fail_closed".parse()?;
/// assert_eq!(config.failure_policy, FailurePolicy::FailClosed);
/// assert!(!format!("{config:?}").contains("s3cret"));
/// # Ok::<(), firefly_webhook_redis::UnknownFailurePolicy>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[[user]:password@]host[:port][/db]`, `rediss://…` for TLS (needs the
    /// `tls-native-tls` feature) or `redis+unix:///path`. Default `redis://127.0.0.1:6379`.
    pub url: String,
    /// How many connections the store keeps open (default 2). Each connection is multiplexed:
    /// concurrent calls are pipelined on it, so a few connections carry thousands of claims per
    /// second.
    pub pool_size: usize,
    /// Prepended to every key (default `firefly:webhooks`). Must not be empty nor contain `{` or
    /// `}`, which would break the Redis Cluster hash tag.
    pub key_prefix: String,
    /// Upper bound for opening a connection and for waiting for a free one (default 1 s); also
    /// bounds the start-up `PING` of [`RedisStore::connect`](crate::RedisStore::connect).
    #[cfg_attr(
        feature = "serde",
        serde(with = "millis", rename = "connect_timeout_ms")
    )]
    pub connect_timeout: Duration,
    /// Upper bound for one command's answer (default 1 s); past it the call fails with
    /// `StoreError::Unavailable`.
    #[cfg_attr(
        feature = "serde",
        serde(with = "millis", rename = "command_timeout_ms")
    )]
    pub command_timeout: Duration,
    /// What to do when Redis cannot be reached (default [`FailurePolicy::FailClosed`]).
    pub failure_policy: FailurePolicy,
    /// A PEM file with the CA certificate(s) that sign the server's certificate, for a
    /// `rediss://` URL whose server the system trust store does not know (a private CA).
    /// Trusted in addition to the system's roots. Unset by default. Needs the
    /// `tls-native-tls` feature; not supported by `RedisStore::cluster`.
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            pool_size: 2,
            key_prefix: "firefly:webhooks".into(),
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
            failure_policy: FailurePolicy::FailClosed,
            tls_ca_file: None,
        }
    }
}

impl RedisConfig {
    /// The default configuration for `url`.
    pub fn from_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.pool_size == 0 {
            return Err(Error::Config("pool size must be at least 1".into()));
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return Err(Error::Config(
                "key prefix must be non-empty and free of `{` and `}`".into(),
            ));
        }
        if self.connect_timeout.is_zero() || self.command_timeout.is_zero() {
            return Err(Error::Config("timeouts must be above zero".into()));
        }
        Ok(())
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("failure_policy", &self.failure_policy)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

/// What the store answers when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Fail with `StoreError::Unavailable`: the worker does not call the processor and does not
    /// ack, so the delivery comes back once Redis does. Nothing runs twice; nothing runs at all
    /// while Redis is down.
    #[default]
    FailClosed,
    /// Pretend the claim succeeded (with a sentinel token) and make `complete`/`release` no-ops,
    /// logging a warning each time. Webhooks keep flowing while Redis is down, **but duplicates
    /// are processed again** and two workers may process the same event at once. Only for
    /// processors that are idempotent on their own.
    FailOpen,
}

impl FailurePolicy {
    /// The configuration name: `fail_closed` or `fail_open` (as serde writes it too).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FailClosed => "fail_closed",
            Self::FailOpen => "fail_open",
        }
    }
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailurePolicy {
    type Err = UnknownFailurePolicy;

    /// Parses a configuration name, ignoring case and surrounding space.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        [Self::FailClosed, Self::FailOpen]
            .into_iter()
            .find(|policy| policy.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownFailurePolicy(wanted.to_owned()))
    }
}

/// A failure policy name that is neither `fail_closed` nor `fail_open`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown failure policy `{0}`")]
pub struct UnknownFailurePolicy(pub String);

/// `url` with its password (user-info or `password=` query parameter) replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..scheme_end]);
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let user_info = &authority[..at];
            match user_info.find(':') {
                Some(colon) => {
                    out.push_str(&user_info[..=colon]);
                    out.push_str("***");
                }
                // `redis://secret@host` is read as a username by the driver; still hide it.
                None => out.push_str("***"),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let tail = &rest[authority_end..];
    match tail.find('?') {
        Some(q) => {
            out.push_str(&tail[..=q]);
            let query = &tail[q + 1..];
            let (query, fragment) = query.split_at(query.find('#').unwrap_or(query.len()));
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((name, _))
                        if name.eq_ignore_ascii_case("pass")
                            || name.eq_ignore_ascii_case("password") =>
                    {
                        out.push_str(name);
                        out.push_str("=***");
                    }
                    _ => out.push_str(pair),
                }
            }
            out.push_str(fragment);
        }
        None => out.push_str(tail),
    }
    out
}

#[cfg(feature = "serde")]
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        for (url, want) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
            ("rediss://user:p@ss:w0rd@h", "rediss://user:***@h"),
            ("redis://token@h", "redis://***@h"),
            (
                "redis+unix:///tmp/r.sock?db=1&pass=pw#x",
                "redis+unix:///tmp/r.sock?db=1&pass=***#x",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let config = RedisConfig::from_url("redis://default:hunter2@127.0.0.1");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("default:***@127.0.0.1"), "{debug}");
    }

    #[test]
    fn validation() {
        assert!(RedisConfig::default().validate().is_ok());
        for bad in [
            RedisConfig {
                pool_size: 0,
                ..RedisConfig::default()
            },
            RedisConfig {
                key_prefix: String::new(),
                ..RedisConfig::default()
            },
            RedisConfig {
                key_prefix: "a{b".into(),
                ..RedisConfig::default()
            },
            RedisConfig {
                command_timeout: Duration::ZERO,
                ..RedisConfig::default()
            },
        ] {
            assert!(matches!(bad.validate(), Err(Error::Config(_))), "{bad:?}");
        }
    }

    #[test]
    fn failure_policy_names_round_trip() {
        for policy in [FailurePolicy::FailClosed, FailurePolicy::FailOpen] {
            assert_eq!(policy.to_string().parse::<FailurePolicy>().unwrap(), policy);
            assert_eq!(
                format!(" {} ", policy.as_str().to_uppercase())
                    .parse::<FailurePolicy>()
                    .unwrap(),
                policy
            );
        }
        assert_eq!(FailurePolicy::FailOpen.to_string(), "fail_open");
        assert_eq!(
            "fail-open"
                .parse::<FailurePolicy>()
                .unwrap_err()
                .to_string(),
            "unknown failure policy `fail-open`"
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_uses_milliseconds_and_defaults() {
        let config: RedisConfig = serde_json::from_str(
            r#"{"url":"redis://10.0.0.5","command_timeout_ms":250,"failure_policy":"fail_open",
                "tls_ca_file":"/etc/redis/ca.crt"}"#,
        )
        .unwrap();
        assert_eq!(
            config.tls_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/redis/ca.crt"))
        );
        assert_eq!(config.url, "redis://10.0.0.5");
        assert_eq!(config.command_timeout, Duration::from_millis(250));
        assert_eq!(config.failure_policy, FailurePolicy::FailOpen);
        assert_eq!(config.key_prefix, RedisConfig::default().key_prefix);
        let back: RedisConfig =
            serde_json::from_value(serde_json::to_value(&config).unwrap()).unwrap();
        assert_eq!(back, config);
        for policy in [FailurePolicy::FailClosed, FailurePolicy::FailOpen] {
            assert_eq!(serde_json::to_value(policy).unwrap(), policy.as_str());
        }
    }
}
