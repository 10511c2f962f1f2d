//! The built gateway binary with a spool (`FIREFLY_SPOOL_DIR`) in front of a real broker:
//! `kill -9` while it spools loses no accepted event, a broker outage under load is answered
//! with 202s and drains afterwards, a full spool answers 503, and readiness says "degraded"
//! while events wait on disk.
//!
//! The broker tests never stop the shared services: the outage is a broker address where
//! nothing listens, a TCP proxy the test cuts, or a private Kafka-protocol broker behind one.
//! Every destination (topic, queue) has a name of its own per test. No test asserts a timing:
//! deadlines are generous bounds on waiting, and a test that reaches one has failed.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
// Without both broker features some tests, and what only they use, are left out.
#![cfg_attr(
    not(all(feature = "kafka", feature = "amqp")),
    allow(dead_code, unused_imports)
)]

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Gateway, PATIENCE, Proxy, Received, Sent, Tansu, TempDir, create_destinations, free_port,
    read_back, unique,
};

const KAFKA: &str = "127.0.0.1:9092";
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// How long a drain or a read-back may take at most.
const DRAIN_PATIENCE: Duration = Duration::from_secs(180);

/// A body that names its destination and sequence number, with bytes a re-encoding would
/// change (non-ASCII text, escapes, odd whitespace, a length that varies).
fn body(run: &str, provider: &str, seq: usize) -> Vec<u8> {
    let pad = "ab\u{e9}\u{20ac}\\n".repeat(seq % 7);
    format!(
        "{{\"run\":\"{run}\",\"provider\":\"{provider}\",\"seq\":{seq},\"pad\":\"{pad}\"}} \t\r\n"
    )
    .into_bytes()
}

/// One client per provider posting in order until `stop` is set, the gateway stops answering,
/// or `max` events were sent; what each sent, by provider. Each client pauses `pace` between
/// requests (load shaping, nothing is measured).
struct Load {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    spooled: Arc<AtomicUsize>,
    clients: Vec<(String, thread::JoinHandle<Sent>)>,
}

impl Load {
    fn start(
        gateway: &Gateway,
        run: &str,
        providers: &[String],
        max: usize,
        pace: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let spooled = Arc::new(AtomicUsize::new(0));
        let clients = providers
            .iter()
            .map(|provider| {
                let (stop, accepted, spooled) = (
                    Arc::clone(&stop),
                    Arc::clone(&accepted),
                    Arc::clone(&spooled),
                );
                let (addr, run, mine) = (gateway.addr, run.to_owned(), provider.clone());
                let handle = thread::spawn(move || {
                    let mut sent = Sent::default();
                    for seq in 0..max {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let body = body(&run, &mine, seq);
                        let path = format!("/api/v1/webhook/{mine}");
                        let answer = common::request(addr, "POST", &path, &body);
                        if answer.status == 202 {
                            if answer.body_text().contains("\"storage\":\"spool\"") {
                                sent.spooled += 1;
                                spooled.fetch_add(1, Ordering::SeqCst);
                            }
                            sent.accepted.push(body);
                            accepted.fetch_add(1, Ordering::SeqCst);
                        } else {
                            *sent.refused.entry(answer.status).or_default() += 1;
                            if answer.status == 0 {
                                // The gateway is gone; this event may or may not be on disk.
                                break;
                            }
                        }
                        thread::sleep(pace);
                    }
                    sent
                });
                (provider.clone(), handle)
            })
            .collect();
        Self {
            stop,
            accepted,
            spooled,
            clients,
        }
    }

