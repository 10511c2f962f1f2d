//! [`Settings`]: every `FIREFLY_*` variable, parsed once.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use firefly_webhook::Verifiers;
use ipnet::IpNet;

use crate::transport::{TransportKind, UnknownTransport};

/// The variables, by name (only `FIREFLY_*` ones are kept).
pub(crate) type Vars = BTreeMap<String, String>;

pub(crate) fn collect<I, K, V>(vars: I) -> Vars
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    vars.into_iter()
        .filter(|(k, _)| k.as_ref().starts_with("FIREFLY_"))
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
        .collect()
}

/// A variable that is missing, unusable or inconsistent with another. The message names the
/// variable and never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct EnvError {
    var: String,
    reason: String,
}

impl EnvError {
    pub(crate) fn new(var: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            var: var.into(),
            reason: reason.into(),
        }
    }

    /// The variable at fault.
    pub fn var(&self) -> &str {
        &self.var
    }
}

/// A value that may hold credentials (a URL with a password): `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What differs between the applications that share these settings.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// `FIREFLY_GROUP` when unset.
    pub group: &'static str,
    /// `FIREFLY_DESTINATIONS` when unset; `None` derives them from `FIREFLY_PROVIDERS` and
    /// `FIREFLY_TOPIC_PREFIX`.
    pub destinations: Option<&'static [&'static str]>,
}

impl Defaults {
    /// The gateway's: group `firefly-gateway`, destinations from the provider allowlist.
    pub const GATEWAY: Self = Self {
        group: "firefly-gateway",
        destinations: None,
    };
}

