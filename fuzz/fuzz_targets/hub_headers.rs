//! The body-only `<prefix><encoded MAC>` headers of Meta (`X-Hub-Signature-256: sha256=<hex>`),
//! Bitbucket Cloud (`X-Hub-Signature: sha256=<hex>`) and Typeform
//! (`Typeform-Signature: sha256=<base64>`) with arbitrary bytes.
#![no_main]

use firefly_webhook::verify::{Bitbucket, Meta, Typeform};
use firefly_webhook_fuzz::{check, headers, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 2);
    let (value, body) = (parts[0], parts[1]);
    check(
        &Meta::new("meta-fuzz"),
        body,
        &headers(&[("x-hub-signature-256", value)]),
        None,
    );
    check(
        &Bitbucket::new("bitbucket-fuzz"),
        body,
        &headers(&[("x-hub-signature", value)]),
        None,
    );
    check(
        &Typeform::new("typeform-fuzz"),
        body,
        &headers(&[("typeform-signature", value)]),
        None,
    );
});
