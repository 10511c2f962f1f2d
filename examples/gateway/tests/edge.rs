//! The built gateway binary at its edge: slow clients are cut off, start-up refuses an unsafe
//! configuration, shutdown is bounded. Each test runs its own gateway on a free port of
//! 127.0.0.1 (memory transport) and kills it whatever happens.
//!
//! Deadlines are generous upper bounds; the limits under test are short, so each test takes
//! about a second.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Far beyond any limit under test: waiting this long means the test failed.
const PATIENCE: Duration = Duration::from_secs(10);
const WEBHOOK_HEAD: &str = "POST /api/v1/webhook/github HTTP/1.1\r\nhost: test\r\n\
                            content-type: application/json\r\ncontent-length: 100\r\n\r\n";

/// A gateway child process, killed on drop.
struct Gateway {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Spawns the gateway with only these `FIREFLY_*` variables (and `FIREFLY_LISTEN`).
    fn spawn(vars: &[(&str, &str)], output: Stdio) -> Self {
        let addr = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .env_clear()
            .env("FIREFLY_LISTEN", addr.to_string())
            .env("RUST_LOG", "warn")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(output)
            .spawn()
            .expect("the gateway binary starts");
        Self { child, addr }
    }

    /// Spawns the gateway and waits until it answers `GET /health/live`.
    fn start(vars: &[(&str, &str)]) -> Self {
        let gateway = Self::spawn(vars, Stdio::null());
        gateway.wait_until_live();
        gateway
    }

    fn wait_until_live(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(mut stream) = TcpStream::connect(self.addr) {
                stream.set_read_timeout(Some(PATIENCE)).unwrap();
                let request =
                    "GET /health/live HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n";
                if stream.write_all(request.as_bytes()).is_ok() {
                    let answer = read_until_closed(&mut stream);
                    if answer.starts_with("HTTP/1.1 200") {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "the gateway did not come up");
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream
    }

    /// Waits for the process to exit by itself.
    fn wait_for_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the gateway did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(stderr) = self.child.stderr.as_mut() {
            stderr.read_to_string(&mut text).unwrap();
        }
        text
    }
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap()
}

/// Reads until the gateway closes the connection (a reset counts) and returns what was read.
/// Not closing within the read timeout fails the test.
fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => read.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "the gateway kept the connection open; read so far: {:?}",
                    String::from_utf8_lossy(&read)
                );
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&read).into_owned()
}

/// Writes `piece` every `every` on a clone of `stream` until the connection breaks or the
/// returned flag is set; bounded at 100 writes.
fn trickle(stream: &TcpStream, piece: &'static [u8], every: Duration) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&done);
    let mut writer = stream.try_clone().unwrap();
    thread::spawn(move || {
        for _ in 0..100 {
            if stop.load(Ordering::Relaxed) || writer.write_all(piece).is_err() {
                return;
            }
            thread::sleep(every);
        }
    });
    done
}

#[test]
fn slow_headers_are_cut_off() {
    let gateway = Gateway::start(&[("FIREFLY_HEADERS_TIMEOUT", "0.5")]);
    let mut stream = gateway.connect();
    stream
        .write_all(b"POST /api/v1/webhook/github HTTP/1.1\r\n")
        .unwrap();
    // A header line every 200 ms: each line is progress, but the head never ends.
    let stop = trickle(&stream, b"x-slow: 1\r\n", Duration::from_millis(200));
    let started = Instant::now();
    let answer = read_until_closed(&mut stream);
    stop.store(true, Ordering::Relaxed);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(started.elapsed() < PATIENCE);
}

#[test]
fn slow_bodies_hit_the_body_timeout() {
    let gateway = Gateway::start(&[("FIREFLY_BODY_TIMEOUT", "1")]);
    let mut stream = gateway.connect();
    stream.write_all(WEBHOOK_HEAD.as_bytes()).unwrap();
    let stop = trickle(&stream, b" ", Duration::from_millis(500));
    let answer = read_until_closed(&mut stream);
    stop.store(true, Ordering::Relaxed);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[test]
fn slow_bodies_hit_the_request_timeout() {
    let gateway = Gateway::start(&[
        ("FIREFLY_REQUEST_TIMEOUT", "1"),
        ("FIREFLY_BODY_TIMEOUT", "60"),
    ]);
    let mut stream = gateway.connect();
    stream.write_all(WEBHOOK_HEAD.as_bytes()).unwrap();
    let stop = trickle(&stream, b" ", Duration::from_millis(500));
    let answer = read_until_closed(&mut stream);
    stop.store(true, Ordering::Relaxed);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
}

#[test]
fn a_broker_transport_without_a_provider_policy_is_refused() {
    for transport in ["kafka", "amqp"] {
        let mut gateway = Gateway::spawn(&[("FIREFLY_TRANSPORT", transport)], Stdio::piped());
        let status = gateway.wait_for_exit();
        let stderr = gateway.stderr();
        assert_eq!(status.code(), Some(2), "{transport}: {stderr}");
        for var in [
            "FIREFLY_PROVIDERS",
            "FIREFLY_REQUIRE_VERIFICATION",
            "FIREFLY_ALLOW_ANY_PROVIDER",
        ] {
            assert!(stderr.contains(var), "{transport}: {stderr}");
        }
    }
}

#[test]
fn allow_any_provider_opts_out_of_the_refusal() {
    let mut gateway = Gateway::spawn(
        &[
            ("FIREFLY_TRANSPORT", "kafka"),
            ("FIREFLY_ALLOW_ANY_PROVIDER", "true"),
            ("FIREFLY_WORKER", "off"),
        ],
        Stdio::piped(),
    );
    if cfg!(feature = "kafka") {
        // It gets as far as connecting to the broker, which may or may not be running here.
        thread::sleep(Duration::from_millis(500));
        if let Some(status) = gateway.child.try_wait().unwrap() {
            assert_ne!(status.code(), Some(2), "{}", gateway.stderr());
        }
    } else {
        let status = gateway.wait_for_exit();
        let stderr = gateway.stderr();
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("not available in this build"), "{stderr}");
    }
}

