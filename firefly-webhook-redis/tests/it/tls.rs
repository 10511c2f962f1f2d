//! `rediss://` against a private TLS-only redis-server whose certificate comes from a
//! throwaway CA (made with the `openssl` command-line tool), trusted through `tls_ca_file`.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use firefly_webhook::{Claim, IdempotencyStore};
use firefly_webhook_redis::{Error, RedisConfig, RedisStore};

use crate::common::{DONE, LOCK, prefix};

/// A folder with `ca.crt`, `server.crt` and `server.key` for 127.0.0.1 / localhost, removed
/// on drop.
struct TestCa(PathBuf);

impl TestCa {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("redis-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        let steps = [
            "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=firefly-test-ca \
             -keyout ca.key -out ca.crt",
            "req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr",
            "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
             -extfile ext.cnf -out server.crt",
        ];
        for step in steps {
            let args: Vec<&str> = step.split_whitespace().collect();
            let out = Command::new("openssl")
                .args(&args)
                .current_dir(&dir)
                .output()
                .expect("the openssl command-line tool");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Self(dir)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A redis-server that only speaks TLS, on a free loopback port; killed on drop.
struct TlsRedis {
    port: u16,
    child: Child,
}

impl TlsRedis {
    fn start(ca: &TestCa) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--tls-cert-file", &ca.file("server.crt")])
            .args(["--tls-key-file", &ca.file("server.key")])
            .args(["--tls-ca-cert-file", &ca.file("ca.crt")])
            .args(["--tls-auth-clients", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let server = Self { port, child };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("TLS redis-server did not listen on {port}");
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
#[ignore = "needs redis-server (with TLS) and openssl; run scripts/test"]
async fn claims_and_completes_over_tls_trusting_a_private_ca() {
    let ca = TestCa::new();
    let server = TlsRedis::start(&ca);

    // The system trust store does not know the test CA: the handshake fails.
    let untrusted = RedisStore::connect(RedisConfig::from_url(server.url()))
        .await
        .unwrap_err();
    let mut chain = untrusted.to_string();
    let mut source = std::error::Error::source(&untrusted);
    while let Some(err) = source {
        chain = format!("{chain}: {err}");
        source = err.source();
    }
    assert!(chain.contains("certificate verify failed"), "{chain}");

    let mut config = RedisConfig::from_url(server.url());
    config.key_prefix = prefix();
    config.tls_ca_file = Some(ca.0.join("ca.crt"));
    let store = RedisStore::connect(config).await.unwrap();
    let Claim::Acquired(token) = store.claim("tls-event", LOCK).await.unwrap() else {
        panic!("a fresh key is acquired");
    };
    store.complete("tls-event", &token, DONE).await.unwrap();
    assert!(matches!(
        store.claim("tls-event", LOCK).await.unwrap(),
        Claim::Completed
    ));
}

#[test]
fn tls_ca_file_needs_a_rediss_url_and_a_readable_file() {
    let mut config = RedisConfig::from_url("redis://127.0.0.1:6379");
    config.tls_ca_file = Some("/nonexistent/ca.crt".into());
    let err = RedisStore::new(config.clone()).unwrap_err();
    assert!(err.to_string().contains("not rediss://"), "{err}");

    config.url = "rediss://127.0.0.1:6380".into();
    let err = RedisStore::new(config).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/ca.crt"), "{err}");
}