/// Everything the examples read from the environment. See the workspace README's
/// configuration table for each variable.
#[derive(Debug, Clone)]
#[non_exhaustive]
#[allow(
    clippy::struct_excessive_bools,
    reason = "one field per FIREFLY_* switch"
)]
pub struct Settings {
    /// `FIREFLY_LISTEN`.
    pub listen: SocketAddr,
    /// `FIREFLY_TRANSPORT`.
    pub transport: TransportKind,
    /// `FIREFLY_MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// `FIREFLY_PROVIDERS`, lower-cased.
    pub providers: Option<Vec<String>>,
    /// `FIREFLY_TOPIC_PREFIX`.
    pub topic_prefix: String,
    /// `FIREFLY_TRUSTED_PROXIES`.
    pub trusted_proxies: Vec<IpNet>,
    /// `FIREFLY_WORKER`.
    pub worker: bool,
    /// `FIREFLY_QUEUE_CAPACITY`.
    pub queue_capacity: usize,
    /// `FIREFLY_WORKER_CONCURRENCY`.
    pub concurrency: usize,
    /// `FIREFLY_WORKER_INLINE`: run deliveries inside the worker's task (default `true`).
    pub worker_inline: bool,
    /// `FIREFLY_REDIS_URL`.
    pub redis_url: Option<Redacted>,
    /// What a worker consumes on a broker: `FIREFLY_DESTINATIONS`, else the application's
    /// default (see [`Defaults`]).
    pub destinations: Option<Vec<String>>,
    /// `FIREFLY_KAFKA_BROKERS`.
    pub kafka_brokers: String,
    /// `FIREFLY_AMQP_URL`.
    pub amqp_url: Redacted,
    /// `FIREFLY_AMQP_DEPTH_INTERVAL`: how often the RabbitMQ queue depth is polled
    /// (`Some(ZERO)`: never; `None`: the transport's default).
    pub amqp_depth_interval: Option<Duration>,
    /// `FIREFLY_GROUP`: the Kafka consumer group.
    pub group: String,
    /// `FIREFLY_VERIFY_*`, `FIREFLY_SECRET_*`, ...: the signature verifiers.
    pub verifiers: Verifiers,
    /// `FIREFLY_ALLOW_ANY_PROVIDER`: accept webhooks for any provider name on a broker
    /// transport (see [`check_ingest`](Self::check_ingest)).
    pub allow_any_provider: bool,
    /// `FIREFLY_BODY_TIMEOUT`: how long a request body may take to arrive (`None`: the ingest
    /// service's default).
    pub body_timeout: Option<Duration>,
    /// `FIREFLY_HEADERS_TIMEOUT` (`None`: the server's default).
    pub header_read_timeout: Option<Duration>,
    /// `FIREFLY_KEEP_ALIVE_TIMEOUT` (`None`: the server's default).
    pub keep_alive_timeout: Option<Duration>,
    /// `FIREFLY_REQUEST_TIMEOUT` (`None`: the server's default).
    pub request_timeout: Option<Duration>,
    /// `FIREFLY_MAX_CONNECTIONS` (`None`: the server's default).
    pub max_connections: Option<usize>,
    /// `FIREFLY_SHUTDOWN_TIMEOUT`: how long shutdown waits for requests in progress (`None`:
    /// the server's default).
    pub shutdown_timeout: Option<Duration>,
    /// `FIREFLY_MAX_IN_FLIGHT`: ingest requests handled at once (`None`: the ingest default).
    pub max_in_flight: Option<usize>,
    /// `FIREFLY_BODY_BUDGET`: bytes of request bodies being read at once (`None`: the ingest
    /// default).
    pub body_budget: Option<usize>,
    /// `FIREFLY_KEEP_CREDENTIALS`: publish credential headers after verification.
    pub keep_credentials: bool,
    /// `FIREFLY_RATE_LIMIT_PER_IP`: requests per second (and burst) per client address.
    pub rate_limit_per_ip: Option<RateLimit>,
    /// `FIREFLY_RATE_LIMIT_PER_PROVIDER`: requests per second (and burst) per provider.
    pub rate_limit_per_provider: Option<RateLimit>,
    /// `FIREFLY_ALLOW_IPS`: per-provider source-address allowlists.
    pub allow_ips: Vec<(String, Vec<IpNet>)>,
    /// `FIREFLY_BREAKER_THRESHOLD`: consecutive publish failures that open the circuit breaker
    /// (`Some(0)`: no breaker; `None`: the breaker's default).
    pub breaker_threshold: Option<u32>,
    /// `FIREFLY_BREAKER_COOL_DOWN`: how long the open breaker refuses before probing.
    pub breaker_cool_down: Option<Duration>,
    /// `FIREFLY_READY_CACHE`: how long a readiness result is reused.
    pub ready_cache: Option<Duration>,
    /// `FIREFLY_LOG_FORMAT`: `text` (default) or `json`, one object per line.
    pub log_format: LogFormat,
    /// `FIREFLY_METRICS_LISTEN`: a listener of its own for `GET /metrics` (the gateway: instead
    /// of `FIREFLY_LISTEN`; the worker: none when unset).
    pub metrics_listen: Option<SocketAddr>,
    /// `FIREFLY_SPOOL_DIR`: spool events on disk while the broker is down (kafka, amqp).
    pub spool_dir: Option<PathBuf>,
    /// `FIREFLY_SPOOL_MAX_BYTES`: the spool's (or the disk transport's) size limit.
    pub spool_max_bytes: Option<u64>,
    /// `FIREFLY_SPOOL_BROKER_TIMEOUT`: how long a publish waits for the broker before the
    /// event is spooled.
    pub spool_broker_timeout: Option<Duration>,
    /// `FIREFLY_DATA_DIR`: the disk transport's directory.
    pub data_dir: PathBuf,
    /// `FIREFLY_MEMORY_MAX_BYTES`: the memory transport's byte budget (`None`: its default).
    pub memory_max_bytes: Option<usize>,
    /// `FIREFLY_MEMORY_DEAD_LETTERS`: dead letters the memory transport keeps.
    pub memory_dead_letters: Option<usize>,
    /// `FIREFLY_WORKER_PAUSE_AFTER`: consecutive failed deliveries that pause the worker
    /// (`Some(0)`: never).
    pub worker_pause_after: Option<u32>,
    /// `FIREFLY_WORKER_PAUSE_COOL_DOWN`: how long a paused worker waits before probing.
    pub worker_pause_cool_down: Option<Duration>,
}

/// `FIREFLY_LOG_FORMAT`: how log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line, with the fields of the event and of its span flattened in.
    Json,
}

