//! TLS to the brokers (the `ssl` feature). Tansu has no TLS listener (its `--cert`/`--key`
//! options do not put the Kafka listener on TLS), so a private broker advertises the port of a
//! socat TLS terminator in front of it: every connection the client makes, bootstrap and
//! broker, is TLS with a certificate from a throwaway CA.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use firefly_webhook::Publisher;
use firefly_webhook_kafka::{Error, KafkaBroker, KafkaConfig, SecurityProtocol};

use crate::common::{event, unique};
use crate::private::{PrivateBroker, TempDir, free_port, wait_listening};

#[tokio::test]
#[ignore = "needs the kafka broker (scripts/kafka-broker), openssl and socat; run scripts/test"]
async fn publishes_over_tls_trusting_a_private_ca_and_refuses_an_untrusted_server() {
    crate::common::trace();
    let ca = TestCa::new();
    let (plain, tls) = (free_port(), free_port());
    let broker = PrivateBroker::start_advertising(plain, tls);
    let _proxy = TlsProxy::start(tls, plain, &ca);

    let mut config = KafkaConfig::from_brokers(broker.brokers());
    config.security_protocol = SecurityProtocol::Ssl;
    config.partitions = 1;

    // The system trust store does not know the test CA: the handshake fails.
    let untrusted = KafkaBroker::connect(config.clone()).await.unwrap_err();
    assert!(matches!(untrusted, Error::Unreachable(_)), "{untrusted:?}");

    config.ssl_ca_location = Some(ca.ca());
    let broker = KafkaBroker::connect(config).await.unwrap();
    broker
        .publisher()
        .publish(&unique("tls"), event("github"))
        .await
        .unwrap();
    broker.health().await.unwrap();
}

#[tokio::test]
async fn a_tls_client_does_not_talk_to_a_plaintext_port() {
    // A plain TCP listener that accepts and then says nothing a TLS client could accept.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut config = KafkaConfig::from_brokers(format!("127.0.0.1:{port}"));
    config.security_protocol = SecurityProtocol::Ssl;
    config.health_timeout = std::time::Duration::from_millis(1500);
    let err = KafkaBroker::connect(config).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
    server.abort();
}

/// A throwaway CA and a server certificate for `127.0.0.1` and `localhost`, made with the
/// `openssl` command-line tool.
struct TestCa {
    dir: TempDir,
}

impl TestCa {
    fn new() -> Self {
        let dir = TempDir::new("test-ca");
        std::fs::write(
            dir.0.join("ext.cnf"),
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
                .current_dir(&dir.0)
                .output()
                .expect("the openssl command-line tool");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Self { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.0.join("ca.crt")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }
}

/// A TLS terminator (socat) on a free port in front of `127.0.0.1:{target}`, presenting the
/// server certificate of `ca`. Killed on drop.
struct TlsProxy {
    child: Child,
}

impl TlsProxy {
    fn start(port: u16, target: u16, ca: &TestCa) -> Self {
        let path = |p: &Path| p.to_str().unwrap().to_owned();
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
            path(&ca.path("server.crt")),
            path(&ca.path("server.key")),
        );
        let child = Command::new("socat")
            .args([listen, format!("TCP:127.0.0.1:{target}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (scripts/services installs it)");
        wait_listening(port, "socat TLS terminator");
        Self { child }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
