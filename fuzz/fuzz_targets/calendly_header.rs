//! `Calendly-Webhook-Signature: t=…,v1=…` with arbitrary bytes.
#![no_main]

use firefly_webhook::verify::Calendly;
use firefly_webhook_fuzz::{check, headers, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 2);
    check(
        &Calendly::new("calendly-fuzz"),
        parts[1],
        &headers(&[("calendly-webhook-signature", parts[0])]),
        None,
    );
});
