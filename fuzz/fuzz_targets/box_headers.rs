//! Box: `box-signature-primary`, `box-signature-secondary`, `box-delivery-timestamp`
//! (RFC 3339), `box-signature-version` and `box-signature-algorithm` with arbitrary bytes.
#![no_main]

use firefly_webhook::verify::{BoxWebhooks, SecretSet};
use firefly_webhook_fuzz::{check, headers, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 6);
    let h = headers(&[
        ("box-signature-primary", parts[0]),
        ("box-signature-secondary", parts[1]),
        ("box-delivery-timestamp", parts[2]),
        ("box-signature-version", parts[3]),
        ("box-signature-algorithm", parts[4]),
    ]);
    let verifier = BoxWebhooks::new(SecretSet::new("box-primary").with("box-secondary"));
    check(&verifier, parts[5], &h, None);
});
