//! `Paddle-Signature` parsing: `ts=…;h1=…` with arbitrary bytes.
#![no_main]

use firefly_webhook::verify::Paddle;
use firefly_webhook_fuzz::{check, headers, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 2);
    let verifier = Paddle::new("pdl_ntfset_fuzz");
    check(
        &verifier,
        parts[1],
        &headers(&[("paddle-signature", parts[0])]),
        None,
    );
});
