//! Gateway settings from `FIREFLY_*` environment variables.

use std::fmt;
use std::net::SocketAddr;

use ipnet::IpNet;

/// Which broker the gateway publishes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// The embedded in-memory broker.
    Memory,
    /// Kafka (`--features kafka`).
    Kafka,
    /// RabbitMQ (`--features amqp`).
    Amqp,
}

/// Everything the gateway reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub transport: TransportKind,
    pub max_body_bytes: usize,
    pub providers: Option<Vec<String>>,
    pub topic_prefix: String,
    pub trusted_proxies: Vec<IpNet>,
    pub worker: bool,
    pub queue_capacity: usize,
    pub concurrency: usize,
    pub redis_url: Option<Redacted>,
    /// What the in-process worker consumes on a broker: `FIREFLY_DESTINATIONS`, else the
    /// allowlisted providers with the topic prefix.
    pub destinations: Option<Vec<String>>,
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub kafka_brokers: String,
    #[cfg_attr(not(feature = "amqp"), allow(dead_code))]
    pub amqp_url: Redacted,
    /// Consumer group (Kafka) of the in-process worker.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub group: String,
}

/// A value that may hold credentials (a URL with a password): `Debug` hides it.
#[derive(Clone)]
pub struct Redacted(pub String);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A variable with an unusable value.
#[derive(Debug)]
pub struct ConfigError {
    var: &'static str,
    value: String,
    expected: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {}={:?}: expected {}",
            self.var, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `get` (testable without touching the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &'static str| get(name).filter(|v| !v.trim().is_empty());
        let bad = |var: &'static str, value: &str, expected: &'static str| ConfigError {
            var,
            value: value.to_owned(),
            expected,
        };
        let parse_num = |name: &'static str, default: usize| -> Result<usize, ConfigError> {
            var(name).map_or(Ok(default), |v| {
                v.trim()
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(name, &v, "a positive whole number"))
            })
        };

        let listen = match var("FIREFLY_LISTEN") {
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| bad("FIREFLY_LISTEN", &v, "an address like 127.0.0.1:8080"))?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let transport = match var("FIREFLY_TRANSPORT").as_deref().map(str::trim) {
            None | Some("memory") => TransportKind::Memory,
            Some("kafka") => TransportKind::Kafka,
            Some("amqp" | "rabbitmq") => TransportKind::Amqp,
            Some(other) => return Err(bad("FIREFLY_TRANSPORT", other, "memory, kafka or amqp")),
        };
        let list = |name: &'static str| {
            var(name).map(|v| {
                v.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>()
            })
        };
        let providers = list("FIREFLY_PROVIDERS").map(|ps| {
            ps.iter()
                .map(|p| p.to_ascii_lowercase())
                .collect::<Vec<_>>()
        });
        let trusted_proxies = match var("FIREFLY_TRUSTED_PROXIES") {
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpNet>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                        .map_err(|_| {
                            bad(
                                "FIREFLY_TRUSTED_PROXIES",
                                s,
                                "comma-separated CIDRs like 10.0.0.0/8",
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let worker = match var("FIREFLY_WORKER").as_deref().map(str::trim) {
            None | Some("on" | "true" | "1") => true,
            Some("off" | "false" | "0") => false,
            Some(other) => return Err(bad("FIREFLY_WORKER", other, "on or off")),
        };
        Ok(Self {
            listen,
            transport,
            max_body_bytes: parse_num("FIREFLY_MAX_BODY_BYTES", 1024 * 1024)?,
            topic_prefix: var("FIREFLY_TOPIC_PREFIX").unwrap_or_default(),
            trusted_proxies,
            worker,
            queue_capacity: parse_num("FIREFLY_QUEUE_CAPACITY", 10_000)?,
            concurrency: parse_num("FIREFLY_WORKER_CONCURRENCY", 64)?,
            redis_url: var("FIREFLY_REDIS_URL").map(Redacted),
            destinations: list("FIREFLY_DESTINATIONS").or_else(|| {
                let prefix = var("FIREFLY_TOPIC_PREFIX").unwrap_or_default();
                providers
                    .as_ref()
                    .map(|ps| ps.iter().map(|p| format!("{prefix}{p}")).collect())
            }),
            providers,
            kafka_brokers: var("FIREFLY_KAFKA_BROKERS")
                .unwrap_or_else(|| "127.0.0.1:9092".to_owned()),
            amqp_url: Redacted(
                var("FIREFLY_AMQP_URL")
                    .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()),
            ),
            group: var("FIREFLY_GROUP").unwrap_or_else(|| "firefly-gateway".to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.transport, TransportKind::Memory);
        assert_eq!(c.max_body_bytes, 1024 * 1024);
        assert!(c.providers.is_none());
        assert!(c.worker);
    }

    #[test]
    fn parses_everything() {
        let c = config(&[
            ("FIREFLY_LISTEN", "0.0.0.0:9000"),
            ("FIREFLY_MAX_BODY_BYTES", "2048"),
            ("FIREFLY_PROVIDERS", "GitHub, stripe"),
            ("FIREFLY_TOPIC_PREFIX", "webhooks."),
            ("FIREFLY_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
            ("FIREFLY_WORKER", "off"),
        ])
        .unwrap();
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
    fn credentials_stay_out_of_debug() {
        let c = config(&[("FIREFLY_REDIS_URL", "redis://:hunter2@127.0.0.1:6379")]).unwrap();
        assert_eq!(
            c.redis_url.as_ref().unwrap().0,
            "redis://:hunter2@127.0.0.1:6379"
        );
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn errors_name_the_variable() {
        for (var, value) in [
            ("FIREFLY_LISTEN", "nope"),
            ("FIREFLY_TRANSPORT", "carrier-pigeon"),
            ("FIREFLY_MAX_BODY_BYTES", "-1"),
            ("FIREFLY_TRUSTED_PROXIES", "10.0.0.0/99"),
            ("FIREFLY_WORKER", "maybe"),
        ] {
            let err = config(&[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(var), "{err}");
        }
    }
}
