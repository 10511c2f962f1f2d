//! Twilio: arbitrary query (incl. `bodySHA256`), signature and form body.
#![no_main]

use firefly_webhook::verify::Twilio;
use firefly_webhook_fuzz::{check, headers, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 3);
    let Ok(query) = std::str::from_utf8(parts[0]) else {
        return;
    };
    let verifier = Twilio::new("twilio-fuzz");
    let h = headers(&[("x-twilio-signature", parts[1])]);
    let query = (!query.is_empty()).then_some(query);
    check(
        &verifier,
        parts[2],
        &h,
        Some(("/api/v1/webhook/twilio", query)),
    );
});
