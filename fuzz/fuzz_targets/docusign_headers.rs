//! DocuSign Connect's `X-DocuSign-Signature-<n>` headers: arbitrary suffixes and values.
#![no_main]

use firefly_webhook::http::{HeaderMap, HeaderName, HeaderValue};
use firefly_webhook::verify::DocuSign;
use firefly_webhook_fuzz::{check, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Up to three `suffix value` lines, then the body.
    let parts = split(data, 4);
    let mut h = HeaderMap::new();
    for line in &parts[..3] {
        let mut fields = line.splitn(2, |&b| b == b' ');
        let suffix = fields.next().unwrap_or_default();
        let value = fields.next().unwrap_or_default();
        let name = [b"x-docusign-signature-".as_slice(), suffix].concat();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&name),
            HeaderValue::from_bytes(value),
        ) {
            h.append(name, value);
        }
    }
    check(&DocuSign::new("docusign-fuzz"), parts[3], &h, None);
});