#[cfg(unix)]
#[test]
fn shutdown_is_bounded_with_a_request_in_progress() {
    let mut gateway = Gateway::start(&[
        ("FIREFLY_SHUTDOWN_TIMEOUT", "0.5"),
        ("FIREFLY_REQUEST_TIMEOUT", "60"),
        ("FIREFLY_BODY_TIMEOUT", "60"),
    ]);
    let mut stuck = gateway.connect();
    stuck.write_all(WEBHOOK_HEAD.as_bytes()).unwrap();
    stuck.write_all(b"{").unwrap();
    // Let the request reach the ingest service (if it has not, shutdown is only quicker).
    thread::sleep(Duration::from_millis(300));

    let term = Command::new("kill")
        .args(["-TERM", &gateway.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = gateway.wait_for_exit();
    assert!(status.success(), "{status:?}");
    let answer = read_until_closed(&mut stuck);
    assert!(answer.is_empty(), "{answer}");
}

/// Posts `body` to `provider` with extra header lines and returns the whole answer.
fn post(gateway: &Gateway, provider: &str, extra_headers: &str, body: &str) -> String {
    let mut stream = gateway.connect();
    let request = format!(
        "POST /api/v1/webhook/{provider} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    read_until_closed(&mut stream)
}

fn status(answer: &str) -> &str {
    answer.get(9..12).unwrap_or("")
}

#[test]
fn ip_allowlists_apply_per_provider() {
    let gateway = Gateway::start(&[
        ("FIREFLY_PROVIDERS", "github,stripe,local"),
        ("FIREFLY_ALLOW_IPS", "github:10.0.0.0/8;local:127.0.0.1/32"),
    ]);
    let outside = post(&gateway, "github", "", "{}");
    assert_eq!(status(&outside), "403", "{outside}");
    assert!(outside.contains("\"code\":\"ip_not_allowed\""), "{outside}");
    // The peer is not a trusted proxy: its forwarding header changes nothing.
    let spoofed = post(&gateway, "github", "x-forwarded-for: 10.1.2.3\r\n", "{}");
    assert_eq!(status(&spoofed), "403", "{spoofed}");
    let inside = post(&gateway, "local", "", "{}");
    assert_eq!(status(&inside), "202", "{inside}");
    let unlisted = post(&gateway, "stripe", "", "{}");
    assert_eq!(status(&unlisted), "202", "{unlisted}");
}

#[test]
fn a_trusted_proxy_forwards_the_client_address() {
    let gateway = Gateway::start(&[
        ("FIREFLY_PROVIDERS", "github"),
        ("FIREFLY_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("FIREFLY_ALLOW_IPS", "github:10.0.0.0/8"),
    ]);
    let forwarded = post(&gateway, "github", "x-forwarded-for: 10.1.2.3\r\n", "{}");
    assert_eq!(status(&forwarded), "202", "{forwarded}");
    let direct = post(&gateway, "github", "", "{}");
    assert_eq!(status(&direct), "403", "{direct}");
}

#[test]
fn the_rate_limit_answers_429_with_retry_after() {
    let gateway = Gateway::start(&[("FIREFLY_RATE_LIMIT_PER_IP", "1/2")]);
    let answers: Vec<String> = (0..4).map(|_| post(&gateway, "github", "", "{}")).collect();
    assert_eq!(status(&answers[0]), "202", "{}", answers[0]);
    let limited = answers
        .iter()
        .find(|a| status(a) == "429")
        .expect("a burst of 2 at 1/s limits the third or fourth request");
    assert!(limited.contains("\"code\":\"rate_limited\""), "{limited}");
    assert!(
        limited.to_ascii_lowercase().contains("retry-after: "),
        "{limited}"
    );
}

#[test]
fn reserved_destinations_are_refused() {
    let gateway = Gateway::start(&[]);
    for provider in ["github.dlq", "orders.retry.5s", "__consumer_offsets"] {
        let answer = post(&gateway, provider, "", "{}");
        assert_eq!(status(&answer), "400", "{provider}: {answer}");
        assert!(
            answer.contains("\"code\":\"reserved_destination\""),
            "{answer}"
        );
    }
}

#[test]
fn a_body_larger_than_the_budget_is_shed() {
    // A body budget below the body limit: a declared body that cannot be covered is refused
    // before it is read.
    let gateway = Gateway::start(&[("FIREFLY_BODY_BUDGET", "64")]);
    let answer = post(&gateway, "github", "", &"x".repeat(100));
    assert_eq!(status(&answer), "503", "{answer}");
    assert!(answer.contains("\"code\":\"overloaded\""), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: "),
        "{answer}"
    );
    let small = post(&gateway, "github", "", "{}");
    assert_eq!(status(&small), "202", "{small}");
}

#[test]
fn settings_errors_stop_the_gateway_naming_the_variable() {
    let mut gateway = Gateway::spawn(&[("FIREFLY_ALLOW_IPS", "github")], Stdio::piped());
    let status = gateway.wait_for_exit();
    assert_eq!(status.code(), Some(2));
    assert!(gateway.stderr().contains("FIREFLY_ALLOW_IPS"));
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "firefly-gateway-{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ u128::from(free_port().port())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_disk_transport_accepts_and_keeps_events_across_a_restart() {
    let data = TempDir::new("disk");
    let vars = [
        ("FIREFLY_TRANSPORT", "disk"),
        ("FIREFLY_DATA_DIR", data.path()),
        ("FIREFLY_PROVIDERS", "github"),
        ("FIREFLY_WORKER", "off"),
    ];
    let gateway = Gateway::start(&vars);
    let answer = post(&gateway, "github", "", r#"{"zen":"durable"}"#);
    assert_eq!(status(&answer), "202", "{answer}");
    assert!(answer.contains("\"storage\":\"broker\""), "{answer}");
    drop(gateway);
    // The log is on disk: a new gateway opens it (and would deliver the event to its worker).
    let entries = std::fs::read_dir(&data.0).unwrap().count();
    assert!(entries > 0, "the disk transport wrote nothing");
    let again = Gateway::start(&vars);
    let answer = post(&again, "github", "", "{}");
    assert_eq!(status(&answer), "202", "{answer}");
}

#[cfg(feature = "amqp")]
#[test]
fn with_a_spool_a_broker_outage_is_still_202() {
    let spool = TempDir::new("spool");
    // Nothing listens there: the broker is down from the start.
    let url = format!("amqp://guest:guest@{}/%2f", free_port());
    let gateway = Gateway::start(&[
        ("FIREFLY_TRANSPORT", "amqp"),
        ("FIREFLY_AMQP_URL", &url),
        ("FIREFLY_PROVIDERS", "github"),
        ("FIREFLY_WORKER", "off"),
        ("FIREFLY_SPOOL_DIR", spool.path()),
        ("FIREFLY_SPOOL_BROKER_TIMEOUT", "0.2"),
    ]);
    for _ in 0..3 {
        let answer = post(&gateway, "github", "", r#"{"zen":"spooled"}"#);
        assert_eq!(status(&answer), "202", "{answer}");
        assert!(answer.contains("\"storage\":\"spool\""), "{answer}");
    }
}

/// Resident memory of a process, from /proc (Linux), in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn the_memory_budget_holds_with_the_worker_off() {
    const BUDGET: u64 = 8 << 20;
    let budget = BUDGET.to_string();
    let gateway = Gateway::start(&[
        ("FIREFLY_MEMORY_MAX_BYTES", budget.as_str()),
        ("FIREFLY_WORKER", "off"),
    ]);
    let before = rss_bytes(gateway.child.id());
    let body = "x".repeat(900 * 1024);
    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..40 {
        let answer = post(&gateway, "github", "", &body);
        match status(&answer) {
            "202" => accepted += 1,
            "503" => {
                assert!(
                    answer.to_ascii_lowercase().contains("retry-after: "),
                    "{answer}"
                );
                refused += 1;
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    // 900 KiB bodies in an 8 MiB budget: at most 9 fit; everything after is refused.
    assert!((1..=9).contains(&accepted), "accepted {accepted}");
    assert_eq!(accepted + refused, 40);
    let grown = rss_bytes(gateway.child.id()).saturating_sub(before);
    // The budget plus a fixed margin for buffers of requests in progress and allocator slack.
    assert!(
        grown < BUDGET + (24 << 20),
        "RSS grew by {} MiB",
        grown >> 20
    );
}