    /// Waits until at least `n` events were accepted (bounded by `patience`).
    fn wait_for_accepted(&self, n: usize, patience: Duration, gateway: &Gateway) {
        let deadline = Instant::now() + patience;
        while self.accepted.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "only {} accepted:\n{}",
                self.accepted.load(Ordering::SeqCst),
                gateway.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(self) -> HashMap<String, Sent> {
        self.stop.store(true, Ordering::SeqCst);
        self.clients
            .into_iter()
            .map(|(provider, handle)| (provider, handle.join().unwrap()))
            .collect()
    }
}

/// Checks that every accepted body is among what the broker delivered, byte for byte, and
/// that each lane (a Kafka partition, an AMQP queue) delivered each destination's accepted
/// events in the order they were accepted (first deliveries; redeliveries may repeat one).
fn assert_all_delivered_in_order(
    sent: &HashMap<String, Sent>,
    prefix: &str,
    read: &[Received],
    marker: &[u8],
    log: &str,
) {
    // body → (destination, position in its destination's accepted order)
    let mut rank: HashMap<&[u8], (String, usize)> = HashMap::new();
    for (provider, s) in sent {
        for (i, body) in s.accepted.iter().enumerate() {
            rank.insert(body, (format!("{prefix}{provider}"), i));
        }
    }
    let delivered: HashSet<&[u8]> = read.iter().map(|r| r.body.as_slice()).collect();
    let missing: Vec<String> = rank
        .keys()
        .filter(|body| !delivered.contains(*body))
        .map(|body| String::from_utf8_lossy(body).into_owned())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} accepted events never reached the broker, e.g. {:?}",
        missing.len(),
        rank.len(),
        missing.iter().take(3).collect::<Vec<_>>()
    );
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut last: HashMap<(&str, &str), usize> = HashMap::new();
    for r in read {
        if r.body == marker || !seen.insert(&r.body) {
            continue;
        }
        let Some((destination, i)) = rank.get(r.body.as_slice()) else {
            // Sent but never answered (the request in flight at the kill): may or may not be
            // there; if it is, it came after everything its client had accepted.
            continue;
        };
        assert_eq!(&r.destination, destination, "delivered to the wrong place");
        if let Some(before) = last.insert((&r.lane, &r.destination), *i) {
            assert!(
                before < *i,
                "{} delivered event {i} of {destination} after event {before}\n{log}",
                r.lane
            );
        }
    }
}

/// Whether `read` holds every accepted body.
fn holds_all(sent: &HashMap<String, Sent>) -> impl FnMut(&[Received]) -> bool + '_ {
    let want: HashSet<Vec<u8>> = sent.values().flat_map(|s| s.accepted.clone()).collect();
    let mut got: HashSet<Vec<u8>> = HashSet::new();
    let mut checked = 0;
    move |read| {
        for r in &read[checked..] {
            if want.contains(&r.body) {
                got.insert(r.body.clone());
            }
        }
        checked = read.len();
        got.len() == want.len()
    }
}

/// `kill -9` of a gateway that is spooling under load (its broker address has nothing behind
/// it), then a restart with the broker reachable: every event that got a 202 reaches the
/// broker, byte for byte, each destination's in the order they were accepted.
fn kill_9_while_spooling(transport: &str, down: &[(&str, &str)], up: &[(&str, &str)]) {
    let run = unique(&format!("kill9-{transport}"));
    let prefix = format!("{run}.");
    let providers: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
    let destinations: Vec<String> = providers.iter().map(|p| format!("{prefix}{p}")).collect();
    let scratch = TempDir::new("kill9");
    let spool = scratch.path().join("spool");
    let spool = spool.to_str().unwrap();
    let provider_list = providers.join(",");
    let common = [
        ("FIREFLY_TRANSPORT", transport),
        ("FIREFLY_PROVIDERS", provider_list.as_str()),
        ("FIREFLY_TOPIC_PREFIX", prefix.as_str()),
        ("FIREFLY_WORKER", "off"),
        ("FIREFLY_SPOOL_DIR", spool),
        ("FIREFLY_SPOOL_BROKER_TIMEOUT", "0.2"),
        ("FIREFLY_GROUP", run.as_str()),
    ];
    let (mut down_vars, mut up_vars) = (common.to_vec(), common.to_vec());
    down_vars.extend_from_slice(down);
    up_vars.extend_from_slice(up);
    let (down, up) = (down_vars, up_vars);

    let gateway = Gateway::start(&down, &scratch.path().join("first.log"));
    let load = Load::start(&gateway, &run, &providers, 5_000, Duration::ZERO);
    // Well into the spooling, with every client in the middle of its stream.
    load.wait_for_accepted(600, Duration::from_secs(120), &gateway);
    let first_log = gateway.log();
    gateway.kill();
    let sent = load.finish();
    let accepted: usize = sent.values().map(|s| s.accepted.len()).sum();
    let spooled: usize = sent.values().map(|s| s.spooled).sum();
    assert_eq!(
        spooled, accepted,
        "with the broker down everything is spooled"
    );
    for (provider, s) in &sent {
        let refused: usize = s
            .refused
            .iter()
            .filter(|(c, _)| **c != 0)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(refused, 0, "{provider}: {:?}\n{first_log}", s.refused);
    }

    // Topics and queues exist before the restarted gateway forwards into them.
    let marker = format!("marker {run}").into_bytes();
    let _created = create_destinations(&up, &destinations, &marker);
    let gateway = Gateway::start(&up, &scratch.path().join("second.log"));
    // Readiness is up once the spool holds nothing and the broker answers.
    gateway.wait_for_ready("up", DRAIN_PATIENCE);
    gateway.wait_for_metric("firefly_spool_events", "log=\"spool\"", 0.0, PATIENCE);
    let read = read_back(&up, &destinations, DRAIN_PATIENCE, holds_all(&sent));
    assert_all_delivered_in_order(&sent, &prefix, &read, &marker, &gateway.log());
    drop(gateway);
}

