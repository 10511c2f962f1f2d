//! Zendesk's `X-Zendesk-Webhook-Signature` and `X-Zendesk-Webhook-Signature-Timestamp`
//! (RFC 3339) with arbitrary bytes.
#![no_main]

use firefly_webhook::verify::Zendesk;
use firefly_webhook_fuzz::{check, headers, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 3);
    let h = headers(&[
        ("x-zendesk-webhook-signature", parts[0]),
        ("x-zendesk-webhook-signature-timestamp", parts[1]),
    ]);
    check(&Zendesk::new("zendesk-fuzz"), parts[2], &h, None);
});
