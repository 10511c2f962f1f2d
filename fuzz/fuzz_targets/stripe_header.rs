//! `Stripe-Signature` parsing: `t=…,v1=…` with arbitrary bytes.
#![no_main]

use firefly_webhook::verify::Stripe;
use firefly_webhook_fuzz::{check, headers, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 2);
    let verifier = Stripe::new("whsec_fuzz");
    check(
        &verifier,
        parts[1],
        &headers(&[("stripe-signature", parts[0])]),
        None,
    );
});