/// A rate: `per_second` requests per second with bursts of up to `burst`, written `N` (burst
/// = N) or `N/BURST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: NonZeroU32,
    /// Requests allowed at once after a quiet period.
    pub burst: NonZeroU32,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env(defaults: Defaults) -> Result<Self, EnvError> {
        let mut vars = Vec::new();
        for (key, value) in std::env::vars_os() {
            let Some(key) = key.to_str().filter(|k| k.starts_with("FIREFLY_")) else {
                continue;
            };
            let value = value
                .into_string()
                .map_err(|_| EnvError::new(key, "the value is not valid UTF-8"))?;
            vars.push((key.to_owned(), value));
        }
        Self::from_vars(vars, defaults)
    }

    /// Reads `(name, value)` pairs, as [`from_env`](Self::from_env) does with the process
    /// environment (testable without touching it).
    #[allow(
        clippy::too_many_lines,
        reason = "one statement per variable reads best"
    )]
    pub fn from_vars<I, K, V>(vars: I, defaults: Defaults) -> Result<Self, EnvError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let vars = collect(vars);
        let var = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let number = |name: &str, default: usize| -> Result<usize, EnvError> {
            var(name).map_or(Ok(default), |v| {
                v.parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(name, v, "a positive whole number"))
            })
        };
        let seconds = |name: &str| var(name).map(|v| parse_seconds(name, v)).transpose();
        let list = |name: &str| {
            var(name).map(|v| {
                v.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>()
            })
        };

        let listen = match var("FIREFLY_LISTEN") {
            Some(v) => v
                .parse()
                .map_err(|_| bad("FIREFLY_LISTEN", v, "an address like 127.0.0.1:8080"))?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let metrics_listen = var(METRICS_LISTEN)
            .map(|v| {
                v.parse()
                    .map_err(|_| bad(METRICS_LISTEN, v, "an address like 127.0.0.1:9100"))
            })
            .transpose()?;
        if metrics_listen == Some(listen) {
            return Err(EnvError::new(
                METRICS_LISTEN,
                "is FIREFLY_LISTEN; leave it unset to serve /metrics there",
            ));
        }
        let log_format = match var(LOG_FORMAT).map(str::to_ascii_lowercase).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(bad(LOG_FORMAT, other, "text or json")),
        };
        let transport = match var("FIREFLY_TRANSPORT") {
            None => TransportKind::Memory,
            Some(v) => v.parse().map_err(|_: UnknownTransport| {
                bad("FIREFLY_TRANSPORT", v, "memory, kafka or amqp")
            })?,
        };
        let providers = list("FIREFLY_PROVIDERS").map(|ps| {
            ps.iter()
                .map(|p| p.to_ascii_lowercase())
                .collect::<Vec<_>>()
        });
        let trusted_proxies = match var("FIREFLY_TRUSTED_PROXIES") {
            Some(v) => parse_nets("FIREFLY_TRUSTED_PROXIES", v)?,
            None => Vec::new(),
        };
        let worker = match var("FIREFLY_WORKER") {
            None => true,
            Some(v) => parse_bool("FIREFLY_WORKER", v)?,
        };
        let topic_prefix = var("FIREFLY_TOPIC_PREFIX").unwrap_or_default().to_owned();
        let destinations = list("FIREFLY_DESTINATIONS").or_else(|| match defaults.destinations {
            Some(names) => Some(names.iter().map(|&n| n.to_owned()).collect()),
            None => providers
                .as_ref()
                .map(|ps| ps.iter().map(|p| format!("{topic_prefix}{p}")).collect()),
        });
        Ok(Self {
            listen,
            transport,
            max_body_bytes: number("FIREFLY_MAX_BODY_BYTES", 1024 * 1024)?,
            topic_prefix,
            trusted_proxies,
            worker,
            queue_capacity: number("FIREFLY_QUEUE_CAPACITY", 10_000)?,
            concurrency: number("FIREFLY_WORKER_CONCURRENCY", 64)?,
            worker_inline: match var("FIREFLY_WORKER_INLINE") {
                None => true,
                Some(v) => parse_bool("FIREFLY_WORKER_INLINE", v)?,
            },
            redis_url: var("FIREFLY_REDIS_URL").map(|v| Redacted(v.to_owned())),
            destinations,
            providers,
            kafka_brokers: var("FIREFLY_KAFKA_BROKERS")
                .unwrap_or("127.0.0.1:9092")
                .to_owned(),
            amqp_url: Redacted(
                var("FIREFLY_AMQP_URL")
                    .unwrap_or("amqp://guest:guest@127.0.0.1:5672/%2f")
                    .to_owned(),
            ),
            group: var("FIREFLY_GROUP").unwrap_or(defaults.group).to_owned(),
            verifiers: crate::verify::verifiers(&vars)?,
            allow_any_provider: match var(ALLOW_ANY_PROVIDER) {
                None => false,
                Some(v) => parse_bool(ALLOW_ANY_PROVIDER, v)?,
            },
            body_timeout: seconds("FIREFLY_BODY_TIMEOUT")?,
            header_read_timeout: seconds(HEADERS_TIMEOUT)?,
            keep_alive_timeout: seconds("FIREFLY_KEEP_ALIVE_TIMEOUT")?,
            request_timeout: seconds("FIREFLY_REQUEST_TIMEOUT")?,
            max_connections: var("FIREFLY_MAX_CONNECTIONS")
                .map(|_| number("FIREFLY_MAX_CONNECTIONS", 0))
                .transpose()?,
            shutdown_timeout: seconds("FIREFLY_SHUTDOWN_TIMEOUT")?,
            max_in_flight: var("FIREFLY_MAX_IN_FLIGHT")
                .map(|_| number("FIREFLY_MAX_IN_FLIGHT", 0))
                .transpose()?,
            body_budget: var("FIREFLY_BODY_BUDGET")
                .map(|_| number("FIREFLY_BODY_BUDGET", 0))
                .transpose()?,
            keep_credentials: match var("FIREFLY_KEEP_CREDENTIALS") {
                None => false,
                Some(v) => parse_bool("FIREFLY_KEEP_CREDENTIALS", v)?,
            },
            rate_limit_per_ip: var("FIREFLY_RATE_LIMIT_PER_IP")
                .map(|v| parse_rate("FIREFLY_RATE_LIMIT_PER_IP", v))
                .transpose()?,
            rate_limit_per_provider: var("FIREFLY_RATE_LIMIT_PER_PROVIDER")
                .map(|v| parse_rate("FIREFLY_RATE_LIMIT_PER_PROVIDER", v))
                .transpose()?,
            allow_ips: var("FIREFLY_ALLOW_IPS")
                .map(|v| parse_allow_ips("FIREFLY_ALLOW_IPS", v))
                .transpose()?
                .unwrap_or_default(),
            breaker_threshold: var("FIREFLY_BREAKER_THRESHOLD")
                .map(|v| {
                    v.parse::<u32>().map_err(|_| {
                        bad(
                            "FIREFLY_BREAKER_THRESHOLD",
                            v,
                            "a whole number (0: no breaker)",
                        )
                    })
                })
                .transpose()?,
            breaker_cool_down: seconds("FIREFLY_BREAKER_COOL_DOWN")?,
            spool_dir: var("FIREFLY_SPOOL_DIR").map(PathBuf::from),
            spool_max_bytes: var("FIREFLY_SPOOL_MAX_BYTES")
                .map(|_| number("FIREFLY_SPOOL_MAX_BYTES", 0).map(|n| n as u64))
                .transpose()?,
            spool_broker_timeout: seconds("FIREFLY_SPOOL_BROKER_TIMEOUT")?,
            data_dir: PathBuf::from(var("FIREFLY_DATA_DIR").unwrap_or("./firefly-data")),
            memory_max_bytes: var("FIREFLY_MEMORY_MAX_BYTES")
                .map(|_| number("FIREFLY_MEMORY_MAX_BYTES", 0))
                .transpose()?,
            memory_dead_letters: var("FIREFLY_MEMORY_DEAD_LETTERS")
                .map(|v| {
                    v.parse::<usize>()
                        .map_err(|_| bad("FIREFLY_MEMORY_DEAD_LETTERS", v, "a whole number"))
                })
                .transpose()?,
            worker_pause_after: var("FIREFLY_WORKER_PAUSE_AFTER")
                .map(|v| {
                    v.parse::<u32>().map_err(|_| {
                        bad(
                            "FIREFLY_WORKER_PAUSE_AFTER",
                            v,
                            "a whole number (0: never pause)",
                        )
                    })
                })
                .transpose()?,
            worker_pause_cool_down: seconds("FIREFLY_WORKER_PAUSE_COOL_DOWN")?,
            amqp_depth_interval: var("FIREFLY_AMQP_DEPTH_INTERVAL")
                .map(|v| {
                    if v == "0" {
                        Ok(Duration::ZERO)
                    } else {
                        parse_seconds("FIREFLY_AMQP_DEPTH_INTERVAL", v)
                    }
                })
                .transpose()?,
            ready_cache: var("FIREFLY_READY_CACHE")
                .map(|v| {
                    if v == "0" {
                        Ok(Duration::ZERO)
                    } else {
                        parse_seconds("FIREFLY_READY_CACHE", v)
                    }
                })
                .transpose()?,
            log_format,
            metrics_listen,
        })
    }

    /// Whether ingest takes webhooks for any provider name: no `FIREFLY_PROVIDERS` allowlist
    /// and `FIREFLY_REQUIRE_VERIFICATION` off.
    pub fn accepts_any_provider(&self) -> bool {
        self.providers.is_none() && !self.verifiers.is_required()
    }

    /// The start-up check of an application that ingests webhooks (the gateway): on a broker
    /// transport it refuses to accept any provider name, since every name becomes a durable
    /// destination (a topic, a queue) an anonymous client can create and fill. Set
    /// `FIREFLY_PROVIDERS` (an allowlist), `FIREFLY_REQUIRE_VERIFICATION=true`, or
    /// `FIREFLY_ALLOW_ANY_PROVIDER=true` to accept that. The memory transport is not checked.
    pub fn check_ingest(&self) -> Result<(), EnvError> {
        if self.transport == TransportKind::Memory
            || self.allow_any_provider
            || !self.accepts_any_provider()
        {
            return Ok(());
        }
        Err(EnvError::new(
            "FIREFLY_PROVIDERS",
            format!(
                "not set, so the {} transport would accept webhooks for any provider name; \
                 set FIREFLY_PROVIDERS (e.g. github,stripe) or {}=true, \
                 or {ALLOW_ANY_PROVIDER}=true to accept any",
                self.transport.name(),
                crate::verify::REQUIRE,
            ),
        ))
    }
}

