//! Every endpoint handshake's recognition and answer with an arbitrary query, header and body:
//! never a panic, and an echoed challenge is always bounded and free of control characters.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use firefly_webhook::WebhookEvent;
use firefly_webhook::http::{HeaderValue, Method};
use firefly_webhook::verify::{
    CloudEventsOrigin, DiscordPing, DropboxChallenge, GraphValidation, Handshake,
    MAX_CHALLENGE_LEN, MetaVerifyToken, OktaVerification, SlackUrlVerification,
    TwitchCallbackVerification, XCrc, ZoomUrlValidation,
};
use firefly_webhook_fuzz::split;
use libfuzzer_sys::fuzz_target;

/// These handshakes answer without waiting on anything: one poll completes them.
fn now<F: Future>(future: F) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 3);
    let handshakes: [&dyn Handshake; 11] = [
        &SlackUrlVerification,
        &ZoomUrlValidation::new("zoom-secret"),
        &MetaVerifyToken::new("verify-token"),
        &XCrc::new("consumer-secret"),
        &GraphValidation,
        &DropboxChallenge,
        &OktaVerification,
        &TwitchCallbackVerification,
        &DiscordPing,
        &CloudEventsOrigin::allow(["eventgrid.azure.net"]).rate(60),
        &CloudEventsOrigin::any(),
    ];
    for method in [Method::GET, Method::POST, Method::OPTIONS] {
        let mut event = WebhookEvent::new("fuzz", parts[2].to_vec());
        event.method = method;
        event.query = Some(String::from_utf8_lossy(parts[0]).into_owned());
        if let Ok(value) = HeaderValue::from_bytes(parts[1]) {
            for name in [
                "x-okta-verification-challenge",
                "twitch-eventsub-message-type",
                "webhook-request-origin",
            ] {
                event.headers.insert(name, value.clone());
            }
        }
        for handshake in handshakes {
            if !handshake.is_handshake(&event) {
                continue;
            }
            let Some(answer) = now(handshake.answer(&event)) else {
                panic!("a handshake without I/O did not answer at once");
            };
            if let Ok(response) = answer {
                assert!(response.body().len() <= 2 * MAX_CHALLENGE_LEN + 256);
            }
        }
    }
});
