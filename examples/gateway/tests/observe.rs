//! The built gateway binary as a scraper, a log shipper and an API client see it: `/metrics`
//! counts exactly what was answered, with bounded labels; `/openapi.json` describes the
//! endpoints; JSON logs are one object per line, and a request's trace reaches its event.
//! Each test runs its own gateway on a free port of 127.0.0.1 (memory transport).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
// Counts travel as floats in the exposition format and compare exactly.
#![allow(clippy::float_cmp)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(10);
const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

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
    /// Starts the gateway with only these variables (and `FIREFLY_LISTEN`), its log on a pipe
    /// when `logs`, and waits until it is live.
    fn start(vars: &[(&str, &str)], logs: bool) -> Self {
        let addr = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .env_clear()
            .env("FIREFLY_LISTEN", addr.to_string())
            .env("RUST_LOG", "warn")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(if logs { Stdio::piped() } else { Stdio::null() })
            .stderr(Stdio::null())
            .spawn()
            .expect("the gateway binary starts");
        let gateway = Self { child, addr };
        let deadline = Instant::now() + PATIENCE;
        while request(gateway.addr, "GET", "/health/live", "", "").0 != 200 {
            assert!(Instant::now() < deadline, "the gateway did not come up");
            thread::sleep(Duration::from_millis(50));
        }
        gateway
    }

    fn post(&self, provider: &str, headers: &str, body: &str) -> u16 {
        let path = format!("/api/v1/webhook/{provider}");
        request(self.addr, "POST", &path, headers, body).0
    }

    /// Stops the gateway (SIGTERM, so it drains) and returns what it logged.
    #[cfg(unix)]
    fn stop(mut self) -> String {
        let term = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        out
    }
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap()
}

/// One HTTP/1.1 request on its own connection: the status (0 when nothing answered) and the
/// body.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n{headers}\r\n",
        body.len()
    );
    if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    out
}

/// A scrape: `(name, labels)` → value, for every sample.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn scrape(addr: SocketAddr) -> Samples {
    let (status, body) = request(addr, "GET", "/metrics", "", "");
    assert_eq!(status, 200, "{body}");
    let mut samples = Samples::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, labels)) => {
                let labels = labels
                    .trim_end_matches('}')
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').unwrap();
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
        };
        samples.insert((name.to_owned(), labels), value.parse().unwrap());
    }
    samples
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples.get(&(name.to_owned(), labels)).copied()
}