const ALLOW_ANY_PROVIDER: &str = "FIREFLY_ALLOW_ANY_PROVIDER";
const LOG_FORMAT: &str = "FIREFLY_LOG_FORMAT";
const METRICS_LISTEN: &str = "FIREFLY_METRICS_LISTEN";
/// Plural, so it does not read as a `FIREFLY_HEADER_<P>` verifier variable.
const HEADERS_TIMEOUT: &str = "FIREFLY_HEADERS_TIMEOUT";

fn bad(name: &str, value: &str, expected: &str) -> EnvError {
    EnvError::new(
        name,
        format!("invalid value {value:?}: expected {expected}"),
    )
}

/// Comma-separated networks; a bare address is a network of one.
fn parse_nets(var: &str, value: &str) -> Result<Vec<IpNet>, EnvError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| bad(var, s, "comma-separated CIDRs like 10.0.0.0/8"))
        })
        .collect()
}

/// A positive number of seconds, fractions allowed.
/// `N` or `N/BURST`, both positive.
fn parse_rate(var: &str, value: &str) -> Result<RateLimit, EnvError> {
    let expected = "requests per second as N or N/BURST, e.g. 50 or 50/100";
    let (rate, burst) = value.split_once('/').unwrap_or((value, value));
    let positive = |s: &str| s.trim().parse::<NonZeroU32>().ok();
    match (positive(rate), positive(burst)) {
        (Some(per_second), Some(burst)) => Ok(RateLimit { per_second, burst }),
        _ => Err(bad(var, value, expected)),
    }
}

