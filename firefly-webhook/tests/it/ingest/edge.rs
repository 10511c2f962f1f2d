//! Protections decided before the body is read, reserved names, credentials and IP allowlists.

use std::num::NonZeroU32;
use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine as _;
use firefly_webhook::ingest::is_reserved_destination;
use firefly_webhook::verify::{ApiKey, Basic, GitHub, GitLab, Verifiers};
use http::HeaderName;
use ipnet::IpNet;

use super::*;

/// A body that must never be read: polling it panics.
pub(crate) struct Untouchable;

impl Body for Untouchable {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        panic!("the body of a request refused before reading was polled")
    }
}

pub(crate) fn untouchable(uri: &str, peer: &str) -> Request<Untouchable> {
    let mut req = Request::post(uri).body(Untouchable).unwrap();
    req.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
    req
}

pub(crate) fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// The answer, which must be ready at the first poll: decided without waiting for anything.
fn answer_now<B>(svc: IngestService, req: Request<B>) -> Answer
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<firefly_webhook::BoxError>,
{
    let res = svc
        .oneshot(req)
        .now_or_never()
        .expect("answered without waiting")
        .unwrap();
    into_answer(res).now_or_never().unwrap()
}

#[tokio::test]
async fn refusals_before_reading_never_poll_the_body() {
    let broker = MemoryBroker::new(16);
    let base = || IngestService::new(broker.publisher());
    let peer = "203.0.113.9:4000";
    let github = unique("gh");

    // Unknown to the allowlist.
    let svc = base().providers([github.as_str()]);
    let answer = answer_now(svc, untouchable(&url(&unique("stranger")), peer));
    assert_rejected(&answer, StatusCode::NOT_FOUND, "unknown_provider", false);

    // Verification required and no verifier: found before the body, as it used to be after.
    let verifiers = Verifiers::new()
        .provider(&github, GitHub::new("s"))
        .require_verification(true);
    let svc = base().verifiers(verifiers);
    let answer = answer_now(svc, untouchable(&url(&unique("stranger")), peer));
    assert_rejected(&answer, StatusCode::UNAUTHORIZED, "unknown_provider", true);

    // A reserved name.
    let answer = answer_now(base(), untouchable(&url("orders.dlq"), peer));
    assert_rejected(
        &answer,
        StatusCode::BAD_REQUEST,
        "reserved_destination",
        false,
    );

    // Outside the provider's IP allowlist.
    let svc = base().allow_ips(&github, nets(&["192.0.2.0/24"]));
    let answer = answer_now(svc, untouchable(&url(&github), peer));
    assert_rejected(&answer, StatusCode::FORBIDDEN, "ip_not_allowed", false);

    // Rate limited, per IP and per provider.
    for svc in [
        base().rate_limit_per_ip(nz(1), nz(1)),
        base().rate_limit_per_provider(nz(1), nz(1)),
    ] {
        assert_eq!(
            send(svc.clone(), with_peer(&url(&github), peer, None))
                .await
                .status,
            StatusCode::ACCEPTED
        );
        let answer = answer_now(svc, untouchable(&url(&github), peer));
        assert_rejected(
            &answer,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            false,
        );
        queued(&broker);
    }

    // Over the in-flight cap, and over the body budget by the declared length.
    let answer = answer_now(base().max_in_flight(0), untouchable(&url(&github), peer));
    assert_rejected(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        false,
    );
    let mut req = untouchable(&url(&github), peer);
    req.headers_mut()
        .insert(header::CONTENT_LENGTH, "1000".parse().unwrap());
    let answer = answer_now(base().body_budget(999), req);
    assert_rejected(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        false,
    );

    assert!(broker.is_empty());
}

pub(crate) fn with_peer(uri: &str, peer: &str, xff: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::post(uri);
    if let Some(xff) = xff {
        b = b.header("x-forwarded-for", xff);
    }
    let mut req = b.body(Full::new(Bytes::from_static(b"{}"))).unwrap();
    req.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
    req
}