#[test]
fn metrics_count_exactly_what_was_answered() {
    let gateway = Gateway::start(
        &[
            ("FIREFLY_PROVIDERS", "github,stripe"),
            ("FIREFLY_MAX_BODY_BYTES", "64"),
        ],
        false,
    );
    let (accepted, rejected) = (5, 4);
    for i in 0..accepted {
        let provider = if i < 3 { "github" } else { "stripe" };
        assert_eq!(gateway.post(provider, "", "{}"), 202);
    }
    assert_eq!(gateway.post("unlisted", "", "{}"), 404);
    assert_eq!(gateway.post("made-up", "", "{}"), 404);
    assert_eq!(gateway.post("github", "", &"x".repeat(65)), 413);
    assert_eq!(gateway.post("github.dlq", "", "{}"), 400);

    let samples = scrape(gateway.addr);
    let requests = |provider, status, code| {
        value(
            &samples,
            "firefly_ingest_requests_total",
            &[("code", code), ("provider", provider), ("status", status)],
        )
    };
    assert_eq!(requests("github", "202", "accepted"), Some(3.0));
    assert_eq!(requests("stripe", "202", "accepted"), Some(2.0));
    assert_eq!(requests("other", "404", "unknown_provider"), Some(2.0));
    assert_eq!(requests("github", "413", "payload_too_large"), Some(1.0));
    assert_eq!(requests("other", "400", "reserved_destination"), Some(1.0));
    let total: f64 = samples
        .iter()
        .filter(|((name, _), _)| name == "firefly_ingest_requests_total")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, f64::from(accepted + rejected));
    let receipts = |status| {
        value(
            &samples,
            "firefly_ingest_receipts_total",
            &[("status", status)],
        )
    };
    assert_eq!(receipts("accepted"), Some(f64::from(accepted)));
    assert_eq!(receipts("rejected"), Some(f64::from(rejected)));
    assert_eq!(
        value(
            &samples,
            "firefly_ingest_rejected_total",
            &[("code", "unknown_provider"), ("provider", "other")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &samples,
            "firefly_ingest_publish_seconds_bucket",
            &[("le", "+Inf"), ("outcome", "ok"), ("transport", "memory")]
        ),
        Some(f64::from(accepted))
    );
    assert_eq!(
        value(
            &samples,
            "firefly_ingest_body_bytes_count",
            &[("provider", "github")]
        ),
        Some(3.0),
        "the 413 was refused on its Content-Length, unread"
    );
    assert_eq!(
        value(&samples, "firefly_ingest_requests_in_flight", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(&samples, "firefly_ready", &[("check", "memory")]),
        Some(1.0),
        "a scrape runs the readiness checks"
    );
}

#[test]
fn unknown_provider_names_do_not_grow_the_series_without_bound() {
    let gateway = Gateway::start(&[("FIREFLY_WORKER", "off")], false);
    for i in 0..1000 {
        assert_eq!(gateway.post(&format!("made-up-{i}"), "", "{}"), 202);
    }
    let samples = scrape(gateway.addr);
    let series: Vec<_> = samples
        .keys()
        .filter(|(name, _)| name == "firefly_ingest_requests_total")
        .collect();
    assert_eq!(series.len(), 101, "100 names, then `other`");
    assert_eq!(
        value(
            &samples,
            "firefly_ingest_requests_total",
            &[
                ("code", "accepted"),
                ("provider", "other"),
                ("status", "202")
            ]
        ),
        Some(900.0)
    );
}

#[test]
fn metrics_can_move_to_a_listener_of_their_own() {
    let metrics = free_port();
    let gateway = Gateway::start(
        &[("FIREFLY_METRICS_LISTEN", metrics.to_string().as_str())],
        false,
    );
    assert_eq!(gateway.post("github", "", "{}"), 202);
    assert_eq!(request(gateway.addr, "GET", "/metrics", "", "").0, 404);
    let samples = scrape(metrics);
    assert!(
        samples
            .keys()
            .any(|(name, _)| name == "firefly_ingest_requests_total")
    );
}

#[test]
fn the_openapi_document_describes_the_endpoints() {
    let gateway = Gateway::start(&[("FIREFLY_PROVIDERS", "github")], false);
    let (status, body) = request(gateway.addr, "GET", "/openapi.json", "", "");
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let ingest = &doc["paths"]["/api/v1/webhook/{provider}"]["post"];
    assert_eq!(ingest["parameters"][0]["schema"]["enum"][0], "github");
    for status in [
        "202", "400", "401", "403", "404", "405", "408", "413", "429", "500", "503",
    ] {
        assert!(ingest["responses"][status].is_object(), "{status}");
    }
    for path in ["/health/live", "/health/ready", "/metrics", "/openapi.json"] {
        assert!(doc["paths"][path]["get"].is_object(), "{path}");
    }
}

#[cfg(unix)]
#[test]
fn json_logs_are_one_object_per_line_and_carry_the_trace() {
    let gateway = Gateway::start(
        &[
            ("FIREFLY_LOG_FORMAT", "json"),
            ("FIREFLY_PROVIDERS", "github"),
            ("RUST_LOG", "info"),
        ],
        true,
    );
    let traced = format!("traceparent: {PARENT}\r\nx-request-id: req-7\r\n");
    assert_eq!(gateway.post("github", &traced, r#"{"secret":"body"}"#), 202);
    assert_eq!(gateway.post("unlisted", &traced, "{}"), 404);
    // Let the in-process worker log the event before stopping.
    thread::sleep(Duration::from_millis(300));
    let logs = gateway.stop();

    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(!lines.is_empty());
    let rejected: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "webhook rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "{logs}");
    let line = rejected[0];
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["code"], "unknown_provider");
    assert_eq!(line["provider"], "unlisted");
    // The line names the trace itself: the ingest span is `debug`, off at `info`.
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(line["span"].is_null(), "{line}");
    assert!(!logs.contains("secret"), "{logs}");

    // The event went on with the trace: the in-process worker logs it.
    let received = lines
        .iter()
        .find(|l| l["message"] == "webhook received")
        .unwrap_or_else(|| panic!("{logs}"));
    assert_eq!(received["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(received["correlation_id"], "req-7");
}

/// `FIREFLY_WORKER_INLINE`: the in-process worker processes every accepted webhook once,
/// running deliveries in its own task (the default) or a task each.
#[test]
fn the_worker_processes_everything_in_task_or_with_a_task_each() {
    for inline in [None, Some("false"), Some("true")] {
        let mut vars = vec![("FIREFLY_PROVIDERS", "github")];
        if let Some(inline) = inline {
            vars.push(("FIREFLY_WORKER_INLINE", inline));
        }
        let gateway = Gateway::start(&vars, false);
        let events = 40;
        for i in 0..events {
            let headers = format!("X-GitHub-Delivery: d-{i}\r\n");
            assert_eq!(
                gateway.post("github", &headers, &format!("{{\"n\":{i}}}")),
                202
            );
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let samples = scrape(gateway.addr);
            let processed = value(
                &samples,
                "firefly_webhook_processed_total",
                &[("provider", "github")],
            );
            if processed == Some(f64::from(events)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "inline {inline:?}: processed {processed:?} of {events}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    // A value that is not a boolean stops the gateway at start.
    let status = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env_clear()
        .env("FIREFLY_LISTEN", free_port().to_string())
        .env("FIREFLY_WORKER_INLINE", "sometimes")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
}
