//! Helpers: unique key prefixes, cleanup, private redis-server instances.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use firefly_webhook_redis::redis::{self, AsyncCommands};
use firefly_webhook_redis::{RedisConfig, RedisStore};
use sha2::{Digest, Sha256};

pub(crate) const URL: &str = "redis://127.0.0.1:6379";
pub(crate) const LOCK: Duration = Duration::from_secs(300);
pub(crate) const DONE: Duration = Duration::from_secs(86_400);

/// A key prefix no other test uses.
pub(crate) fn prefix() -> String {
    format!("firefly-test:{}", uuid::Uuid::new_v4().simple())
}

pub(crate) fn store(prefix: &str) -> RedisStore {
    let mut config = RedisConfig::from_url(URL);
    prefix.clone_into(&mut config.key_prefix);
    RedisStore::new(config).unwrap()
}

pub(crate) async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The documented key for `kind` (`processing`, `processed`, `failures`) of `key`.
pub(crate) fn key(prefix: &str, kind: &str, key: &str) -> String {
    if key.is_empty() || key.len() > 200 || key.contains(['{', '}']) || key.starts_with("sha256:") {
        format!(
            "{prefix}:{kind}:{{sha256:{:x}}}",
            Sha256::digest(key.as_bytes())
        )
    } else {
        format!("{prefix}:{kind}:{{{key}}}")
    }
}

/// Deletes every key under `prefix`.
pub(crate) async fn cleanup(prefix: &str) {
    let mut conn = connection(URL).await;
    let keys: Vec<String> = {
        let mut iter = conn
            .scan_match::<_, String>(format!("{prefix}:*"))
            .await
            .unwrap();
        let mut keys = Vec::new();
        while let Some(k) = futures_next(&mut iter).await {
            keys.push(k);
        }
        keys
    };
    if !keys.is_empty() {
        let _: () = conn.del(keys).await.unwrap();
    }
}

async fn futures_next(iter: &mut redis::AsyncIter<'_, String>) -> Option<String> {
    iter.next_item().await.map(Result::unwrap)
}

/// Waits (bounded) until `key` no longer exists; true if it went.
pub(crate) async fn wait_gone(url: &str, key: &str) -> bool {
    let mut conn = connection(url).await;
    for _ in 0..200 {
        let exists: bool = conn.exists(key).await.unwrap();
        if !exists {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A redis-server of our own on a free loopback port, killed on drop.
pub(crate) struct PrivateRedis {
    pub(crate) port: u16,
    extra: Vec<String>,
    child: Option<Child>,
}

impl PrivateRedis {
    pub(crate) async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a server with extra `redis-server` arguments.
    pub(crate) async fn start_with(extra: &[&str]) -> Self {
        let port = free_port(false);
        let mut this = Self {
            port,
            extra: extra.iter().map(|&a| a.to_owned()).collect(),
            child: None,
        };
        this.restart().await;
        this
    }

    /// Starts a cluster-enabled node (its files in `dir`), its bus port (+10000) free too.
    pub(crate) async fn cluster_node(dir: &std::path::Path) -> Self {
        let port = free_port(true);
        let dir = dir.join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let mut this = Self {
            port,
            extra: ["--cluster-enabled", "yes", "--dir", dir.to_str().unwrap()]
                .map(str::to_owned)
                .to_vec(),
            child: None,
        };
        this.restart().await;
        this
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and waits until it answers.
    pub(crate) async fn restart(&mut self) {
        let binary = which_redis_server();
        let child = Command::new(binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        for _ in 0..100 {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private redis-server on port {} did not start", self.port);
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port; for a cluster node, one whose bus port (+10000) is free as well.
fn free_port(cluster: bool) -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if !cluster {
            return port;
        }
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn which_redis_server() -> String {
    let out = Command::new("which").arg("redis-server").output().unwrap();
    let path = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(!path.is_empty(), "redis-server is not on PATH");
    path
}
