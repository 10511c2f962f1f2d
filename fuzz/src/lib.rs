//! Shared helpers of the fuzz targets: turn fuzzer bytes into a request and check that a
//! verifier answers without panicking and never accepts what it cannot have been signed with.

use firefly_webhook::http::{HeaderMap, HeaderName, HeaderValue};
use firefly_webhook::verify::{SignatureVerifier, SignedRequest};
use time::OffsetDateTime;

/// The fixed "now" of every target, so timestamps near it reach the signature check.
pub const NOW: i64 = 1_700_000_000;

/// Splits `data` at the first `n - 1` newlines into `n` parts (missing parts are empty).
pub fn split(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = data.splitn(n, |&b| b == b'\n').collect();
    parts.resize(n, &[]);
    parts
}

/// Headers from `(name, raw value)` pairs; values that are not valid header bytes are left
/// out (a server would have refused them before the verifier ran).
pub fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            map.append(HeaderName::from_static(name), v);
        }
    }
    map
}

/// Runs the verifier; panics (a finding) if it accepts fuzzer input.
pub fn check(
    verifier: &dyn SignatureVerifier,
    body: &[u8],
    headers: &HeaderMap,
    target: Option<(&str, Option<&str>)>,
) {
    let now = OffsetDateTime::from_unix_timestamp(NOW).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut request = SignedRequest::new(body, headers).at(now);
    if let Some((path, query)) = target {
        request = request
            .public_url("https://hooks.example.com")
            .target(path, query);
    }
    let result = verifier.verify(&request);
    assert!(
        result.is_err(),
        "accepted unsigned fuzzer input: {result:?}"
    );
    // Every error has a code.
    if let Err(e) = result {
        assert!(!e.code().is_empty());
    }
}