// ---------------------------------------------------------------------------------------------
// reserved names

#[tokio::test]
async fn reserved_provider_names_are_400_before_reading() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    for provider in [
        "orders.dlq",
        "ORDERS.DLQ",
        "orders.retry.5s",
        "github.retry.1m",
        "__consumer_offsets",
        "_internal",
    ] {
        let (body, pulled) = counting_stream(1);
        let req = Request::post(url(provider)).body(body).unwrap();
        let answer = send(svc.clone(), req).await;
        let json = assert_rejected(
            &answer,
            StatusCode::BAD_REQUEST,
            "reserved_destination",
            false,
        );
        let normalised = provider.to_ascii_lowercase();
        assert!(
            json["message"].as_str().unwrap().contains(&normalised),
            "{json}"
        );
        assert_eq!(pulled.load(Ordering::SeqCst), 0, "{provider}");
    }
    // Near misses are ordinary names.
    for provider in [
        "dlq",
        "orders.dlq-archive",
        "retry.orders",
        "orders.retry",
        "a_b",
    ] {
        let answer = send(svc.clone(), post_req(&url(provider), "{}")).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{provider}");
        assert_eq!(broker.len(provider), 1);
    }
    assert!(!is_reserved_destination("github"));
}

#[tokio::test]
async fn reserved_routed_destinations_are_never_published() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher()).routing(
        Routing::provider()
            .map([("gh", "github.dlq"), ("retry", "orders.retry.30s")])
            .prefix(""),
    );
    for provider in ["gh", "retry"] {
        let answer = send(svc.clone(), post_req(&url(provider), "{}")).await;
        let json = assert_rejected(
            &answer,
            StatusCode::BAD_REQUEST,
            "reserved_destination",
            false,
        );
        // The client is told about its provider, not about the topology behind it.
        let message = json["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{provider}`")), "{json}");
        assert!(
            !message.contains(".dlq") && !message.contains(".retry."),
            "{json}"
        );
    }
    let custom =
        IngestService::new(broker.publisher()).routing(Routing::custom(|e: &WebhookEvent| {
            format!("_{}", e.provider)
        }));
    let answer = send(custom, post_req(&url("github"), "{}")).await;
    assert_rejected(
        &answer,
        StatusCode::BAD_REQUEST,
        "reserved_destination",
        false,
    );
    assert!(broker.is_empty());

    // A prefix keeps `_`-names out of the reserved range only when it comes first.
    let prefixed =
        IngestService::new(broker.publisher()).routing(Routing::provider().prefix("webhooks."));
    let answer = send(prefixed, post_req(&url("github"), "{}")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(broker.len("webhooks.github"), 1);
}

// ---------------------------------------------------------------------------------------------
// credentials

