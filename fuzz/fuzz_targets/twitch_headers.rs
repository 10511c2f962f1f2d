//! Twitch EventSub's `Twitch-Eventsub-Message-Id`, `-Timestamp` (RFC 3339) and
//! `-Signature: sha256=…` with arbitrary bytes.
#![no_main]

use firefly_webhook::verify::{SignatureVerifier, SignedRequest, Twitch};
use firefly_webhook_fuzz::{check, headers, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 4);
    let verifier = Twitch::new("twitch-fuzz");
    let h = headers(&[
        ("twitch-eventsub-message-id", parts[0]),
        ("twitch-eventsub-message-timestamp", parts[1]),
        ("twitch-eventsub-message-signature", parts[2]),
    ]);
    check(&verifier, parts[3], &h, None);
    // The delivery id is read without verifying: it must not panic either.
    let _ = verifier.delivery_id(&SignedRequest::new(parts[3], &h));
});
