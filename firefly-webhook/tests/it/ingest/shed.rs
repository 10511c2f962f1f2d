//! Rate limits, the in-flight cap, the body byte budget and the body timeout.

use tokio::sync::{Semaphore, watch};

use super::edge::{nz, untouchable, with_peer};
use super::*;

/// Holds every publish until released, so that requests stay in flight.
pub(crate) struct Gated {
    inner: firefly_webhook::memory::MemoryPublisher,
    gate: Semaphore,
    arrived: watch::Sender<usize>,
}

impl Gated {
    pub(crate) fn new(broker: &MemoryBroker) -> Arc<Self> {
        Arc::new(Self {
            inner: broker.publisher(),
            gate: Semaphore::new(0),
            arrived: watch::Sender::new(0),
        })
    }

    /// Waits until `n` publishes are held at the gate.
    pub(crate) async fn wait_for(&self, n: usize) {
        let mut rx = self.arrived.subscribe();
        rx.wait_for(|&arrived| arrived >= n).await.unwrap();
    }

    pub(crate) fn open(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

#[async_trait]
impl Publisher for Gated {
    async fn publish(&self, destination: &str, event: WebhookEvent) -> Result<(), PublishError> {
        self.arrived.send_modify(|n| *n += 1);
        self.gate.acquire().await.unwrap().forget();
        self.inner.publish(destination, event).await
    }
}

/// A body that sends `first` and then stalls forever.
fn stalling(
    first: &'static [u8],
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static>
{
    let head = futures_util::stream::iter([Ok(Frame::data(Bytes::from_static(first)))]);
    StreamBody::new(futures_util::StreamExt::chain(
        head,
        futures_util::stream::pending(),
    ))
}

fn overloaded(answer: &Answer, retry_after: &str) {
    assert_rejected(answer, StatusCode::SERVICE_UNAVAILABLE, "overloaded", false);
    assert_eq!(answer.headers[header::RETRY_AFTER], retry_after);
}

// ---------------------------------------------------------------------------------------------
// rate limits

#[tokio::test(start_paused = true)]
async fn per_ip_rate_limit_is_429_with_retry_after() {
    let broker = MemoryBroker::new(64);
    let svc = IngestService::new(broker.publisher()).rate_limit_per_ip(nz(1), nz(2));
    let provider = unique("rl");
    let peer = "203.0.113.9:4000";
    for _ in 0..2 {
        let answer = send(svc.clone(), with_peer(&url(&provider), peer, None)).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
    }
    let (body, pulled) = counting_stream(1);
    let mut req = Request::post(url(&provider)).body(body).unwrap();
    req.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
    let answer = send(svc.clone(), req).await;
    let json = assert_rejected(
        &answer,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        false,
    );
    assert!(json["message"].as_str().unwrap().contains("retry"));
    assert_eq!(answer.headers[header::RETRY_AFTER], "1");
    assert_eq!(pulled.load(Ordering::SeqCst), 0);
    // The limit is the client's, across providers ...
    let answer = send(svc.clone(), with_peer(&url(&unique("x")), peer, None)).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    // ... another client is unaffected, and so is the rest of the same client's IPv6 /64.
    let answer = send(
        svc.clone(),
        with_peer(&url(&provider), "203.0.113.10:4000", None),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    for _ in 0..2 {
        let answer = send(
            svc.clone(),
            with_peer(&url(&provider), "[2001:db8::1]:1", None),
        )
        .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
    }
    let answer = send(
        svc.clone(),
        with_peer(&url(&provider), "[2001:db8::ffff:2]:1", None),
    )
    .await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "same /64");
    let answer = send(
        svc.clone(),
        with_peer(&url(&provider), "[2001:db8:0:1::1]:1", None),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "another /64");

    // One cell a second: a second later the client is admitted once more.
    tokio::time::advance(Duration::from_secs(1)).await;
    let answer = send(svc.clone(), with_peer(&url(&provider), peer, None)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let answer = send(svc, with_peer(&url(&provider), peer, None)).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(broker.len(&provider), 7);
}

#[tokio::test(start_paused = true)]
async fn per_ip_limit_uses_the_resolved_client_address() {
    let broker = MemoryBroker::new(64);
    let svc = IngestService::new(broker.publisher())
        .trusted_proxies(["10.0.0.0/8".parse().unwrap()])
        .rate_limit_per_ip(nz(1), nz(1));
    let provider = unique("rl");
    // Two clients behind one proxy have a limit each.
    for client in ["198.51.100.1", "198.51.100.2"] {
        let answer = send(
            svc.clone(),
            with_peer(&url(&provider), "10.0.0.2:1", Some(client)),
        )
        .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{client}");
    }
    let answer = send(
        svc.clone(),
        with_peer(&url(&provider), "10.0.0.2:1", Some("198.51.100.1")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    // An untrusted peer cannot escape its limit by claiming other addresses.
    for claimed in ["1.1.1.1", "2.2.2.2"] {
        let answer = send(
            svc.clone(),
            with_peer(&url(&provider), "203.0.113.9:1", Some(claimed)),
        )
        .await;
        let expected = if claimed == "1.1.1.1" {
            StatusCode::ACCEPTED
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(answer.status, expected, "{claimed}");
    }
}

#[tokio::test(start_paused = true)]
async fn per_provider_rate_limit_leaves_other_providers_alone() {
    let broker = MemoryBroker::new(64);
    let svc = IngestService::new(broker.publisher()).rate_limit_per_provider(nz(2), nz(3));
    let busy = unique("busy");
    let quiet = unique("quiet");
    for i in 0..3 {
        let peer = format!("203.0.113.{i}:1");
        let answer = send(svc.clone(), with_peer(&url(&busy), &peer, None)).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
    }
    // Whoever sends it.
    let answer = send(svc.clone(), with_peer(&url(&busy), "198.51.100.1:1", None)).await;
    assert_rejected(
        &answer,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        false,
    );
    // Half a second per cell, rounded up to whole seconds.
    assert_eq!(answer.headers[header::RETRY_AFTER], "1");
    let answer = send(svc.clone(), post_req(&url(&quiet), "{}")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    tokio::time::advance(Duration::from_millis(500)).await;
    let answer = send(svc, post_req(&url(&busy), "{}")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(broker.len(&busy), 4);
}

// ---------------------------------------------------------------------------------------------
// in-flight cap

#[tokio::test]
async fn in_flight_cap_sheds_at_once_and_recovers() {
    let broker = MemoryBroker::new(64);
    let gated = Gated::new(&broker);
    let svc = IngestService::new(Arc::clone(&gated))
        .max_in_flight(2)
        .retry_after(Duration::from_secs(3));
    let provider = unique("busy");

    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(send(svc.clone(), post_req(&url(&provider), "{}"))))
        .collect();
    gated.wait_for(2).await;

    // The third is answered on its first poll: nothing queued, the body never polled.
    let res = svc
        .clone()
        .oneshot(untouchable(&url(&provider), "203.0.113.9:1"))
        .now_or_never()
        .expect("answered at once")
        .unwrap();
    let answer = into_answer(res).await;
    overloaded(&answer, "3");

    gated.open(2);
    for task in held {
        assert_eq!(task.await.unwrap().status, StatusCode::ACCEPTED);
    }
    // The slots came back.
    gated.open(2);
    for _ in 0..2 {
        let answer = send(svc.clone(), post_req(&url(&provider), "{}")).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
    }
    assert_eq!(broker.len(&provider), 4);
}

#[tokio::test]
async fn abandoned_and_failed_requests_give_their_slot_back() {
    let broker = MemoryBroker::new(64);
    let svc = IngestService::new(broker.publisher())
        .max_in_flight(1)
        .max_body_bytes(4);
    let provider = unique("one");

    // Admitted, then stalled on its body, then dropped by the server.
    let mut stalled = Box::pin(
        svc.clone()
            .oneshot(Request::post(url(&provider)).body(stalling(b"ab")).unwrap()),
    );
    assert!(
        stalled.as_mut().now_or_never().is_none(),
        "admitted, reading"
    );
    let answer = send(svc.clone(), post_req(&url(&provider), "x")).await;
    overloaded(&answer, "5");
    drop(stalled);

    // Failing: 413 while streaming.
    let (body, _) = counting_stream(1);
    let answer = send(
        svc.clone(),
        Request::post(url(&provider)).body(body).unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);

    let answer = send(svc, post_req(&url(&provider), "x")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
}

// ---------------------------------------------------------------------------------------------
// body byte budget

#[tokio::test]
async fn declared_lengths_are_reserved_before_reading() {
    let broker = MemoryBroker::new(64);
    let gated = Gated::new(&broker);
    let svc = IngestService::new(Arc::clone(&gated))
        .max_body_bytes(64 * 1024)
        .body_budget(100 * 1024);
    let provider = unique("budget");

    // 64 KiB held (at the gate) of 100 KiB.
    let first = tokio::spawn(send(
        svc.clone(),
        post_req(&url(&provider), vec![b'x'; 64 * 1024]),
    ));
    gated.wait_for(1).await;

    // Another 64 KiB does not fit: refused at once, the body never polled.
    let mut req = untouchable(&url(&provider), "203.0.113.9:1");
    req.headers_mut().insert(
        header::CONTENT_LENGTH,
        (64 * 1024).to_string().parse().unwrap(),
    );
    let res = svc
        .clone()
        .oneshot(req)
        .now_or_never()
        .expect("answered at once")
        .unwrap();
    overloaded(&into_answer(res).await, "5");

    // 30 KiB does.
    let second = tokio::spawn(send(
        svc.clone(),
        post_req(&url(&provider), vec![b'y'; 30 * 1024]),
    ));
    gated.wait_for(2).await;
    gated.open(2);
    assert_eq!(first.await.unwrap().status, StatusCode::ACCEPTED);
    assert_eq!(second.await.unwrap().status, StatusCode::ACCEPTED);

    // All given back: the full 64 KiB fits again.
    gated.open(1);
    let answer = send(svc, post_req(&url(&provider), vec![b'z'; 64 * 1024])).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(broker.len(&provider), 3);
}

#[tokio::test]
async fn chunked_bodies_reserve_as_they_stream() {
    let broker = MemoryBroker::new(64);
    let gated = Gated::new(&broker);
    let svc = IngestService::new(Arc::clone(&gated))
        .max_body_bytes(MIB)
        .body_budget(MIB);
    let provider = unique("chunked");

    // 512 KiB in 64 KiB chunks, held at the gate.
    let (body, _) = counting_stream(8);
    let first = tokio::spawn(send(
        svc.clone(),
        Request::post(url(&provider)).body(body).unwrap(),
    ));
    gated.wait_for(1).await;

    // The next chunked body is admitted and read until the budget runs out, then refused;
    // what it had read is given back.
    let (body, pulled) = counting_stream(16);
    let answer = send(
        svc.clone(),
        Request::post(url(&provider)).body(body).unwrap(),
    )
    .await;
    overloaded(&answer, "5");
    let pulled = pulled.load(Ordering::SeqCst);
    assert!((1..16).contains(&pulled), "pulled {pulled} chunks");

    // A small one still fits next to the first.
    let (body, _) = counting_stream(2);
    let second = tokio::spawn(send(
        svc.clone(),
        Request::post(url(&provider)).body(body).unwrap(),
    ));
    gated.wait_for(2).await;
    gated.open(2);
    assert_eq!(first.await.unwrap().status, StatusCode::ACCEPTED);
    assert_eq!(second.await.unwrap().status, StatusCode::ACCEPTED);
    assert_eq!(broker.len(&provider), 2);
}

// ---------------------------------------------------------------------------------------------
// body timeout

#[tokio::test(start_paused = true)]
async fn a_stalled_body_is_408_with_connection_close() {
    let publisher = Failing::new(Failure::Rejected);
    let svc = IngestService::new(Arc::clone(&publisher)).body_timeout(Duration::from_secs(2));
    let req = Request::post(url(&unique("slow")))
        .body(stalling(b"{\"partial\":"))
        .unwrap();
    let answer = send(svc, req).await;
    let json = assert_rejected(&answer, StatusCode::REQUEST_TIMEOUT, "body_timeout", false);
    assert!(json["message"].as_str().unwrap().contains("2s"), "{json}");
    assert_eq!(answer.headers[header::CONNECTION], "close");
    assert_eq!(publisher.calls.load(Ordering::SeqCst), 0, "never published");
}

#[tokio::test(start_paused = true)]
async fn the_default_body_timeout_is_30s() {
    let publisher = Failing::new(Failure::Rejected);
    let svc = IngestService::new(Arc::clone(&publisher));
    let started = tokio::time::Instant::now();
    let req = Request::post(url(&unique("slow")))
        .body(stalling(b"{"))
        .unwrap();
    let answer = send(svc, req).await;
    assert_rejected(&answer, StatusCode::REQUEST_TIMEOUT, "body_timeout", false);
    // Paused time: the timeout, give or take the timer's millisecond.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
    assert_eq!(publisher.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_slow_body_within_the_timeout_is_accepted() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher()).body_timeout(Duration::from_secs(10));
    let provider = unique("trickle");
    // Four chunks, two seconds apart: 8 s in all.
    let stream = futures_util::stream::unfold(0u8, |i| async move {
        if i == 4 {
            return None;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'a' + i; 3]))),
            i + 1,
        ))
    });
    let req = Request::post(url(&provider))
        .body(StreamBody::new(stream))
        .unwrap();
    let answer = send(svc, req).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(queued(&broker).body, "aaabbbcccddd");
}

// ---------------------------------------------------------------------------------------------
// through a real TCP server, mounted as a layer in an app's router

async fn serve_app(svc: IngestService) -> SocketAddr {
    let app = Router::new()
        .route("/", get(|| async { "app" }))
        .layer(IngestLayer::from_service(svc));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// Sends `head` and `body` without closing, then reads until the server closes.
async fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut msg = head.replace('\n', "\r\n").into_bytes();
    msg.extend_from_slice(b"\r\nHost: 127.0.0.1\r\n\r\n");
    msg.extend_from_slice(body);
    stream.write_all(&msg).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("the server closes the connection")
        .unwrap();
    String::from_utf8(raw).unwrap()
}

#[tokio::test]
async fn tcp_slow_sender_gets_408_and_the_connection_is_closed() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher()).body_timeout(Duration::from_millis(200));
    let addr = serve_app(svc).await;
    // 100 bytes announced, 10 sent, then silence; the client keeps its side open.
    let raw = exchange(
        addr,
        "POST /api/v1/webhook/slow HTTP/1.1\nContent-Type: application/json\nContent-Length: 100",
        b"{\"partial\"",
    )
    .await;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("connection: close")),
        "{head}"
    );
    let json: Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["code"], "body_timeout");
    assert!(broker.is_empty());
}

#[tokio::test]
async fn tcp_ip_allowlist_reads_the_socket_peer() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher())
        .allow_ips("remote", ["192.0.2.0/24".parse().unwrap()])
        .allow_ips("local", ["127.0.0.0/8".parse().unwrap()]);
    let addr = serve_app(svc).await;
    let post = |provider: &str| {
        format!(
            "POST /api/v1/webhook/{provider} HTTP/1.1\nContent-Length: 2\nConnection: close\nX-Forwarded-For: 192.0.2.1"
        )
    };
    let raw = exchange(addr, &post("remote"), b"{}").await;
    assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");
    assert!(raw.contains("ip_not_allowed"), "{raw}");
    let raw = exchange(addr, &post("local"), b"{}").await;
    assert!(raw.starts_with("HTTP/1.1 202"), "{raw}");
    assert_eq!(broker.len("local"), 1);
    assert_eq!(broker.len("remote"), 0);
}
