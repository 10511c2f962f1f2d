//! AWS SNS bodies (the JSON message, its signature fields and certificate URL) and PayPal's
//! transmission headers with arbitrary bytes. The fetcher serves nothing, so the parsers, the
//! string to sign and the certificate-host checks run; nothing may be accepted or panic.
#![no_main]

use std::sync::Arc;

use firefly_webhook::verify::{HttpsFetcher, PayPal, Sns, TrustedUrl};
use firefly_webhook::{BoxError, Bytes, async_trait};
use firefly_webhook_fuzz::{check, headers, split};
use libfuzzer_sys::fuzz_target;

struct Offline;

#[async_trait]
impl HttpsFetcher for Offline {
    async fn get(&self, _url: &TrustedUrl) -> Result<Bytes, BoxError> {
        Err("offline".into())
    }
}

fuzz_target!(|data: &[u8]| {
    let fetcher: Arc<dyn HttpsFetcher> = Arc::new(Offline);
    if let Ok(v) = Sns::new("arn:aws:sns:us-east-1:123456789012:orders", Arc::clone(&fetcher)) {
        check(&v, data, &headers(&[]), None);
    }
    let parts = split(data, 6);
    if let Ok(v) = PayPal::new("1JE4291016473214C", fetcher) {
        let h = headers(&[
            ("paypal-transmission-id", parts[0]),
            ("paypal-transmission-time", parts[1]),
            ("paypal-transmission-sig", parts[2]),
            ("paypal-cert-url", parts[3]),
            ("paypal-auth-algo", parts[4]),
        ]);
        check(&v, parts[5], &h, None);
    }
});
