//! Mailgun's signature in the body: a JSON `signature` object or `timestamp` / `token` /
//! `signature` form fields, from arbitrary bytes.
#![no_main]

use firefly_webhook::http::HeaderMap;
use firefly_webhook::verify::{Mailgun, SignatureVerifier, SignedRequest};
use firefly_webhook_fuzz::check;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let verifier = Mailgun::new("mailgun-fuzz");
    let h = HeaderMap::new();
    check(&verifier, data, &h, None);
    let _ = verifier.delivery_id(&SignedRequest::new(data, &h));
});
