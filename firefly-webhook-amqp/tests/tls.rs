//! `amqps://` against a private RabbitMQ node with a TLS listener and a throwaway CA.
//!
//! The node is this test's own: a unique node name, free loopback ports (its distribution port
//! too, never the shared node's 25672), files in a temporary directory; the shared broker on
//! 5672 is not touched. It is stopped and its directory removed whatever happens (a `Drop`
//! guard). Starting it takes 10-15 s, so this is a test binary of its own. Needs
//! `rabbitmq-server`, `rabbitmqctl` and `openssl` on the `PATH`, and root: the Debian wrapper runs
//! the node as the `rabbitmq` user, which must own its files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firefly_webhook::{Publisher, Subscriber, WebhookEvent};
use firefly_webhook_amqp::{AmqpBroker, AmqpConfig, AmqpTag, Error};

/// The shared node's distribution port.
const SHARED_DIST_PORT: u16 = 25672;

/// A RabbitMQ node with an AMQPS listener, stopped on drop.
struct Node {
    name: String,
    dir: PathBuf,
    child: Child,
    amqps_port: u16,
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port != SHARED_DIST_PORT {
            return port;
        }
    }
}

/// A CA and a certificate for `localhost` / 127.0.0.1 signed by it, valid two days.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| run(dir, "openssl", args);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    ]);
}

impl Node {
    fn start() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("firefly-amqp-tls-{id}"));
        fs::create_dir_all(dir.join("log")).unwrap();
        fs::create_dir_all(dir.join("mnesia")).unwrap();
        make_certificates(&dir);
        let (amqps_port, tcp_port, dist_port) = (free_port(), free_port(), free_port());
        let d = dir.display();
        fs::write(
            dir.join("rabbit.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{tcp_port}\n\
                 listeners.ssl.default = 127.0.0.1:{amqps_port}\n\
                 ssl_options.cacertfile = {d}/ca.crt\n\
                 ssl_options.certfile   = {d}/server.crt\n\
                 ssl_options.keyfile    = {d}/server.key\n\
                 ssl_options.verify     = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n\
                 loopback_users = none\n"
            ),
        )
        .unwrap();
        fs::write(dir.join("plugins"), "[].\n").unwrap();
        let root = Path::new("/");
        run(root, "chmod", &["755", &d.to_string()]);
        run(root, "chown", &["-R", "rabbitmq:rabbitmq", &d.to_string()]);

        let name = format!("tlstest-{}@localhost", &id[..12]);
        let log = fs::File::create(dir.join("stdout.log")).unwrap();
        let child = Command::new("rabbitmq-server")
            .env("RABBITMQ_NODENAME", &name)
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbit.conf"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("plugins"))
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start rabbitmq-server");
        let mut node = Self {
            name,
            dir,
            child,
            amqps_port,
        };
        node.wait_listening(Duration::from_secs(90));
        node
    }

    fn wait_listening(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.amqps_port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("rabbitmq-server exited ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("no amqps listener after {limit:?}:\n{}", self.log());
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("amqps://guest:guest@localhost:{}/%2f", self.amqps_port)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let stopped = Command::new("rabbitmqctl")
            .args(["-n", &self.name, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn config(node: &Node) -> AmqpConfig {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut config = AmqpConfig::from_url(node.url());
    config.exchange = format!("t.{id}.x");
    config.dead_letter_exchange = format!("t.{id}.dlx");
    config.queue_prefix = format!("t.{id}.");
    config.tls_ca_file = Some(node.ca_file());
    config
}

/// Connects, allowing for a node whose listener is up but that is still booting.
async fn connect(config: &AmqpConfig) -> AmqpBroker {
    let mut last = None;
    for _ in 0..20 {
        match AmqpBroker::connect(config.clone()).await {
            Ok(broker) => return broker,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("cannot connect over tls: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs rabbitmq-server; run scripts/test"]
async fn publishes_and_consumes_over_amqps_trusting_a_private_ca() {
    let node = tokio::task::spawn_blocking(Node::start).await.unwrap();
    let config = config(&node);
    let broker = connect(&config).await;
    let mut subscriber = broker.subscriber(["secure"]).unwrap();
    subscriber.connect().await.unwrap();
    let publisher = broker.publisher();

    let event = WebhookEvent::new("secure", r#"{"over":"tls"}"#);
    publisher.publish("secure", event.clone()).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(30), subscriber.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(delivery.event.id, event.id);
    assert_eq!(delivery.event.body, event.body);
    assert!(delivery.position.downcast_ref::<AmqpTag>().is_some());
    delivery.ack().await.unwrap();

    // Without the CA the broker's certificate is not trusted.
    let mut untrusted = config.clone();
    untrusted.tls_ca_file = None;
    untrusted.operation_timeout = Duration::from_secs(2);
    let err = AmqpBroker::connect(untrusted).await.unwrap_err();
    assert!(matches!(err, Error::Amqp(_)), "{err:?}");

    subscriber.close().await;
    drop((publisher, broker));
    tokio::task::spawn_blocking(move || drop(node))
        .await
        .unwrap();
}
