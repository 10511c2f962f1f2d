//! HubSpot v3: `X-HubSpot-Signature-v3`, `X-HubSpot-Request-Timestamp` (milliseconds), an
//! arbitrary method and query (decoded before signing), and the body.
#![no_main]

use firefly_webhook::verify::HubSpot;
use firefly_webhook_fuzz::{check, headers, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 4);
    let Ok(query) = std::str::from_utf8(parts[2]) else {
        return;
    };
    let h = headers(&[
        ("x-hubspot-signature-v3", parts[0]),
        ("x-hubspot-request-timestamp", parts[1]),
    ]);
    let query = (!query.is_empty()).then_some(query);
    check(
        &HubSpot::new("hubspot-fuzz"),
        parts[3],
        &h,
        Some(("/api/v1/webhook/hubspot", query)),
    );
});
