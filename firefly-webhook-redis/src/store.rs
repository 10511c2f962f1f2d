//! [`RedisStore`]: the [`IdempotencyStore`] on Redis.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_redis::redis::{
    self, AsyncConnectionConfig, FromRedisValue, IntoConnectionInfo, RedisResult, ToRedisArgs,
};
use deadpool_redis::{Manager, Pool, Runtime};
use firefly_webhook::{Claim, FencingToken, IdempotencyStore, StoreError, async_trait, metric};

use crate::config::{FailurePolicy, RedisConfig, redact_url};
use crate::error::{Error, Result};
use crate::keys::{Keys, millis};
use crate::lanes::{Conn, Lanes};
use crate::scripts::{Lua, Scripts};

/// The token [`FailurePolicy::FailOpen`] hands out when Redis is unreachable. Real tokens are
/// 32 hex digits, so they never look like this.
const FAIL_OPEN_TOKEN: &str = "firefly-webhook-redis:fail-open";

/// Longest error text kept by `record_failure`; longer ones are cut at a char boundary.
const MAX_ERROR_LEN: usize = 1024;

/// An [`IdempotencyStore`] on Redis, shared by every worker process that uses the same Redis
/// and key prefix. Cheap to clone.
///
/// Each call is one Lua script (one round trip), so a processed event costs two: `claim` and
/// `complete`, plus one `renew` per third of the lock TTL that processing takes. See the [crate docs](crate) for the key layout and the failure policy.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    prefix: String,
    policy: FailurePolicy,
    scripts: Scripts,
    /// The target, password redacted, for `Debug`.
    target: String,
}

enum Backend {
    Single {
        pool: Pool,
        lanes: Lanes<deadpool_redis::Connection>,
    },
    #[cfg(feature = "cluster")]
    Cluster {
        pool: deadpool_redis::cluster::Pool,
        lanes: Lanes<deadpool_redis::cluster::Connection>,
        /// The cluster client retries internally; this bounds the whole call.
        timeout: Duration,
    },
}

