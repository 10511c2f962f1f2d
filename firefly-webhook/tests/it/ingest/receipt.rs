//! 202 and the receipt.

use super::*;

#[tokio::test]
async fn accepted_receipt_has_every_field() {
    let broker = MemoryBroker::new(16);
    let provider = unique("receipt");
    let svc = IngestService::new(broker.publisher());
    let mut req = Request::post(format!("{}?delivery=1", url(&provider)))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .body(Full::new(Bytes::from_static(br#"{"hello":"world"}"#)))
        .unwrap();
    req.extensions_mut()
        .insert(PeerAddr("198.51.100.20:4711".parse().unwrap()));
    let answer = send(svc, req).await;

    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
    let json = answer.json();
    let r = json.as_object().unwrap();
    assert_eq!(r["status"], "accepted");
    assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(r["provider"], provider.as_str());
    assert_eq!(r["destination"], provider.as_str());
    assert_eq!(r["sourceIp"], "198.51.100.20");
    assert_eq!(r["payloadSize"], 17);
    assert_eq!(r["headerCount"], 2);
    assert!(r["responseTimeMs"].as_f64().is_some_and(|ms| ms >= 0.0));
    // Milliseconds with three decimals, as written: `0.034`, never `0.03400000000000001`.
    let text = String::from_utf8_lossy(&answer.body);
    let ms = text
        .split_once(r#""responseTimeMs":"#)
        .and_then(|(_, rest)| rest.split([',', '}']).next())
        .unwrap();
    let (whole, fraction) = ms.split_once('.').unwrap();
    assert!(
        !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && fraction.len() == 3
            && fraction.bytes().all(|b| b.is_ascii_digit()),
        "{ms}"
    );
    assert!(!r.contains_key("receivedPayload"), "echo is off by default");
    let received = time::OffsetDateTime::parse(
        r["receivedAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let processed = time::OffsetDateTime::parse(
        r["processedAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(processed >= received);
    assert_eq!(r["storage"], "broker");
    assert_eq!(r.len(), 12, "exactly the documented fields: {json}");

    let event = queued(&broker);
    assert_eq!(event.id.to_string(), r["eventId"].as_str().unwrap());
    assert_eq!(event.id.as_uuid().get_version_num(), 7);
    assert_eq!(event.provider, provider);
    assert_eq!(event.method, Method::POST);
    assert_eq!(event.path, url(&provider));
    assert_eq!(event.query.as_deref(), Some("delivery=1"));
    assert_eq!(event.content_type.as_deref(), Some("application/json"));
    assert_eq!(event.header("x-github-event"), Some("push"));
    assert_eq!(event.source_ip, Some("198.51.100.20".parse().unwrap()));
    assert_eq!(event.received_at, received);
    assert_eq!(event.correlation_id, event.id.to_string());
    assert!(broker.is_empty());
}

#[tokio::test]
async fn echo_payload_is_opt_in_and_keeps_json() {
    let broker = MemoryBroker::new(16);
    let provider = unique("echo");
    let svc = IngestService::new(broker.publisher()).echo_payload(true);

    let json_body = br#"{"a": [1, 2, {"b": null}]}"#;
    let r = send(svc.clone(), post_req(&url(&provider), &json_body[..]))
        .await
        .json();
    assert_eq!(
        r["receivedPayload"],
        serde_json::json!({"a": [1, 2, {"b": null}]})
    );

    let r = send(svc.clone(), post_req(&url(&provider), "a=1&b=two+words"))
        .await
        .json();
    assert_eq!(r["receivedPayload"], "a=1&b=two+words");

    let r = send(
        svc.clone(),
        post_req(&url(&provider), vec![0xff, 0xfe, 0x00]),
    )
    .await
    .json();
    assert!(
        r.get("receivedPayload").is_none(),
        "binary bodies are not echoed"
    );

    let r = send(svc, post_req(&url(&provider), "")).await.json();
    assert_eq!(r["receivedPayload"], "");
    assert_eq!(broker.len(&provider), 4);
}

#[tokio::test]
async fn routing_and_custom_prefix_apply() {
    let broker = MemoryBroker::new(16);
    let provider = unique("routed");
    let svc = IngestService::new(broker.publisher())
        .prefix("/hooks/")
        .routing(Routing::provider().prefix("webhooks."));
    let answer = send(svc.clone(), post_req(&format!("/hooks/{provider}"), "{}")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let destination = format!("webhooks.{provider}");
    assert_eq!(answer.json()["destination"], destination.as_str());
    assert_eq!(broker.len(&destination), 1);

    // The default prefix no longer applies.
    let answer = send(svc, post_req(&url(&provider), "{}")).await;
    assert_rejected(&answer, StatusCode::NOT_FOUND, "not_found", false);
}

#[tokio::test]
async fn prefix_is_normalised() {
    let broker = MemoryBroker::new(16);
    let provider = unique("prefix");
    // No leading slash, extra trailing ones: still `/hooks/{provider}`.
    let svc = IngestService::new(broker.publisher()).prefix("hooks//");
    assert!(svc.matches(&format!("/hooks/{provider}")));
    assert!(!svc.matches("/hooks"));
    assert!(!svc.matches("/hooksx/a"));
    let answer = send(svc, post_req(&format!("/hooks/{provider}"), "{}")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);

    // "/" mounts providers at the root.
    let root = IngestService::new(broker.publisher()).prefix("/");
    let answer = send(root.clone(), post_req(&format!("/{provider}"), "{}")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let answer = send(root, post_req("/a/b", "{}")).await;
    assert_rejected(&answer, StatusCode::BAD_REQUEST, "invalid_provider", false);
    assert_eq!(broker.len(&provider), 2);
}