#[cfg(feature = "kafka")]
#[test]
#[ignore = "needs Kafka and RabbitMQ; run scripts/test"]
fn kill_9_while_spooling_loses_nothing_on_kafka() {
    let nowhere = free_port().to_string();
    kill_9_while_spooling(
        "kafka",
        &[("FIREFLY_KAFKA_BROKERS", &nowhere)],
        &[("FIREFLY_KAFKA_BROKERS", KAFKA)],
    );
}

#[cfg(feature = "amqp")]
#[test]
#[ignore = "needs Kafka and RabbitMQ; run scripts/test"]
fn kill_9_while_spooling_loses_nothing_on_rabbitmq() {
    let nowhere = format!("amqp://guest:guest@{}/%2f", free_port());
    kill_9_while_spooling(
        "amqp",
        &[("FIREFLY_AMQP_URL", &nowhere)],
        &[("FIREFLY_AMQP_URL", AMQP)],
    );
}

/// How long the broker is away under load.
const OUTAGE: Duration = Duration::from_secs(30);

/// The broker behind `proxy` goes away for 30 s under steady load: no 503 (the spool has
/// room), readiness says "degraded"; once it is back the spool drains to empty and every
/// accepted event is in the broker at least once.
fn outage_under_load(transport: &str, proxy: &Proxy, broker: &[(&str, &str)]) {
    let run = unique(&format!("outage-{transport}"));
    let prefix = format!("{run}.");
    let providers: Vec<String> = (0..4).map(|i| format!("p{i}")).collect();
    let destinations: Vec<String> = providers.iter().map(|p| format!("{prefix}{p}")).collect();
    let scratch = TempDir::new("outage");
    let spool = scratch.path().join("spool");
    let provider_list = providers.join(",");
    let mut vars = vec![
        ("FIREFLY_TRANSPORT", transport),
        ("FIREFLY_PROVIDERS", provider_list.as_str()),
        ("FIREFLY_TOPIC_PREFIX", prefix.as_str()),
        ("FIREFLY_WORKER", "off"),
        ("FIREFLY_SPOOL_DIR", spool.to_str().unwrap()),
        ("FIREFLY_SPOOL_BROKER_TIMEOUT", "0.5"),
        ("FIREFLY_GROUP", run.as_str()),
    ];
    vars.extend_from_slice(broker);
    let marker = format!("marker {run}").into_bytes();
    let _created = create_destinations(&vars, &destinations, &marker);

    let gateway = Gateway::start(&vars, &scratch.path().join("gateway.log"));
    let load = Load::start(
        &gateway,
        &run,
        &providers,
        100_000,
        Duration::from_millis(20),
    );
    load.wait_for_accepted(100, Duration::from_secs(60), &gateway);
    // (A first publish that waits for a topic to be created may have been spooled: that
    // drains too.)
    gateway.wait_for_ready("up", DRAIN_PATIENCE);
    let spooled_before = load.spooled.load(Ordering::SeqCst);

    proxy.cut();
    let mut readiness = HashSet::new();
    let outage = Instant::now();
    while outage.elapsed() < OUTAGE {
        let answer = gateway.get("/health/ready");
        readiness.insert((answer.status, answer.body_text()));
        thread::sleep(Duration::from_millis(500));
    }
    let spooled_in_outage = load.spooled.load(Ordering::SeqCst) - spooled_before;
    proxy.restore();
    // Load goes on while the spool drains.
    let accepted = load.accepted.load(Ordering::SeqCst);
    load.wait_for_accepted(accepted + 200, Duration::from_secs(120), &gateway);
    let sent = load.finish();

    assert!(spooled_in_outage > 0, "the outage spooled nothing");
    for (provider, s) in &sent {
        assert!(
            s.refused.is_empty(),
            "{provider}: refused {:?} with room in the spool\n{}",
            s.refused,
            gateway.log()
        );
    }
    assert!(
        readiness.iter().any(|(status, body)| *status == 200
            && body.starts_with("{\"status\":\"degraded\"")
            && body.contains("\"reason\":\"spooling\"")),
        "readiness never said degraded during the outage: {readiness:?}"
    );
    assert!(
        readiness.iter().all(|(status, _)| *status == 200),
        "readiness refused during the outage: {readiness:?}"
    );

    gateway.wait_for_ready("up", DRAIN_PATIENCE);
    gateway.wait_for_metric("firefly_spool_events", "log=\"spool\"", 0.0, PATIENCE);
    let forwarded = gateway
        .metric("firefly_spool_forwarded_total", "log=\"spool\"")
        .unwrap_or(0.0);
    #[allow(clippy::cast_precision_loss)]
    let at_least = spooled_in_outage as f64;
    assert!(forwarded >= at_least, "forwarded {forwarded} < {at_least}");

    let read = read_back(&vars, &destinations, DRAIN_PATIENCE, holds_all(&sent));
    let delivered: HashSet<&[u8]> = read.iter().map(|r| r.body.as_slice()).collect();
    let mut missing = 0;
    let mut accepted = 0;
    for s in sent.values() {
        accepted += s.accepted.len();
        missing += s
            .accepted
            .iter()
            .filter(|b| !delivered.contains(b.as_slice()))
            .count();
    }
    assert_eq!(
        missing, 0,
        "{missing} of {accepted} accepted events missing"
    );
    drop(gateway);
}

