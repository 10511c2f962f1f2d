//! What the gateway test binaries share: a gateway child process on a free port of 127.0.0.1,
//! a plain HTTP/1.1 client, scratch directories, a TCP proxy that a test can cut to simulate a
//! broker outage, a private Kafka-protocol broker, and reading events back from a broker.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Far beyond anything a healthy run needs: waiting this long means the test failed.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// A port of 127.0.0.1 that was free a moment ago (nothing listens there now).
pub(crate) fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap()
}

/// A name no other test (of this or a parallel run) uses: for topics, queues, directories.
pub(crate) fn unique(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{tag}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("firefly-gateway-{}", unique(tag)));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    pub(crate) fn str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A gateway child process, killed (SIGKILL) on drop. Its output goes to a file, shown by
/// [`log`](Self::log) when a test fails.
pub(crate) struct Gateway {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Starts the gateway with only these `FIREFLY_*` variables (and `FIREFLY_LISTEN`), its
    /// output in `log`, and waits until it answers `GET /health/live`.
    pub(crate) fn start(vars: &[(&str, &str)], log: &Path) -> Self {
        let addr = free_port();
        let out = File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .env_clear()
            .env("FIREFLY_LISTEN", addr.to_string())
            .env("RUST_LOG", "warn")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("the gateway binary starts");
        let mut gateway = Self {
            child,
            addr,
            log: log.to_owned(),
        };
        let deadline = Instant::now() + PATIENCE;
        while gateway.get("/health/live").status != 200 {
            if let Some(status) = gateway.child.try_wait().unwrap() {
                panic!("the gateway exited ({status}):\n{}", gateway.log());
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not come up:\n{}",
                gateway.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
        gateway
    }

    /// `kill -9`: no shutdown, no flush, nothing.
    pub(crate) fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// What it printed so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn post(&self, provider: &str, body: &[u8]) -> Answer {
        request(
            self.addr,
            "POST",
            &format!("/api/v1/webhook/{provider}"),
            body,
        )
    }

    pub(crate) fn get(&self, path: &str) -> Answer {
        request(self.addr, "GET", path, b"")
    }

    /// Polls `GET /health/ready` until its body says `"status":"<status>"`; the last answer.
    pub(crate) fn wait_for_ready(&self, status: &str, patience: Duration) -> Answer {
        let want = format!("\"status\":\"{status}\"");
        let deadline = Instant::now() + patience;
        loop {
            let answer = self.get("/health/ready");
            if answer.body_text().starts_with(&format!("{{{want}")) {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "readiness never said {status}; last: {} {}\n{}",
                answer.status,
                answer.body_text(),
                self.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The value of the sample `name{labels}` in `GET /metrics` (`labels` as printed, e.g.
    /// `log="spool"`), if present.
    pub(crate) fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        let answer = self.get("/metrics");
        let series = if labels.is_empty() {
            format!("{name} ")
        } else {
            format!("{name}{{{labels}}} ")
        };
        answer
            .body_text()
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Gateway {
    /// Polls `GET /metrics` until the sample `name{labels}` is `value` (gauges are refreshed
    /// about every second, not at every change).
    pub(crate) fn wait_for_metric(&self, name: &str, labels: &str, value: f64, patience: Duration) {
        let deadline = Instant::now() + patience;
        loop {
            let now = self.metric(name, labels);
            if now == Some(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{{{labels}}} stayed {now:?}, not {value}"
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

/// An HTTP answer: status (0 when nothing answered), head and body.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of header `name` (lowercase), if present.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// One HTTP/1.1 request on its own connection.
pub(crate) fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Answer {
    let nothing = Answer {
        status: 0,
        head: String::new(),
        body: Vec::new(),
    };
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return nothing;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body).is_err() {
        return nothing;
    }
    let mut answer = Vec::new();
    // A reset is the gateway going away mid-answer (a test kills it): no answer.
    if let Err(e) = stream.read_to_end(&mut answer)
        && !matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        )
    {
        panic!("reading the answer: {e}");
    }
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return nothing;
    };
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut body = answer[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Answer { status, head, body }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..line])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line + 2;
        out.extend_from_slice(&rest[start..start + size]);
        rest = &rest[start + size + 2..];
    }
    out
}

/// A TCP proxy on 127.0.0.1 in front of `target`, which a test can cut (every connection
/// closed, new ones closed as soon as they are accepted) and restore: a broker outage without
/// touching the broker. Stops when dropped.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub(crate) fn new(target: SocketAddr) -> Self {
        Self::on(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap(), target)
    }

    /// A proxy on an already bound listener (so the port can be handed out first).
    pub(crate) fn on(listener: TcpListener, target: SocketAddr) -> Self {
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, s, o) = (Arc::clone(&cut), Arc::clone(&stopped), Arc::clone(&open));
        thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut open = o.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Self {
            addr,
            cut,
            stopped,
            open,
        }
    }

    /// Closes every connection through the proxy and refuses new ones until
    /// [`restore`](Self::restore).
    pub(crate) fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    pub(crate) fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.cut();
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies `from` to `to` on a thread until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// The Kafka-protocol broker binary `scripts/kafka-broker` installs.
pub(crate) fn tansu_binary() -> PathBuf {
    let dir = std::env::var_os("KAFKA_BROKER_DIR").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/firefly-webhook/kafka")
        },
        PathBuf::from,
    );
    dir.join("bin/kafka-broker")
}

/// A private Kafka-protocol broker (Tansu, in-memory storage) listening on `listen` and
/// telling clients to connect to `advertised`; killed on drop.
pub(crate) struct Tansu {
    child: Child,
    _cwd: TempDir,
}

impl Tansu {
    pub(crate) fn start(listen: SocketAddr, advertised: SocketAddr) -> Self {
        let cwd = TempDir::new("tansu");
        let log = File::create(cwd.path().join("tansu.log")).unwrap();
        let binary = tansu_binary();
        assert!(
            binary.exists(),
            "{} is missing: run scripts/kafka-broker up",
            binary.display()
        );
        // It reads ./.env and a few variables: a directory and an environment of its own.
        let child = Command::new(binary)
            .current_dir(cwd.path())
            .env_clear()
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://{listen}"),
                "--advertised-listener-url",
                &format!("tcp://{advertised}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the kafka-protocol broker starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(listen).is_err() {
            assert!(
                Instant::now() < deadline,
                "the private broker did not listen"
            );
            thread::sleep(Duration::from_millis(50));
        }
        Self { child, _cwd: cwd }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One event read back from a broker.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) destination: String,
    /// Where the broker keeps order: the Kafka partition (`topic/partition`), else the
    /// destination.
    pub(crate) lane: String,
    pub(crate) body: Vec<u8>,
}

/// Publishes one marker event to each destination through the transport `vars` configure, so
/// that topics and queues exist before a gateway forwards to them. On RabbitMQ the queues are
/// deleted when the returned guard drops.
pub(crate) fn create_destinations(
    vars: &[(&str, &str)],
    destinations: &[String],
    marker: &[u8],
) -> Created {
    let created = Created {
        amqp_url: (var(vars, "FIREFLY_TRANSPORT") == Some("amqp"))
            .then(|| var(vars, "FIREFLY_AMQP_URL").map(str::to_owned))
            .flatten(),
        destinations: destinations.to_vec(),
    };
    runtime().block_on(async {
        let transport = transport(vars).await;
        let publisher = transport.publisher();
        for destination in destinations {
            let event = firefly_webhook::WebhookEvent::new("marker", marker.to_vec());
            tokio::time::timeout(
                Duration::from_secs(60),
                publisher.publish(destination, event),
            )
            .await
            .expect("creating a destination timed out")
            .unwrap();
        }
    });
    created
}

fn var<'a>(vars: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    vars.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

/// Destinations a test created; on RabbitMQ their queues (main, retry, dead-letter) are
/// deleted on drop. Quorum queues hold file descriptors in the shared broker, so a suite that
/// leaves them behind makes it refuse connections sooner or later.
#[must_use = "the destinations are deleted when this drops"]
pub(crate) struct Created {
    amqp_url: Option<String>,
    destinations: Vec<String>,
}

impl Drop for Created {
    fn drop(&mut self) {
        #[cfg(feature = "amqp")]
        if let Some(url) = &self.amqp_url {
            use firefly_webhook_amqp::lapin::{Connection, ConnectionProperties};
            use firefly_webhook_amqp::{AmqpConfig, topology};
            runtime().block_on(async {
                let config = AmqpConfig::from_url(url.clone());
                let connect = Connection::connect(url, ConnectionProperties::default());
                let Ok(Ok(connection)) = tokio::time::timeout(PATIENCE, connect).await else {
                    return;
                };
                if let Ok(channel) = connection.create_channel().await {
                    for destination in &self.destinations {
                        let delete = topology::delete_destination(&channel, &config, destination);
                        let _ = tokio::time::timeout(PATIENCE, delete).await;
                    }
                }
                let _ = connection.close(200, "OK".into()).await;
            });
        }
    }
}

/// Consumes `destinations` through the transport `vars` configure (acking everything) until
/// `done` says so for what was read, or `patience` has passed; returns what was read, in the
/// order each lane delivered it.
pub(crate) fn read_back(
    vars: &[(&str, &str)],
    destinations: &[String],
    patience: Duration,
    mut done: impl FnMut(&[Received]) -> bool,
) -> Vec<Received> {
    runtime().block_on(async {
        let transport = transport(vars).await;
        let mut subscriber = transport.subscriber(destinations).unwrap();
        let deadline = tokio::time::Instant::now() + patience;
        let mut read = Vec::new();
        while !done(&read) {
            let next = tokio::time::timeout_at(deadline, subscriber.next()).await;
            let Ok(Some(delivery)) = next else {
                break;
            };
            let delivery = delivery.unwrap();
            let position = delivery.position.to_string();
            let lane = if delivery.position.transport() == "kafka" {
                position
                    .rsplit_once('@')
                    .map_or(position.clone(), |(lane, _)| lane.to_owned())
            } else {
                delivery.destination.to_string()
            };
            read.push(Received {
                destination: delivery.destination.to_string(),
                lane,
                body: delivery.event.body.to_vec(),
            });
            delivery.ack().await.unwrap();
        }
        read
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn transport(vars: &[(&str, &str)]) -> stack::Transport {
    let settings = stack::Settings::from_vars(vars.iter().copied(), stack::Defaults::GATEWAY)
        .expect("valid settings");
    stack::Transport::connect(&settings)
        .await
        .expect("the broker answers")
}

/// Events of one destination sent by one client in order: each body with its sequence
/// number, and whether the gateway accepted it (202).
#[derive(Debug, Default, Clone)]
pub(crate) struct Sent {
    /// Bodies that got a 202, in the order they were sent.
    pub(crate) accepted: Vec<Vec<u8>>,
    /// How many of them the receipt said were spooled.
    pub(crate) spooled: usize,
    /// Statuses other than 202 (0: no answer).
    pub(crate) refused: HashMap<u16, usize>,
}
