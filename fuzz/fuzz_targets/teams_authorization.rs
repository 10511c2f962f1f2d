//! Microsoft Teams' `Authorization: HMAC <base64>` with arbitrary bytes.
#![no_main]

use firefly_webhook::verify::Teams;
use firefly_webhook_fuzz::{check, headers, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 2);
    let Ok(verifier) = Teams::new("vqF0En+Z0ucuRTM/01o2GuhMH3hKKk/N2bOmlM31zaA=") else {
        return;
    };
    check(
        &verifier,
        parts[1],
        &headers(&[("authorization", parts[0])]),
        None,
    );
});
