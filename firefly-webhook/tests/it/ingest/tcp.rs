//! Through a real TCP server.

use super::layer::app_routes;
use super::*;

async fn serve(app: Router) -> SocketAddr {
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

struct RawAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Parses one HTTP/1.1 response (Content-Length or chunked) from the bytes read.
fn parse_response(raw: &[u8]) -> RawAnswer {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let rest = &raw[end + 4..];
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v)
    };
    let body = if let Some(len) = find("content-length") {
        rest[..len.parse::<usize>().unwrap()].to_vec()
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        let mut rest = rest;
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                    .unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest = &rest[line_end + 2 + size + 2..];
        }
        body
    } else {
        rest.to_vec()
    };
    RawAnswer {
        status,
        headers,
        body,
    }
}

/// Sends one complete request with `Connection: close` and reads the whole answer.
async fn raw_request(addr: SocketAddr, head: &str, body: &[u8]) -> RawAnswer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut msg = head.replace('\n', "\r\n").into_bytes();
    msg.extend_from_slice(b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    msg.extend_from_slice(body);
    stream.write_all(&msg).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    parse_response(&raw)
}

fn ingest_app(broker: &MemoryBroker, svc: IngestService) -> Router {
    let _ = broker;
    app_routes()
        .route_service("/health/live", Liveness)
        .layer(IngestLayer::from_service(svc))
}

#[tokio::test]
async fn tcp_accepts_and_publishes() {
    let broker = MemoryBroker::new(16);
    let provider = unique("tcp");
    let addr = serve(ingest_app(&broker, IngestService::new(broker.publisher()))).await;
    let body = b"{\"action\":\"opened\",\"binary\":\"\xff\"}";
    let answer = raw_request(
        addr,
        &format!(
            "POST {}?x=1 HTTP/1.1\nContent-Type: application/json\nX-Multi: a\nX-Multi: b\nX-Request-ID: tcp-req-1\nContent-Length: {}",
            url(&provider),
            body.len()
        ),
        body,
    )
    .await;
    assert_eq!(
        answer.status,
        202,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let receipt = answer.json();
    assert_eq!(receipt["sourceIp"], "127.0.0.1");
    assert_eq!(receipt["payloadSize"], body.len());

    let event = queued(&broker);
    assert_eq!(event.body, &body[..]);
    assert_eq!(event.source_ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(event.correlation_id, "tcp-req-1");
    assert_eq!(event.query.as_deref(), Some("x=1"));
    let multi: Vec<_> = event.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
    assert_eq!(receipt["headerCount"], event.header_count());

    // The app's own routes keep working on the same server.
    let answer = raw_request(addr, "GET / HTTP/1.1", b"").await;
    assert_eq!((answer.status, &answer.body[..]), (200, &b"home"[..]));
    let answer = raw_request(addr, "GET /health/live HTTP/1.1", b"").await;
    assert_eq!(answer.status, 200);
    let answer = raw_request(addr, "GET /nope HTTP/1.1", b"").await;
    assert_eq!(answer.status, 404);
    let answer = raw_request(addr, &format!("GET {} HTTP/1.1", url(&provider)), b"").await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.header("allow"), Some("POST"));
}

#[tokio::test]
async fn tcp_rejections() {
    let broker = MemoryBroker::new(16);
    let addr = serve(ingest_app(&broker, IngestService::new(broker.publisher()))).await;

    let answer = raw_request(
        addr,
        &format!("POST {} HTTP/1.1\nContent-Length: 2", url("a%2Fb")),
        b"{}",
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["code"], "invalid_provider");
    let answer = raw_request(
        addr,
        &format!("POST {} HTTP/1.1\nContent-Length: 2", url("..")),
        b"{}",
    )
    .await;
    assert_eq!(answer.status, 400);
    // A raw space cannot even form a request line: the HTTP server refuses it with 400.
    let answer = raw_request(
        addr,
        &format!("POST {} HTTP/1.1\nContent-Length: 2", url("sp ace")),
        b"{}",
    )
    .await;
    assert_eq!(answer.status, 400);

    // Declared too large: answered without the body ever being sent.
    let answer = raw_request(
        addr,
        &format!("POST {} HTTP/1.1\nContent-Length: {}", url("big"), MIB + 1),
        b"",
    )
    .await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["code"], "payload_too_large");
    assert!(broker.is_empty());
}

#[tokio::test]
async fn tcp_chunked_1gib_body_is_cut_off() {
    let broker = MemoryBroker::new(16);
    let addr = serve(ingest_app(&broker, IngestService::new(broker.publisher()))).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();

    // Writes up to 1 GiB as chunked encoding until the server stops reading.
    let writer = tokio::spawn(async move {
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            url("chunked")
        );
        wr.write_all(head.as_bytes()).await.unwrap();
        let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
        chunk.extend(std::iter::repeat_n(b'z', 64 * 1024));
        chunk.extend_from_slice(b"\r\n");
        let mut sent = 0usize;
        for _ in 0..16 * 1024 {
            if wr.write_all(&chunk).await.is_err() {
                return sent;
            }
            sent += 64 * 1024;
        }
        sent
    });

    let mut raw = Vec::new();
    // The server answers and closes; a reset after the answer is fine.
    let mut buf = vec![0u8; 8192];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let answer = parse_response(&raw);
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["code"], "payload_too_large");
    drop(rd);
    let sent = writer.await.unwrap();
    // Socket buffers absorb a few MiB at most; the server never takes the whole GiB.
    assert!(sent < 64 * MIB, "client managed to send {sent} bytes");
    assert!(broker.is_empty());
}

#[tokio::test]
async fn tcp_trusted_proxy_end_to_end() {
    let broker = MemoryBroker::new(16);
    // The test client connects from 127.0.0.1.
    let trusting =
        IngestService::new(broker.publisher()).trusted_proxies(["127.0.0.0/8".parse().unwrap()]);
    let addr = serve(ingest_app(&broker, trusting)).await;
    let answer = raw_request(
        addr,
        &format!(
            "POST {} HTTP/1.1\nX-Forwarded-For: 203.0.113.77\nContent-Length: 0",
            url("viaproxy")
        ),
        b"",
    )
    .await;
    assert_eq!(answer.json()["sourceIp"], "203.0.113.77");
    assert_eq!(
        queued(&broker).source_ip,
        Some("203.0.113.77".parse().unwrap())
    );

    let distrusting =
        IngestService::new(broker.publisher()).trusted_proxies(["10.0.0.0/8".parse().unwrap()]);
    let addr = serve(ingest_app(&broker, distrusting)).await;
    let answer = raw_request(
        addr,
        &format!(
            "POST {} HTTP/1.1\nX-Forwarded-For: 203.0.113.77\nForwarded: for=198.51.100.3\nContent-Length: 0",
            url("spoofed")
        ),
        b"",
    )
    .await;
    assert_eq!(answer.json()["sourceIp"], "127.0.0.1");
    assert_eq!(
        queued(&broker).source_ip,
        Some("127.0.0.1".parse().unwrap())
    );
}

#[tokio::test]
async fn tcp_route_service_mount() {
    let broker = MemoryBroker::new(16);
    let app = Router::new().route_service(
        "/api/v1/webhook/{provider}",
        IngestService::new(broker.publisher()),
    );
    let addr = serve(app).await;
    let answer = raw_request(
        addr,
        &format!("POST {} HTTP/1.1\nContent-Length: 3", url("Mounted")),
        b"abc",
    )
    .await;
    assert_eq!(answer.status, 202);
    assert_eq!(answer.json()["provider"], "mounted");
    assert_eq!(queued(&broker).body, "abc");
}
