//! 400 / 404 / 405.

use super::*;

#[tokio::test]
async fn invalid_provider_names_get_400() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    let too_long = "a".repeat(65);
    for provider in [
        "..",
        ".",
        "%2E%2E",
        "a%2Fb",
        "%2F",
        "..%2Fadmin",
        "sp%20ace",
        too_long.as_str(),
        "",
        "a/b",
        "../admin",
        "caf%C3%A9",
        "a:b",
        "a+b",
        "github//",
    ] {
        let answer = send(svc.clone(), post_req(&url(provider), "{}")).await;
        let json = assert_rejected(&answer, StatusCode::BAD_REQUEST, "invalid_provider", false);
        assert!(
            json["message"].as_str().unwrap().contains("1-64"),
            "{provider:?}"
        );
    }
    let longest = "a".repeat(64);
    let answer = send(svc.clone(), post_req(&url(&longest), "{}")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    // One trailing slash is tolerated.
    let answer = send(svc, post_req(&format!("{}/", url("trailing")), "{}")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.json()["provider"], "trailing");
    assert_eq!(broker.len(&longest), 1);
    assert_eq!(broker.len("trailing"), 1);
    assert_eq!(broker.len(".."), 0);
}

#[tokio::test]
async fn uppercase_provider_is_normalised() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher()).providers(["GitHub"]);
    let answer = send(svc, post_req(&url("GitHub"), "{}")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let json = answer.json();
    assert_eq!(json["provider"], "github");
    assert_eq!(json["destination"], "github");
    let event = queued(&broker);
    assert_eq!(event.provider, "github");
    assert_eq!(event.path, url("GitHub"), "the path is kept as received");
}

#[tokio::test]
async fn outside_the_prefix_is_404() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    for path in [
        "/",
        "/api/v1/webhooks/github",
        "/api/v1/webhookgithub",
        "/api/v1/webhook",
        "/API/v1/webhook/github",
        "/other/api/v1/webhook/github",
    ] {
        let answer = send(svc.clone(), post_req(path, "{}")).await;
        assert_rejected(&answer, StatusCode::NOT_FOUND, "not_found", false);
    }
    assert!(broker.is_empty());
}

#[tokio::test]
async fn unknown_provider_with_allowlist_is_404() {
    let broker = MemoryBroker::new(16);
    let allowed = unique("allowed");
    let other = unique("other");
    let svc = IngestService::new(broker.publisher()).providers([allowed.as_str()]);
    let answer = send(svc.clone(), post_req(&url(&other), "{}")).await;
    let json = assert_rejected(&answer, StatusCode::NOT_FOUND, "unknown_provider", false);
    assert!(json["message"].as_str().unwrap().contains(&other));
    let answer = send(svc, post_req(&url(&allowed), "{}")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(broker.len(&other), 0);
    assert_eq!(broker.len(&allowed), 1);
}

#[tokio::test]
async fn non_post_is_405_with_allow() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    for method in [
        Method::GET,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
    ] {
        let req = Request::builder()
            .method(method.clone())
            .uri(url("github"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = send(svc.clone(), req).await;
        assert_rejected(
            &answer,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            false,
        );
        assert_eq!(answer.headers[header::ALLOW], "POST", "{method}");
    }
    assert!(broker.is_empty());
}
