//! Client address, correlation id.

use super::*;

fn with_peer(peer: &str, xff: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::post(url("proxied"));
    if let Some(xff) = xff {
        b = b.header("x-forwarded-for", xff);
    }
    let mut req = b.body(Full::new(Bytes::from_static(b"{}"))).unwrap();
    req.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
    req
}

#[tokio::test]
async fn untrusted_peers_cannot_spoof_their_address() {
    let broker = MemoryBroker::new(16);
    let nets = ["10.0.0.0/8".parse().unwrap()];
    let svc = IngestService::new(broker.publisher()).trusted_proxies(nets);

    let answer = send(svc.clone(), with_peer("203.0.113.9:5555", Some("1.2.3.4"))).await;
    assert_eq!(answer.json()["sourceIp"], "203.0.113.9");
    assert_eq!(
        queued(&broker).source_ip,
        Some("203.0.113.9".parse().unwrap())
    );

    // Without any trusted proxy the header is never read either.
    let plain = IngestService::new(broker.publisher());
    let answer = send(plain, with_peer("10.0.0.1:5555", Some("1.2.3.4"))).await;
    assert_eq!(answer.json()["sourceIp"], "10.0.0.1");
    queued(&broker);
}

#[tokio::test]
async fn trusted_proxies_are_believed() {
    let broker = MemoryBroker::new(16);
    let nets = ["10.0.0.0/8".parse().unwrap()];
    let svc = IngestService::new(broker.publisher()).trusted_proxies(nets);

    let answer = send(
        svc.clone(),
        with_peer("10.1.2.3:5555", Some("203.0.113.50")),
    )
    .await;
    assert_eq!(answer.json()["sourceIp"], "203.0.113.50");
    assert_eq!(
        queued(&broker).source_ip,
        Some("203.0.113.50".parse().unwrap())
    );

    // A client-supplied entry left of the proxy-appended one is not believed.
    let answer = send(
        svc.clone(),
        with_peer("10.1.2.3:5555", Some("6.6.6.6, 198.51.100.1, 10.9.9.9")),
    )
    .await;
    assert_eq!(answer.json()["sourceIp"], "198.51.100.1");
    queued(&broker);

    // A trusted peer without forwarding headers is itself the client.
    let answer = send(svc.clone(), with_peer("10.1.2.3:5555", None)).await;
    assert_eq!(answer.json()["sourceIp"], "10.1.2.3");
    queued(&broker);

    // No peer known at all: no source ip, and forwarding headers are not trusted blindly.
    let req = Request::post(url("proxied"))
        .header("x-forwarded-for", "1.2.3.4")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = send(svc, req).await;
    assert_eq!(answer.json()["sourceIp"], Value::Null);
    assert_eq!(queued(&broker).source_ip, None);
}

#[tokio::test]
async fn request_id_becomes_the_correlation_id() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    let request_id = unique("req");
    let req = Request::post(url("correlated"))
        .header("x-request-id", request_id.as_str())
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(svc.clone(), req).await.status, StatusCode::ACCEPTED);
    let event = queued(&broker);
    assert_eq!(event.correlation_id, request_id);

    // Unusable ids (spaces, too long) fall back to the event id.
    for bad in ["has space".to_owned(), "x".repeat(201)] {
        let req = Request::post(url("correlated"))
            .header("x-request-id", bad.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let id = send(svc.clone(), req).await.json()["eventId"]
            .as_str()
            .unwrap()
            .to_owned();
        let event = queued(&broker);
        assert_eq!(event.correlation_id, id);
        assert_eq!(event.id.to_string(), id);
    }
}