/// `provider:cidr,cidr;provider:cidr`.
fn parse_allow_ips(var: &str, value: &str) -> Result<Vec<(String, Vec<IpNet>)>, EnvError> {
    let expected = "provider:CIDR[,CIDR…] entries separated by `;`, e.g. github:140.82.112.0/20";
    value
        .split(';')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (provider, nets) = entry
                .split_once(':')
                .ok_or_else(|| bad(var, entry, expected))?;
            let provider = firefly_webhook::event::provider_name(provider.trim())
                .ok_or_else(|| bad(var, provider, "a provider name before `:`"))?;
            let nets = parse_nets(var, nets)?;
            if nets.is_empty() {
                return Err(bad(var, entry, expected));
            }
            Ok((provider, nets))
        })
        .collect()
}

fn parse_seconds(var: &str, value: &str) -> Result<Duration, EnvError> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| *s > 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| bad(var, value, "a positive number of seconds like 10 or 2.5"))
}

pub(crate) fn parse_bool(var: &str, value: &str) -> Result<bool, EnvError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(EnvError::new(var, "expected true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, EnvError> {
        Settings::from_vars(vars.iter().copied(), Defaults::GATEWAY)
    }

    #[test]
    fn defaults() {
        let c = settings(&[]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.transport, TransportKind::Memory);
        assert_eq!(c.max_body_bytes, 1024 * 1024);
        assert!(c.providers.is_none());
        assert!(c.worker);
        assert_eq!(c.group, "firefly-gateway");
        assert!(c.destinations.is_none());
        assert!(!c.allow_any_provider);
        assert_eq!(c.body_timeout, None);
        assert_eq!(c.header_read_timeout, None);
        assert_eq!(c.keep_alive_timeout, None);
        assert_eq!(c.request_timeout, None);
        assert_eq!(c.max_connections, None);
        assert_eq!(c.shutdown_timeout, None);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.metrics_listen, None);
    }

    #[test]
    fn observability_settings() {
        let c = settings(&[
            ("FIREFLY_LOG_FORMAT", "JSON"),
            ("FIREFLY_METRICS_LISTEN", "127.0.0.1:9100"),
        ])
        .unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(
            settings(&[("FIREFLY_LOG_FORMAT", "text")])
                .unwrap()
                .log_format,
            LogFormat::Text
        );
        for (var, value) in [
            ("FIREFLY_LOG_FORMAT", "yaml"),
            ("FIREFLY_METRICS_LISTEN", "9100"),
            ("FIREFLY_METRICS_LISTEN", "127.0.0.1:8080"),
        ] {
            assert_eq!(settings(&[(var, value)]).unwrap_err().var(), var, "{value}");
        }
    }

    #[test]
    fn server_limits() {
        let c = settings(&[
            ("FIREFLY_BODY_TIMEOUT", "5"),
            ("FIREFLY_HEADERS_TIMEOUT", "2.5"),
            ("FIREFLY_KEEP_ALIVE_TIMEOUT", "75"),
            ("FIREFLY_REQUEST_TIMEOUT", " 0.25 "),
            ("FIREFLY_MAX_CONNECTIONS", "500"),
            ("FIREFLY_SHUTDOWN_TIMEOUT", "12"),
        ])
        .unwrap();
        assert_eq!(c.body_timeout, Some(Duration::from_secs(5)));
        assert_eq!(c.header_read_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(c.keep_alive_timeout, Some(Duration::from_secs(75)));
        assert_eq!(c.request_timeout, Some(Duration::from_millis(250)));
        assert_eq!(c.max_connections, Some(500));
        assert_eq!(c.shutdown_timeout, Some(Duration::from_secs(12)));
    }

    #[test]
    fn broker_ingest_needs_a_provider_policy() {
        for transport in ["kafka", "amqp"] {
            let err = settings(&[("FIREFLY_TRANSPORT", transport)])
                .unwrap()
                .check_ingest()
                .unwrap_err();
            assert_eq!(err.var(), "FIREFLY_PROVIDERS");
            let message = err.to_string();
            for var in [
                "FIREFLY_PROVIDERS",
                "FIREFLY_REQUIRE_VERIFICATION",
                "FIREFLY_ALLOW_ANY_PROVIDER",
            ] {
                assert!(message.contains(var), "{message}");
            }
            assert!(message.contains(transport), "{message}");

            for policy in [
                ("FIREFLY_PROVIDERS", "github"),
                ("FIREFLY_REQUIRE_VERIFICATION", "true"),
                ("FIREFLY_ALLOW_ANY_PROVIDER", "true"),
            ] {
                let c = settings(&[("FIREFLY_TRANSPORT", transport), policy]).unwrap();
                assert!(c.check_ingest().is_ok(), "{transport} {policy:?}");
            }
            let c = settings(&[
                ("FIREFLY_TRANSPORT", transport),
                ("FIREFLY_ALLOW_ANY_PROVIDER", "false"),
            ])
            .unwrap();
            assert!(c.check_ingest().is_err());
        }
        // The memory transport keeps nothing durable: any provider is fine there.
        let c = settings(&[]).unwrap();
        assert!(c.accepts_any_provider());
        assert!(c.check_ingest().is_ok());
    }

    #[test]
    fn parses_everything() {
        let c = settings(&[
            ("FIREFLY_LISTEN", "0.0.0.0:9000"),
            ("FIREFLY_MAX_BODY_BYTES", "2048"),
            ("FIREFLY_PROVIDERS", "GitHub, stripe"),
            ("FIREFLY_TOPIC_PREFIX", "webhooks."),
            ("FIREFLY_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
            ("FIREFLY_WORKER", "off"),
            ("FIREFLY_WORKER_INLINE", "false"),
        ])
        .unwrap();
        assert!(!c.worker_inline);
        assert!(settings(&[]).unwrap().worker_inline);
        assert_eq!(c.max_body_bytes, 2048);
        assert_eq!(c.providers.unwrap(), ["github", "stripe"]);
        assert_eq!(c.topic_prefix, "webhooks.");
        assert_eq!(c.trusted_proxies.len(), 2);
        assert!(!c.worker);
        assert_eq!(
            c.destinations.unwrap(),
            ["webhooks.github", "webhooks.stripe"]
        );
    }

    #[test]
    fn edge_settings_parse() {
        let c = settings(&[
            ("FIREFLY_MAX_IN_FLIGHT", "10"),
            ("FIREFLY_BODY_BUDGET", "1048576"),
            ("FIREFLY_KEEP_CREDENTIALS", "true"),
            ("FIREFLY_RATE_LIMIT_PER_IP", "50"),
            ("FIREFLY_RATE_LIMIT_PER_PROVIDER", "100/400"),
            (
                "FIREFLY_ALLOW_IPS",
                "github:140.82.112.0/20, 192.30.252.0/22; Stripe:3.18.12.63",
            ),
            ("FIREFLY_BREAKER_THRESHOLD", "0"),
            ("FIREFLY_BREAKER_COOL_DOWN", "2.5"),
            ("FIREFLY_READY_CACHE", "0"),
            ("FIREFLY_AMQP_DEPTH_INTERVAL", "30"),
        ])
        .unwrap();
        assert_eq!(c.max_in_flight, Some(10));
        assert_eq!(c.body_budget, Some(1 << 20));
        assert!(c.keep_credentials);
        let ip = c.rate_limit_per_ip.unwrap();
        assert_eq!((ip.per_second.get(), ip.burst.get()), (50, 50));
        let provider = c.rate_limit_per_provider.unwrap();
        assert_eq!(
            (provider.per_second.get(), provider.burst.get()),
            (100, 400)
        );
        assert_eq!(c.allow_ips.len(), 2);
        assert_eq!(c.allow_ips[0].0, "github");
        assert_eq!(c.allow_ips[0].1.len(), 2);
        assert_eq!(c.allow_ips[1].0, "stripe");
        assert_eq!(c.breaker_threshold, Some(0));
        assert_eq!(c.breaker_cool_down, Some(Duration::from_millis(2500)));
        assert_eq!(c.ready_cache, Some(Duration::ZERO));
        assert_eq!(c.amqp_depth_interval, Some(Duration::from_secs(30)));
        let off = settings(&[("FIREFLY_AMQP_DEPTH_INTERVAL", "0")]).unwrap();
        assert_eq!(off.amqp_depth_interval, Some(Duration::ZERO));
        assert_eq!(settings(&[]).unwrap().amqp_depth_interval, None);
        for (var, value) in [
            ("FIREFLY_MAX_IN_FLIGHT", "0"),
            ("FIREFLY_RATE_LIMIT_PER_IP", "0"),
            ("FIREFLY_RATE_LIMIT_PER_IP", "5/x"),
            ("FIREFLY_ALLOW_IPS", "github"),
            ("FIREFLY_ALLOW_IPS", "github:nope"),
            ("FIREFLY_ALLOW_IPS", "a/b:10.0.0.0/8"),
            ("FIREFLY_BREAKER_THRESHOLD", "-1"),
            ("FIREFLY_READY_CACHE", "soon"),
            ("FIREFLY_AMQP_DEPTH_INTERVAL", "often"),
        ] {
            assert_eq!(
                settings(&[(var, value)]).unwrap_err().var(),
                var,
                "{var}={value}"
            );
        }
    }

    #[test]
    fn spool_settings_parse() {
        let c = settings(&[]).unwrap();
        assert_eq!(c.spool_dir, None);
        assert_eq!(c.data_dir, PathBuf::from("./firefly-data"));
        let c = settings(&[
            ("FIREFLY_TRANSPORT", "disk"),
            ("FIREFLY_DATA_DIR", "/var/lib/firefly"),
            ("FIREFLY_SPOOL_DIR", "/var/spool/firefly"),
            ("FIREFLY_SPOOL_MAX_BYTES", "1048576"),
            ("FIREFLY_SPOOL_BROKER_TIMEOUT", "0.5"),
        ])
        .unwrap();
        assert_eq!(c.transport, TransportKind::Disk);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/firefly"));
        assert_eq!(c.spool_dir, Some(PathBuf::from("/var/spool/firefly")));
        assert_eq!(c.spool_max_bytes, Some(1 << 20));
        assert_eq!(c.spool_broker_timeout, Some(Duration::from_millis(500)));
        assert_eq!(
            settings(&[("FIREFLY_SPOOL_MAX_BYTES", "lots")])
                .unwrap_err()
                .var(),
            "FIREFLY_SPOOL_MAX_BYTES"
        );
    }

    #[test]
    fn application_defaults_apply() {
        let worker = Defaults {
            group: "orders",
            destinations: Some(&["github", "stripe"]),
        };
        let c = Settings::from_vars([("FIREFLY_PROVIDERS", "acme")], worker).unwrap();
        assert_eq!(c.group, "orders");
        assert_eq!(c.destinations.unwrap(), ["github", "stripe"]);
        let c = Settings::from_vars([("FIREFLY_DESTINATIONS", "a,b")], worker).unwrap();
        assert_eq!(c.destinations.unwrap(), ["a", "b"]);
    }

    #[test]
    fn credentials_stay_out_of_debug() {
        let c = settings(&[
            ("FIREFLY_REDIS_URL", "redis://:hunter2@127.0.0.1:6379"),
            ("FIREFLY_VERIFY_GITHUB", "github"),
            ("FIREFLY_SECRET_GITHUB", "hunter3"),
        ])
        .unwrap();
        assert_eq!(
            c.redis_url.as_ref().unwrap().0,
            "redis://:hunter2@127.0.0.1:6379"
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("hunter3"), "{debug}");
    }

    #[test]
    fn errors_name_the_variable() {
        for (var, value) in [
            ("FIREFLY_LISTEN", "nope"),
            ("FIREFLY_TRANSPORT", "carrier-pigeon"),
            ("FIREFLY_MAX_BODY_BYTES", "-1"),
            ("FIREFLY_TRUSTED_PROXIES", "10.0.0.0/99"),
            ("FIREFLY_WORKER", "maybe"),
            ("FIREFLY_ALLOW_ANY_PROVIDER", "sure"),
            ("FIREFLY_BODY_TIMEOUT", "10s"),
            ("FIREFLY_HEADERS_TIMEOUT", "0"),
            ("FIREFLY_KEEP_ALIVE_TIMEOUT", "-1"),
            ("FIREFLY_REQUEST_TIMEOUT", "NaN"),
            ("FIREFLY_REQUEST_TIMEOUT", "inf"),
            ("FIREFLY_MAX_CONNECTIONS", "0"),
            ("FIREFLY_SHUTDOWN_TIMEOUT", "soon"),
        ] {
            let err = settings(&[(var, value)]).unwrap_err();
            assert_eq!(err.var(), var);
            assert!(err.to_string().contains(var), "{err}");
        }
    }
}