impl RedisStore {
    /// A store built from `config`, without I/O: it builds the connection pool, and the first
    /// call opens the connections. Use [`connect`](Self::connect) to check Redis at start-up
    /// instead.
    ///
    /// Fails only on a configuration that cannot work (see [`RedisConfig`]). The one local
    /// I/O is reading [`tls_ca_file`](RedisConfig::tls_ca_file) when it is set.
    pub fn new(config: RedisConfig) -> Result<Self> {
        config.validate()?;
        let connection = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout));
        let manager = Manager::new_with_config(connection_info(&config)?, connection)
            .map_err(|err| Error::Config(format!("bad redis url: {err}")))?;
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.command_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(Error::Pool)?;
        let backend = Backend::Single {
            pool,
            lanes: Lanes::new(config.pool_size),
        };
        Ok(Self::with_backend(backend, redact_url(&config.url), config))
    }

    /// [`new`](Self::new), then a `PING` that must succeed within
    /// [`connect_timeout`](RedisConfig::connect_timeout): a store that answers, or an error at
    /// start-up rather than at the first webhook.
    ///
    /// The failure policy does not apply here: an unreachable Redis is an error even under
    /// [`FailurePolicy::FailOpen`].
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let limit = config.connect_timeout;
        let store = Self::new(config)?;
        match tokio::time::timeout(limit, store.ping()).await {
            Ok(pong) => pong.map(|()| store),
            Err(elapsed) => Err(Error::Unavailable(Box::new(elapsed))),
        }
    }

    /// [`new`](Self::new) with the default [`RedisConfig`] for `url` (`redis://…`,
    /// `rediss://…`): lazy, no I/O.
    pub fn from_url(url: impl Into<String>) -> Result<Self> {
        Self::new(RedisConfig::from_url(url))
    }

    /// A store on a Redis Cluster, discovered from any of `nodes` (`redis://host:port` URLs).
    /// `config.url` is not used; the other settings apply as for [`new`](Self::new), and like
    /// it this does no I/O (call [`ping`](Self::ping) to check the cluster).
    ///
    /// Every script touches the keys of one event only, which share a hash tag and so a slot.
    #[cfg(feature = "cluster")]
    pub fn cluster<I, S>(nodes: I, config: RedisConfig) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        config.validate()?;
        if config.tls_ca_file.is_some() {
            // The driver takes a custom CA for a cluster only with rustls.
            return Err(Error::Config(
                "tls_ca_file is not supported for a redis cluster; add the CA to the system \
                 trust store"
                    .into(),
            ));
        }
        let nodes: Vec<String> = nodes.into_iter().map(Into::into).collect();
        if nodes.is_empty() {
            return Err(Error::Config("a cluster needs at least one node".into()));
        }
        let manager = deadpool_redis::cluster::Manager::new(
            nodes.iter().map(String::as_str).collect(),
            false,
        )
        .map_err(|err| Error::Config(format!("bad redis cluster url: {err}")))?;
        let pool = deadpool_redis::cluster::Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.command_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(Error::Pool)?;
        let target = format!(
            "cluster[{}]",
            nodes
                .iter()
                .map(|n| redact_url(n))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let backend = Backend::Cluster {
            pool,
            lanes: Lanes::new(config.pool_size),
            timeout: config.command_timeout,
        };
        Ok(Self::with_backend(backend, target, config))
    }

    fn with_backend(backend: Backend, target: String, config: RedisConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                prefix: config.key_prefix,
                policy: config.failure_policy,
                scripts: Scripts::new(),
                target,
            }),
        }
    }

    /// The key prefix in use.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The failure policy in use.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.inner.policy
    }

    /// The failure count and last error recorded for `key`, if any and not expired.
    pub async fn failures(&self, key: &str) -> Result<Option<(u64, String)>> {
        let keys = Keys::new(&self.inner.prefix, key);
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(keys.failures()).arg("count").arg("last_error");
        let (count, error): (Option<u64>, Option<String>) = self
            .inner
            .exec("failures", |mut conn| async move {
                cmd.query_async(&mut conn).await
            })
            .await?;
        Ok(count.map(|count| (count, error.unwrap_or_default())))
    }

    /// `PING`: whether Redis answers, for readiness probes. Ignores the failure policy.
    pub async fn ping(&self) -> Result<()> {
        let pong: String = self
            .inner
            .exec("ping", |mut conn| async move {
                redis::cmd("PING").query_async(&mut conn).await
            })
            .await?;
        match pong.as_str() {
            "PONG" => Ok(()),
            other => Err(Error::UnexpectedReply(format!("ping answered {other:?}"))),
        }
    }

    /// Whether `err` is to be swallowed under the fail-open policy (logged here).
    fn fails_open(&self, op: &str, key: &str, err: &Error) -> bool {
        let open = self.inner.policy == FailurePolicy::FailOpen && err.is_unavailable();
        if open {
            tracing::warn!(
                op,
                key,
                error = err as &dyn std::error::Error,
                "redis unreachable, failing open: duplicates may be processed"
            );
        }
        open
    }

    fn is_fail_open_token(&self, token: &FencingToken) -> bool {
        self.inner.policy == FailurePolicy::FailOpen && token.as_str() == FAIL_OPEN_TOKEN
    }
}

impl Inner {
    /// Runs `call` (the operation `op`) on a lane connection, turning failures into the crate
    /// error, and reports its round trip in [`metric::STORE_SECONDS`] (and a failure in
    /// [`metric::STORE_ERRORS_TOTAL`]).
    async fn exec<T, F, Fut>(&self, op: &'static str, call: F) -> Result<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let started = Instant::now();
        let result = self.call(call).await;
        observe(op, started, &result);
        result
    }