#[cfg(feature = "amqp")]
#[test]
#[ignore = "needs Kafka and RabbitMQ; run scripts/test"]
fn rabbitmq_outage_under_load_is_spooled_and_drained() {
    let proxy = Proxy::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 5672)));
    let url = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    outage_under_load("amqp", &proxy, &[("FIREFLY_AMQP_URL", &url)]);
}

#[cfg(feature = "kafka")]
#[test]
#[ignore = "needs Kafka and RabbitMQ; run scripts/test"]
fn kafka_outage_under_load_is_spooled_and_drained() {
    // A private broker that advertises the proxy, so that every connection goes through it.
    let front = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let listen = free_port();
    let _broker = Tansu::start(listen, front.local_addr().unwrap());
    let proxy = Proxy::on(front, listen);
    let brokers = proxy.addr.to_string();
    outage_under_load("kafka", &proxy, &[("FIREFLY_KAFKA_BROKERS", &brokers)]);
}

/// The broker is down and the spool is small: once it is full, new events are refused with
/// 503 + Retry-After, and readiness is down.
#[cfg(feature = "amqp")]
#[test]
fn a_full_spool_answers_503_with_retry_after() {
    let scratch = TempDir::new("full");
    let spool = scratch.path().join("spool");
    let nowhere = format!("amqp://guest:guest@{}/%2f", free_port());
    let gateway = Gateway::start(
        &[
            ("FIREFLY_TRANSPORT", "amqp"),
            ("FIREFLY_AMQP_URL", &nowhere),
            ("FIREFLY_PROVIDERS", "github"),
            ("FIREFLY_WORKER", "off"),
            ("FIREFLY_SPOOL_DIR", spool.to_str().unwrap()),
            ("FIREFLY_SPOOL_MAX_BYTES", "65536"),
            ("FIREFLY_SPOOL_BROKER_TIMEOUT", "0.2"),
            ("FIREFLY_READY_CACHE", "0"),
        ],
        &scratch.path().join("gateway.log"),
    );
    let body = vec![b'x'; 4000];
    let mut accepted = 0;
    let full = loop {
        let answer = gateway.post("github", &body);
        match answer.status {
            202 => accepted += 1,
            503 => break answer,
            other => panic!("unexpected {other}: {}", answer.body_text()),
        }
        assert!(accepted < 100, "64 KiB took {accepted} events of 4 KB");
    };
    assert!(accepted > 0, "the spool took nothing");
    // The ingest service answers every publisher failure as `broker_unavailable`.
    assert!(
        full.body_text().contains("\"status\":\"rejected\""),
        "{}",
        full.body_text()
    );
    assert!(full.header("retry-after").is_some(), "{}", full.head);
    let log = gateway.log();
    assert!(!log.contains("panicked"), "{log}");
    // Still full: refused again, and readiness takes the instance out of rotation.
    assert_eq!(gateway.post("github", &body).status, 503);
    let ready = gateway.get("/health/ready");
    assert_eq!(ready.status, 503, "{}", ready.body_text());
    assert!(ready.body_text().starts_with("{\"status\":\"down\""));
}