fn basic(credentials: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

async fn post_with(
    svc: &IngestService,
    provider: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> Answer {
    let mut req = Request::post(url(provider)).header("x-kept", "yes");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(
        svc.clone(),
        req.body(Full::new(Bytes::from_static(body))).unwrap(),
    )
    .await
}

#[tokio::test]
async fn shared_secrets_are_not_published() {
    let broker = MemoryBroker::new(16);
    let (basic_p, key_p, bearer_p, gitlab_p, github_p) = (
        unique("basic"),
        unique("key"),
        unique("bearer"),
        unique("gitlab"),
        unique("github"),
    );
    let verifiers = Verifiers::new()
        .provider(&basic_p, Basic::new("hook:pa55"))
        .provider(&key_p, ApiKey::new("k-123"))
        .provider(
            &bearer_p,
            ApiKey::new("k-456")
                .header(http::header::AUTHORIZATION)
                .prefix("Bearer "),
        )
        .provider(&gitlab_p, GitLab::new("tok"))
        .provider(&github_p, GitHub::new("It's a Secret to Everybody"));
    let svc = IngestService::new(broker.publisher()).verifiers(verifiers.clone());

    let basic_auth = basic("hook:pa55");
    for (provider, header) in [
        (&basic_p, ("authorization", basic_auth.as_str())),
        (&key_p, ("x-api-key", "k-123")),
        (&bearer_p, ("authorization", "Bearer k-456")),
        (&gitlab_p, ("x-gitlab-token", "tok")),
    ] {
        let answer = post_with(&svc, provider, &[header], b"{}").await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{provider}");
        let event = queued(&broker);
        assert_eq!(&event.provider, provider);
        assert!(!event.headers.contains_key(header.0), "{provider}");
        assert_eq!(event.headers["x-kept"], "yes");
        assert_eq!(answer.json()["headerCount"], event.header_count());
    }

    // A signature reveals no secret: it stays, and the worker can check it again.
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let answer = post_with(
        &svc,
        &github_p,
        &[("x-hub-signature-256", sig)],
        b"Hello, World!",
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let event = queued(&broker);
    assert_eq!(event.headers["x-hub-signature-256"], sig);
    assert!(verifiers.verify_event(&event).unwrap().is_some());

    // A refused request publishes nothing, credentials or not.
    let answer = post_with(&svc, &key_p, &[("x-api-key", "wrong")], b"{}").await;
    assert_rejected(&answer, StatusCode::UNAUTHORIZED, "invalid_signature", true);
    assert!(broker.is_empty());

    // Opting out keeps them.
    let keeping = svc.clone().keep_credentials(true);
    let answer = post_with(&keeping, &basic_p, &[("authorization", &basic_auth)], b"{}").await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(
        queued(&broker).headers["authorization"],
        basic_auth.as_str()
    );

    // Unverified providers (no verifier, not required) keep all their headers.
    let plain = unique("plain");
    let answer = post_with(&svc, &plain, &[("authorization", "Bearer x")], b"{}").await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(queued(&broker).headers["authorization"], "Bearer x");
}

#[tokio::test]
async fn a_custom_api_key_header_is_removed() {
    let broker = MemoryBroker::new(16);
    let provider = unique("custom");
    let header = HeaderName::from_static("x-hook-secret");
    let verifiers =
        Verifiers::new().provider(&provider, ApiKey::new("s3cret").header(header.clone()));
    let svc = IngestService::new(broker.publisher()).verifiers(verifiers);
    let answer = post_with(&svc, &provider, &[("x-hook-secret", "s3cret")], b"{}").await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let event = queued(&broker);
    assert!(!event.headers.contains_key(&header));
    assert_eq!(event.headers["x-kept"], "yes");
}

// ---------------------------------------------------------------------------------------------
// IP allowlists

#[tokio::test]
async fn ip_allowlist_applies_to_its_provider_only() {
    let broker = MemoryBroker::new(16);
    let github = unique("github");
    let other = unique("other");
    let svc = IngestService::new(broker.publisher()).allow_ips(
        &github.to_ascii_uppercase(),
        nets(&["192.30.252.0/22", "2001:db8::/32"]),
    );

    let outside = send(
        svc.clone(),
        with_peer(&url(&github), "203.0.113.9:4000", None),
    )
    .await;
    let json = assert_rejected(&outside, StatusCode::FORBIDDEN, "ip_not_allowed", false);
    assert!(!json["message"].as_str().unwrap().contains("203.0.113.9"));

    for inside in [
        "192.30.253.1:4000",
        "[2001:db8::7]:4000",
        "[::ffff:192.30.252.9]:4000",
    ] {
        let answer = send(svc.clone(), with_peer(&url(&github), inside, None)).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{inside}");
        queued(&broker);
    }

    // Other providers are unaffected.
    let answer = send(
        svc.clone(),
        with_peer(&url(&other), "203.0.113.9:4000", None),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    queued(&broker);

    // No known client address: refused rather than guessed.
    let answer = send(svc, post_req(&url(&github), "{}")).await;
    assert_rejected(&answer, StatusCode::FORBIDDEN, "ip_not_allowed", false);
    assert!(broker.is_empty());
}

#[tokio::test]
async fn ip_allowlist_believes_only_trusted_proxies() {
    let broker = MemoryBroker::new(16);
    let github = unique("github");
    let base =
        IngestService::new(broker.publisher()).allow_ips(&github, nets(&["192.30.252.0/22"]));

    // Without trusted proxies, a forwarded address claiming to be inside changes nothing.
    let answer = send(
        base.clone(),
        with_peer(&url(&github), "203.0.113.9:4000", Some("192.30.252.1")),
    )
    .await;
    assert_rejected(&answer, StatusCode::FORBIDDEN, "ip_not_allowed", false);
    // ... nor does one claiming to be outside, from an allowed peer.
    let answer = send(
        base.clone(),
        with_peer(&url(&github), "192.30.252.1:4000", Some("203.0.113.9")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    queued(&broker);

    // With a trusted proxy: an untrusted peer still cannot spoof ...
    let proxied = base.trusted_proxies(nets(&["10.0.0.0/8"]));
    let answer = send(
        proxied.clone(),
        with_peer(&url(&github), "203.0.113.9:4000", Some("192.30.252.1")),
    )
    .await;
    assert_rejected(&answer, StatusCode::FORBIDDEN, "ip_not_allowed", false);
    // ... while the proxy's forwarded address is the one checked, both ways.
    let answer = send(
        proxied.clone(),
        with_peer(&url(&github), "10.0.0.2:4000", Some("192.30.252.1")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(
        queued(&broker).source_ip,
        Some("192.30.252.1".parse().unwrap())
    );
    let answer = send(
        proxied.clone(),
        with_peer(
            &url(&github),
            "10.0.0.2:4000",
            Some("192.30.252.1, 203.0.113.9"),
        ),
    )
    .await;
    assert_rejected(&answer, StatusCode::FORBIDDEN, "ip_not_allowed", false);
    assert!(broker.is_empty());
}

// ---------------------------------------------------------------------------------------------
// metrics

#[test]
fn rejections_are_counted_with_bounded_provider_labels() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let broker = MemoryBroker::new(16);
            let svc = IngestService::new(broker.publisher())
                .providers(["github", "orders.dlq"])
                .verifiers(Verifiers::new().provider("gitlab", GitLab::new("tok")))
                .rate_limit_per_provider(nz(1), nz(1));
            // Allowlisted: its own label.
            assert_eq!(
                send(svc.clone(), post_req(&url("github"), "{}"))
                    .await
                    .status,
                StatusCode::ACCEPTED
            );
            let answer = send(svc.clone(), post_req(&url("github"), "{}")).await;
            assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
            // Configured with a verifier (though not allowlisted, so refused): its own label.
            let answer = send(svc.clone(), post_req(&url("gitlab"), "{}")).await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND);
            // Anything a client makes up: "other".
            for provider in [unique("a"), unique("b")] {
                let answer = send(svc.clone(), post_req(&url(&provider), "{}")).await;
                assert_eq!(answer.status, StatusCode::NOT_FOUND);
            }
            let answer = send(svc.clone(), post_req("/nowhere", "{}")).await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND);
            let answer = send(svc, post_req(&url("orders.dlq"), "{}")).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        });
    });
    let mut counted: Vec<(String, String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == firefly_webhook::metric::INGEST_REJECTED_TOTAL)
        .map(|(key, _, _, value)| {
            let label = |name: &str| {
                key.key()
                    .labels()
                    .find(|l| l.key() == name)
                    .unwrap()
                    .value()
                    .to_owned()
            };
            let DebugValue::Counter(n) = value else {
                panic!("not a counter")
            };
            (label("provider"), label("code"), n)
        })
        .collect();
    counted.sort();
    let expect = |p: &str, c: &str, n| (p.to_owned(), c.to_owned(), n);
    assert_eq!(
        counted,
        [
            expect("github", "rate_limited", 1),
            expect("gitlab", "unknown_provider", 1),
            expect("orders.dlq", "reserved_destination", 1),
            expect("other", "not_found", 1),
            expect("other", "unknown_provider", 2),
        ]
    );
}