    async fn call<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        match &self.backend {
            Backend::Single { pool, lanes } => {
                let (ticket, conn) = lanes
                    .checkout(|| async { pool.get().await.map_err(Error::from_pool) })
                    .await?;
                lanes.settle(ticket, call(Conn::Single(conn)).await)
            }
            #[cfg(feature = "cluster")]
            Backend::Cluster {
                pool,
                lanes,
                timeout,
            } => {
                let (ticket, conn) = lanes
                    .checkout(|| async { pool.get().await.map_err(Error::from_pool) })
                    .await?;
                match tokio::time::timeout(*timeout, call(Conn::Cluster(conn))).await {
                    Ok(reply) => lanes.settle(ticket, reply),
                    Err(elapsed) => {
                        lanes.discard(ticket);
                        Err(Error::Unavailable(Box::new(elapsed)))
                    }
                }
            }
        }
    }

    async fn run<K, A, T>(&self, op: &'static str, script: &Lua, keys: &[K], args: A) -> Result<T>
    where
        K: ToRedisArgs + Sync,
        A: ToRedisArgs + Send,
        T: FromRedisValue,
    {
        self.exec(op, |conn| script.run(conn, keys, args)).await
    }

    fn pool_size(&self) -> usize {
        match &self.backend {
            Backend::Single { lanes, .. } => lanes.len(),
            #[cfg(feature = "cluster")]
            Backend::Cluster { lanes, .. } => lanes.len(),
        }
    }
}

/// One histogram sample per operation, and one count per failure: `ok`, `unavailable` (no
/// answer: connection, timeout, pool) or `error` (Redis answered with an error).
fn observe<T>(op: &'static str, started: Instant, result: &Result<T>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(err) if err.is_unavailable() => "unavailable",
        Err(_) => "error",
    };
    metrics::histogram!(metric::STORE_SECONDS, metric::OP => op, metric::OUTCOME => outcome)
        .record(started.elapsed());
    if result.is_err() {
        metrics::counter!(metric::STORE_ERRORS_TOTAL, metric::OP => op, metric::OUTCOME => outcome)
            .increment(1);
    }
}

fn fenced_unless(ok: i64) -> Result<(), StoreError> {
    match ok {
        1 => Ok(()),
        0 => Err(StoreError::Fenced),
        other => Err(Error::UnexpectedReply(format!("script answered {other}")).into()),
    }
}

fn claim_from(reply: &[i64], token: FencingToken) -> Result<Claim> {
    match reply {
        [2] => Ok(Claim::Completed),
        [1] => Ok(Claim::Acquired(token)),
        [0, pttl] => Ok(Claim::InProgress {
            retry_after: u64::try_from(*pttl)
                .ok()
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
        }),
        other => Err(Error::UnexpectedReply(format!("claim answered {other:?}"))),
    }
}

fn truncate(error: &str) -> &str {
    if error.len() <= MAX_ERROR_LEN {
        return error;
    }
    let mut end = MAX_ERROR_LEN;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    &error[..end]
}