/// Readiness while the broker is down: degraded (200) with the spool holding events.
#[cfg(feature = "amqp")]
#[test]
fn readiness_is_degraded_while_the_spool_holds_events() {
    let scratch = TempDir::new("degraded");
    let spool = scratch.path().join("spool");
    let nowhere = format!("amqp://guest:guest@{}/%2f", free_port());
    let gateway = Gateway::start(
        &[
            ("FIREFLY_TRANSPORT", "amqp"),
            ("FIREFLY_AMQP_URL", &nowhere),
            ("FIREFLY_PROVIDERS", "github"),
            ("FIREFLY_WORKER", "off"),
            ("FIREFLY_SPOOL_DIR", spool.to_str().unwrap()),
            ("FIREFLY_SPOOL_BROKER_TIMEOUT", "0.2"),
            ("FIREFLY_READY_CACHE", "0"),
        ],
        &scratch.path().join("gateway.log"),
    );
    let answer = gateway.post("github", b"{\"zen\":\"held\"}");
    assert_eq!(answer.status, 202, "{}", answer.body_text());
    assert!(answer.body_text().contains("\"storage\":\"spool\""));
    let ready = gateway.get("/health/ready");
    assert_eq!(ready.status, 200, "{}", ready.body_text());
    let body: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["checks"][0]["name"], "amqp", "{body}");
    assert_eq!(body["checks"][0]["status"], "degraded", "{body}");
    assert_eq!(body["checks"][0]["reason"], "spooling", "{body}");
    assert_eq!(
        gateway.metric("firefly_ready_degraded", "check=\"amqp\""),
        Some(1.0)
    );
    assert_eq!(gateway.metric("firefly_ready", "check=\"amqp\""), Some(1.0));
    gateway.wait_for_metric("firefly_spool_events", "log=\"spool\"", 1.0, PATIENCE);
}

/// The event ids the gateway's worker logged as received (JSON logs).
fn received_ids(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("\"message\":\"webhook received\""))
        .filter_map(|l| {
            let (_, rest) = l.split_once("\"event_id\":\"")?;
            Some(rest.split('"').next()?.to_owned())
        })
        .collect()
}

/// `kill -9` of a gateway on the disk transport while its worker consumes under load: after a
/// restart on the same directory every accepted event is processed, whether the killed worker
/// had not received it yet or had not acked it durably (acks are written with the next group
/// commit). The exact crash-before-ack case with idempotency is
/// `disk_redelivers_what_a_crashed_consumer_did_not_ack` in `firefly-webhook/tests/spool.rs`.
#[test]
fn a_killed_disk_gateway_loses_no_accepted_event() {
    let scratch = TempDir::new("disk-kill");
    let data = scratch.path().join("data");
    let vars = [
        ("FIREFLY_TRANSPORT", "disk"),
        ("FIREFLY_DATA_DIR", data.to_str().unwrap()),
        ("FIREFLY_PROVIDERS", "github"),
        ("FIREFLY_WORKER", "on"),
        ("FIREFLY_LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ];
    let first = Gateway::start(&vars, &scratch.path().join("first.log"));
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (stop, accepted, addr) = (Arc::clone(&stop), Arc::clone(&accepted), first.addr);
            thread::spawn(move || {
                let mut ids = Vec::new();
                for seq in 0..20_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let body = format!("{{\"client\":{client},\"seq\":{seq}}}");
                    let answer =
                        common::request(addr, "POST", "/api/v1/webhook/github", body.as_bytes());
                    match answer.status {
                        202 => {
                            let text = answer.body_text();
                            let id = text
                                .split_once("\"eventId\":\"")
                                .and_then(|(_, rest)| rest.split('"').next())
                                .unwrap()
                                .to_owned();
                            ids.push(id);
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                        0 => break,
                        other => panic!("unexpected {other}: {}", answer.body_text()),
                    }
                }
                ids
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while accepted.load(Ordering::SeqCst) < 1000 {
        assert!(Instant::now() < deadline, "{}", first.log());
        thread::sleep(Duration::from_millis(20));
    }
    let first_log_path = scratch.path().join("first.log");
    first.kill();
    stop.store(true, Ordering::SeqCst);
    let accepted: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let before: HashSet<String> = received_ids(&std::fs::read_to_string(&first_log_path).unwrap())
        .into_iter()
        .collect();

    let second = Gateway::start(&vars, &scratch.path().join("second.log"));
    let deadline = Instant::now() + DRAIN_PATIENCE;
    loop {
        let after: HashSet<String> = received_ids(&second.log()).into_iter().collect();
        let missing = accepted
            .iter()
            .filter(|id| !before.contains(*id) && !after.contains(*id))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} accepted events never processed",
            accepted.len()
        );
        thread::sleep(Duration::from_millis(200));
    }
    // Everything was consumed and acked: nothing is left for a third start.
    second.wait_for_metric("firefly_spool_events", "log=\"disk\"", 0.0, PATIENCE);
}
