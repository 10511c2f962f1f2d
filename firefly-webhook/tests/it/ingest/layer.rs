//! IngestLayer.

use super::*;

/// An inner service with a distinctive answer, echoing the request path and body.
pub(super) async fn teapot(
    req: Request<axum::body::Body>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let mut res = Response::new(Full::new(Bytes::from(format!(
        "{} {} {}",
        parts.method,
        parts.uri.path(),
        String::from_utf8_lossy(&body)
    ))));
    *res.status_mut() = StatusCode::IM_A_TEAPOT;
    res.headers_mut().insert("x-inner", "yes".parse().unwrap());
    res.headers_mut()
        .append("x-inner", "twice".parse().unwrap());
    Ok(res)
}

fn axum_req(method: Method, uri: &str, body: &'static str) -> Request<axum::body::Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(axum::body::Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn layer_passes_other_requests_through_untouched() {
    let broker = MemoryBroker::new(16);
    let svc = IngestLayer::new(broker.publisher()).layer(tower::service_fn(teapot));

    for (method, path) in [
        (Method::POST, "/"),
        (Method::GET, "/api/v1/webhook"),
        (Method::POST, "/api/v1/webhook"),
        (Method::POST, "/api/v1/webhooks/github"),
        (Method::GET, "/api/v2/webhook/github"),
    ] {
        let res = svc
            .clone()
            .oneshot(axum_req(method.clone(), path, "payload"))
            .await
            .unwrap();
        let answer = into_answer(res).await;
        assert_eq!(answer.status, StatusCode::IM_A_TEAPOT, "{method} {path}");
        let inner: Vec<_> = answer.headers.get_all("x-inner").iter().collect();
        assert_eq!(inner, ["yes", "twice"]);
        assert_eq!(answer.body, format!("{method} {path} payload"));
    }

    // Under the prefix: ingest answers, the inner service never sees it.
    let res = svc
        .clone()
        .oneshot(axum_req(Method::POST, &url("github"), "{}"))
        .await
        .unwrap();
    let answer = into_answer(res).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert!(answer.headers.get("x-inner").is_none());
    let res = svc
        .oneshot(axum_req(Method::GET, &url("github"), ""))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(broker.len("github"), 1);
}

pub(super) fn app_routes() -> Router {
    Router::new().route("/", get(|| async { "home" })).route(
        "/api/v1/orders",
        post(|body: Bytes| async move { (StatusCode::CREATED, [("x-order", "1")], body) }),
    )
}

#[tokio::test]
async fn router_layer_wraps_routes_and_fallbacks() {
    let broker = MemoryBroker::new(16);
    let provider = unique("routerlayer");

    // Router::layer with axum's default fallback: unknown paths still get axum's empty 404,
    // and ingest paths (which match no route) reach the layer, so the default fallback is
    // wrapped too.
    let app = app_routes().layer(IngestLayer::new(broker.publisher()));
    let answer = into_answer(
        app.clone()
            .oneshot(axum_req(Method::GET, "/", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (answer.status, &answer.body[..]),
        (StatusCode::OK, &b"home"[..])
    );
    let answer = into_answer(
        app.clone()
            .oneshot(axum_req(Method::POST, "/api/v1/orders", "order-body"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.headers["x-order"], "1");
    assert_eq!(answer.body, "order-body");
    let answer = into_answer(
        app.clone()
            .oneshot(axum_req(Method::GET, "/nope", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(
        answer.body.is_empty(),
        "axum's own 404, not an ingest rejection"
    );
    // Method routing stays axum's: 405 from the app's route.
    let answer = into_answer(
        app.clone()
            .oneshot(axum_req(Method::GET, "/api/v1/orders", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    let answer = into_answer(
        app.oneshot(axum_req(Method::POST, &url(&provider), "{}"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(broker.len(&provider), 1);

    // A custom fallback is wrapped as well and still answers everything else.
    let app = app_routes()
        .fallback(|| async { (StatusCode::NOT_FOUND, "custom fallback") })
        .layer(IngestLayer::new(broker.publisher()));
    let answer = into_answer(
        app.clone()
            .oneshot(axum_req(Method::GET, "/nope", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (answer.status, &answer.body[..]),
        (StatusCode::NOT_FOUND, &b"custom fallback"[..])
    );
    let answer = into_answer(
        app.oneshot(axum_req(Method::POST, &url(&provider), "{}"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(broker.len(&provider), 2);
}

#[tokio::test]
async fn layer_around_a_whole_router() {
    let broker = MemoryBroker::new(16);
    let provider = unique("outer");
    let svc = IngestLayer::from_service(
        IngestService::new(broker.publisher()).providers([provider.as_str()]),
    )
    .layer(app_routes());
    let answer = into_answer(
        svc.clone()
            .oneshot(axum_req(Method::GET, "/", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (answer.status, &answer.body[..]),
        (StatusCode::OK, &b"home"[..])
    );
    let answer = into_answer(
        svc.clone()
            .oneshot(axum_req(Method::GET, "/nope", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.body.is_empty());
    let answer = into_answer(
        svc.clone()
            .oneshot(axum_req(Method::POST, &url("stranger"), "{}"))
            .await
            .unwrap(),
    )
    .await;
    assert_rejected(&answer, StatusCode::NOT_FOUND, "unknown_provider", false);
    let answer = into_answer(
        svc.oneshot(axum_req(Method::POST, &url(&provider), "{}"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(broker.len(&provider), 1);
}
