//! Slack's `X-Slack-Request-Timestamp` and `X-Slack-Signature: v0=…` with arbitrary bytes.
#![no_main]

use firefly_webhook::verify::Slack;
use firefly_webhook_fuzz::{check, headers, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 3);
    let verifier = Slack::new("slack-fuzz");
    let h = headers(&[
        ("x-slack-request-timestamp", parts[0]),
        ("x-slack-signature", parts[1]),
    ]);
    check(&verifier, parts[2], &h, None);
});
