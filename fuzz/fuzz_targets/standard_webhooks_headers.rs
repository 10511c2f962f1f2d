//! Standard Webhooks / Svix headers (`webhook-id`, `-timestamp`, space-separated
//! `-signature` list) with arbitrary bytes.
#![no_main]

use firefly_webhook::verify::StandardWebhooks;
use firefly_webhook_fuzz::{check, headers, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 4);
    let Ok(verifier) = StandardWebhooks::svix("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") else {
        return;
    };
    let h = headers(&[
        ("svix-id", parts[0]),
        ("webhook-timestamp", parts[1]),
        ("svix-signature", parts[2]),
    ]);
    check(&verifier, parts[3], &h, None);
});