#[async_trait]
impl IdempotencyStore for RedisStore {
    async fn claim(&self, key: &str, lock_ttl: Duration) -> Result<Claim, StoreError> {
        let keys = Keys::new(&self.inner.prefix, key);
        let token = FencingToken::random();
        let reply: Result<Vec<i64>> = self
            .inner
            .run(
                "claim",
                &self.inner.scripts.claim,
                &[keys.processing(), keys.processed()],
                (token.as_str(), millis(lock_ttl)),
            )
            .await;
        match reply.and_then(|reply| claim_from(&reply, token)) {
            Ok(claim) => Ok(claim),
            Err(err) if self.fails_open("claim", key, &err) => {
                Ok(Claim::Acquired(FencingToken::new(FAIL_OPEN_TOKEN)))
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn renew(
        &self,
        key: &str,
        token: &FencingToken,
        lock_ttl: Duration,
    ) -> Result<(), StoreError> {
        if self.is_fail_open_token(token) {
            // A fail-open claim holds no lock: there is nothing to renew, and nothing to lose.
            return Ok(());
        }
        let keys = Keys::new(&self.inner.prefix, key);
        let reply: Result<i64> = self
            .inner
            .run(
                "renew",
                &self.inner.scripts.renew,
                &[keys.processing()],
                (token.as_str(), millis(lock_ttl)),
            )
            .await;
        match reply {
            Ok(ok) => fenced_unless(ok),
            // Failing closed, the layer retries until the lock's TTL has run out and then stops
            // the processor; failing open, processing goes on, as a fail-open claim would.
            Err(err) if self.fails_open("renew", key, &err) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    async fn complete(
        &self,
        key: &str,
        token: &FencingToken,
        processed_ttl: Duration,
    ) -> Result<(), StoreError> {
        if self.is_fail_open_token(token) {
            tracing::warn!(
                key,
                "completing a fail-open claim: no processed marker is written"
            );
            return Ok(());
        }
        let keys = Keys::new(&self.inner.prefix, key);
        let reply: Result<i64> = self
            .inner
            .run(
                "complete",
                &self.inner.scripts.complete,
                &[keys.processing(), keys.processed()],
                (token.as_str(), millis(processed_ttl)),
            )
            .await;
        match reply {
            Ok(ok) => fenced_unless(ok),
            Err(err) if self.fails_open("complete", key, &err) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    async fn release(&self, key: &str, token: &FencingToken) -> Result<(), StoreError> {
        if self.is_fail_open_token(token) {
            tracing::warn!(key, "releasing a fail-open claim: nothing to do");
            return Ok(());
        }
        let keys = Keys::new(&self.inner.prefix, key);
        let reply: Result<i64> = self
            .inner
            .run(
                "release",
                &self.inner.scripts.release,
                &[keys.processing()],
                token.as_str(),
            )
            .await;
        match reply {
            Ok(ok) => fenced_unless(ok),
            Err(err) if self.fails_open("release", key, &err) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    async fn record_failure(
        &self,
        key: &str,
        error: &str,
        ttl: Duration,
    ) -> Result<u64, StoreError> {
        let keys = Keys::new(&self.inner.prefix, key);
        let count: u64 = self
            .inner
            .run(
                "record_failure",
                &self.inner.scripts.record_failure,
                &[keys.failures()],
                (truncate(error), millis(ttl)),
            )
            .await?;
        Ok(count)
    }

    async fn health(&self) -> Result<(), StoreError> {
        Ok(self.ping().await?)
    }
}

/// Where and how to connect: the URL, and [`RedisConfig::tls_ca_file`] as the trusted root
/// when it is set.
fn connection_info(config: &RedisConfig) -> Result<redis::ConnectionInfo> {
    if cfg!(not(feature = "tls-native-tls")) && config.url.starts_with("rediss://") {
        // The driver would only say that its TLS feature is off.
        return Err(Error::Config(
            "rediss:// urls need the `tls-native-tls` feature".into(),
        ));
    }
    // The driver's URL errors do not repeat the URL, so no password leaks through them.
    let info = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(|err| Error::Config(format!("bad redis url: {err}")))?;
    match &config.tls_ca_file {
        None => Ok(info),
        Some(ca) => trusting(info, ca),
    }
}

#[cfg(feature = "tls-native-tls")]
fn trusting(info: redis::ConnectionInfo, ca: &std::path::Path) -> Result<redis::ConnectionInfo> {
    if !matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
        return Err(Error::Config(
            "tls_ca_file is set but the url is not rediss://".into(),
        ));
    }
    let pem = std::fs::read(ca)
        .map_err(|err| Error::Config(format!("cannot read tls_ca_file {}: {err}", ca.display())))?;
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    let client = redis::Client::build_with_tls(info, certificates)
        .map_err(|err| Error::Config(format!("unusable tls_ca_file {}: {err}", ca.display())))?;
    Ok(client.get_connection_info().clone())
}

#[cfg(not(feature = "tls-native-tls"))]
fn trusting(_: redis::ConnectionInfo, _: &std::path::Path) -> Result<redis::ConnectionInfo> {
    Err(Error::Config(
        "tls_ca_file needs the `tls-native-tls` feature".into(),
    ))
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.inner.target)
            .field("pool_size", &self.inner.pool_size())
            .field("key_prefix", &self.inner.prefix)
            .field("failure_policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(feature = "tls-native-tls"))]
    #[test]
    fn a_ca_file_needs_the_tls_feature() {
        let mut config = RedisConfig::from_url("rediss://127.0.0.1:6380");
        config.tls_ca_file = Some("ca.crt".into());
        let err = RedisStore::new(config).unwrap_err();
        assert!(err.to_string().contains("tls-native-tls"), "{err}");
    }

    #[test]
    fn claim_replies() {
        let t = FencingToken::new("t");
        assert_eq!(claim_from(&[2], t.clone()).unwrap(), Claim::Completed);
        assert_eq!(
            claim_from(&[1], t.clone()).unwrap(),
            Claim::Acquired(t.clone())
        );
        assert_eq!(
            claim_from(&[0, 1500], t.clone()).unwrap(),
            Claim::InProgress {
                retry_after: Some(Duration::from_millis(1500))
            }
        );
        assert_eq!(
            claim_from(&[0, -1], t.clone()).unwrap(),
            Claim::InProgress { retry_after: None }
        );
        assert!(matches!(
            claim_from(&[7], t),
            Err(Error::UnexpectedReply(_))
        ));
    }

    #[test]
    fn long_errors_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_ERROR_LEN);
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_ERROR_LEN && cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate("short"), "short");
    }

    #[test]
    fn debug_hides_the_password() {
        let store = RedisStore::from_url("redis://:hunter2@127.0.0.1:1").unwrap();
        assert!(!format!("{store:?}").contains("hunter2"));
    }

    #[test]
    fn bad_config_is_refused() {
        assert!(matches!(
            RedisStore::from_url("nope://x"),
            Err(Error::Config(_))
        ));
        let config = RedisConfig {
            key_prefix: "a}".into(),
            ..RedisConfig::default()
        };
        assert!(matches!(RedisStore::new(config), Err(Error::Config(_))));
    }

    #[tokio::test]
    async fn fail_open_tokens_are_no_ops() {
        let store = RedisStore::new(RedisConfig {
            url: "redis://127.0.0.1:1".into(),
            failure_policy: FailurePolicy::FailOpen,
            ..RedisConfig::default()
        })
        .unwrap();
        let Claim::Acquired(token) = store.claim("k", Duration::from_secs(1)).await.unwrap() else {
            panic!("fail-open claim must acquire");
        };
        assert_eq!(token.as_str(), FAIL_OPEN_TOKEN);
        store
            .complete("k", &token, Duration::from_secs(1))
            .await
            .unwrap();
        store.release("k", &token).await.unwrap();
        store
            .renew("k", &token, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(matches!(
            store.record_failure("k", "e", Duration::from_secs(1)).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(store.health().await.is_err());
    }

    #[tokio::test]
    async fn connect_fails_on_an_unreachable_redis_even_when_failing_open() {
        let mut config = RedisConfig::from_url("redis://127.0.0.1:1");
        config.failure_policy = FailurePolicy::FailOpen;
        let err = RedisStore::connect(config).await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(matches!(
            RedisStore::connect(RedisConfig::from_url("nope://x")).await,
            Err(Error::Config(_))
        ));
    }

    #[tokio::test]
    async fn fail_closed_reports_unavailable() {
        let store = RedisStore::from_url("redis://127.0.0.1:1").unwrap();
        assert!(matches!(
            store.claim("k", Duration::from_secs(1)).await,
            Err(StoreError::Unavailable(_))
        ));
    }
}
