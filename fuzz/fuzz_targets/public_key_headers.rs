//! The public-key schemes' headers with arbitrary bytes: Discord (`X-Signature-Ed25519` hex,
//! `X-Signature-Timestamp`), Telnyx (`telnyx-signature-ed25519` base64, `telnyx-timestamp`),
//! SendGrid (base64 DER ECDSA signature and timestamp) and Standard Webhooks `v1a` lists checked
//! with a `whpk_` key beside a `whsec_` one.
#![no_main]

use firefly_webhook::verify::{Discord, SecretSet, SendGrid, StandardWebhooks, Telnyx};
use firefly_webhook_fuzz::{check, headers, split};
use libfuzzer_sys::fuzz_target;

// Public keys of fixed test seeds: nothing the fuzzer can sign with.
const ED25519: &str = "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=";
const P256: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 4);
    let (signature, timestamp, id, body) = (parts[0], parts[1], parts[2], parts[3]);
    if let Ok(v) = Discord::new(ED25519) {
        let h = headers(&[
            ("x-signature-ed25519", signature),
            ("x-signature-timestamp", timestamp),
        ]);
        check(&v, body, &h, None);
    }
    if let Ok(v) = Telnyx::new(ED25519) {
        let h = headers(&[
            ("telnyx-signature-ed25519", signature),
            ("telnyx-timestamp", timestamp),
        ]);
        check(&v, body, &h, None);
    }
    if let Ok(v) = SendGrid::new(P256) {
        let h = headers(&[
            ("x-twilio-email-event-webhook-signature", signature),
            ("x-twilio-email-event-webhook-timestamp", timestamp),
        ]);
        check(&v, body, &h, None);
    }
    let keys = SecretSet::new(format!("whpk_{ED25519}")).with("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    if let Ok(v) = StandardWebhooks::new(keys) {
        let h = headers(&[
            ("webhook-id", id),
            ("webhook-timestamp", timestamp),
            ("webhook-signature", signature),
        ]);
        check(&v, body, &h, None);
    }
});
