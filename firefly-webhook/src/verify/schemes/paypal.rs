//! PayPal's offline webhook signature check: RSA over transmission id, time, webhook id and
//! the CRC32 of the body, with a certificate from PayPal.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::Digest as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::certificate::{CertificateCache, HttpsFetcher, TrustedUrl};
use super::{BodyIds, check_window, non_empty};
use crate::BoxFuture;
use crate::verify::{
    ConfigError, SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError,
};

/// Whether `host` is one of PayPal's API hosts, live or sandbox.
fn is_paypal_host(host: &str) -> bool {
    matches!(
        host,
        "api.paypal.com"
            | "api-m.paypal.com"
            | "api.sandbox.paypal.com"
            | "api-m.sandbox.paypal.com"
    )
}

/// PayPal webhooks, checked offline ("Verify the signature yourself"):
/// `PAYPAL-TRANSMISSION-SIG` is the base64 RSA signature (`PAYPAL-AUTH-ALGO`
/// `SHA256withRSA`) of `"{transmission id}|{transmission time}|{webhook id}|{crc32}"`, where the
/// id and time are the `PAYPAL-TRANSMISSION-ID` and `PAYPAL-TRANSMISSION-TIME` headers, the
/// webhook id is the one configured (the id PayPal gave the webhook when it was registered) and
/// `crc32` is the CRC32 of the raw body in decimal. The certificate is fetched from
/// `PAYPAL-CERT-URL`, only from `https://api.paypal.com`, `api-m.paypal.com` or their sandbox
/// hosts (see the [`HttpsFetcher`](crate::verify::HttpsFetcher) for how fetches and the cache
/// work).
///
/// The configured "secrets" are **webhook ids**: several may be given (a live and a sandbox
/// one, or across a re-registration), and [`Verified::secret_index`] tells which matched.
/// PayPal documents no tolerance; none by default, [`tolerance`](Self::tolerance) checks
/// the transmission time.
/// See PayPal's "Webhooks: Verify signature" (offline verification):
/// <https://developer.paypal.com/api/rest/webhooks/rest/#link-selfverificationmethod>.
#[derive(Debug, Clone)]
pub struct PayPal {
    webhook_ids: SecretSet,
    certificates: Arc<CertificateCache>,
    tolerance: Option<Duration>,
}

impl PayPal {
    /// Accepts deliveries to these webhook ids, with certificates fetched by `fetcher`.
    pub fn new(
        webhook_ids: impl Into<SecretSet>,
        fetcher: Arc<dyn HttpsFetcher>,
    ) -> Result<Self, ConfigError> {
        let webhook_ids = webhook_ids.into();
        if let Some(index) = webhook_ids.iter().position(|id| {
            id.expose_secret().is_empty()
                || !id
                    .expose_secret()
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }) {
            return Err(ConfigError::InvalidSecret {
                index,
                reason: "not a PayPal webhook id: expected letters, digits and '-'",
            });
        }
        Ok(Self {
            webhook_ids,
            certificates: CertificateCache::new(fetcher),
            tolerance: None,
        })
    }

    /// Refuse deliveries whose transmission time is further than `tolerance` from the
    /// reference time.
    #[must_use]
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = Some(tolerance);
        self
    }
}

fn certificate_url(request: &SignedRequest<'_>) -> Result<TrustedUrl, VerifyError> {
    let url = request.require_header("paypal-cert-url")?;
    TrustedUrl::parse(url, is_paypal_host).ok_or(VerifyError::UntrustedCertificate)
}

impl SignatureVerifier for PayPal {
    fn prepare(&self, request: &SignedRequest<'_>) -> Option<BoxFuture<()>> {
        self.certificates.prepare(certificate_url(request).ok()?)
    }

    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let id = request.require_header("paypal-transmission-id")?;
        let time = request.require_header("paypal-transmission-time")?;
        let signature = request.require_header("paypal-transmission-sig")?;
        let algorithm = request.require_header("paypal-auth-algo")?;
        if algorithm != "SHA256withRSA" {
            return Err(VerifyError::MalformedSignature);
        }
        if signature.len() > 2048 {
            return Err(VerifyError::MalformedSignature);
        }
        let signature = STANDARD
            .decode(signature)
            .map_err(|_| VerifyError::MalformedSignature)?;
        let signed_at =
            OffsetDateTime::parse(time, &Rfc3339).map_err(|_| VerifyError::MalformedSignature)?;
        if let Some(tolerance) = self.tolerance {
            check_window(signed_at, request.now(), tolerance)?;
        }
        let certificate = self.certificates.get(&certificate_url(request)?)?;
        certificate.check_validity(request.now())?;
        let crc = crc32fast::hash(request.body()).to_string();
        self.webhook_ids
            .verify_with(request.now(), |webhook_id| {
                let hashed = sha2::Sha256::new()
                    .chain_update(id)
                    .chain_update("|")
                    .chain_update(time)
                    .chain_update("|")
                    .chain_update(webhook_id)
                    .chain_update("|")
                    .chain_update(&crc)
                    .finalize();
                certificate.verifies::<sha2::Sha256>(&hashed, &signature)
            })
            .map(|v| v.with_signed_at(signed_at))
    }

    /// The body's event `id` (`WH-…`), which PayPal keeps across retries; covered by the
    /// CRC32 in the signature.
    fn delivery_id<'a>(&self, request: &SignedRequest<'a>) -> Option<Cow<'a, str>> {
        non_empty(BodyIds::of(request.body()).id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::certificate::testing::{CERT_PEM, MapFetcher, OTHER_CERT_PEM, sign};
    use super::super::testing::{at, b64, headers};
    use super::*;
    use crate::verify::Secret;

    const CERT_URL: &str =
        "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-test";
    const WEBHOOK_ID: &str = "1JE4291016473214C";
    const TID: &str = "69cd13f0-d67a-11e5-baa3-778b53f4ae55";
    const TIME: &str = "2023-11-14T22:13:20Z";
    const TS: i64 = 1_700_000_000;
    const BODY: &[u8] =
        br#"{"id":"WH-2WR32451HC0233532-67976317FL4543714","event_type":"PAYMENT.SALE.COMPLETED"}"#;

    fn signed_headers(webhook_id: &str, body: &[u8], cert_url: &str) -> http::HeaderMap {
        let message = format!("{TID}|{TIME}|{webhook_id}|{}", crc32fast::hash(body));
        headers(&[
            ("paypal-transmission-id", TID),
            ("paypal-transmission-time", TIME),
            (
                "paypal-transmission-sig",
                &b64(&sign::<sha2::Sha256>(message.as_bytes())),
            ),
            ("paypal-cert-url", cert_url),
            ("paypal-auth-algo", "SHA256withRSA"),
        ])
    }

    fn fetcher(cert: &'static str) -> Arc<MapFetcher> {
        Arc::new(MapFetcher::default().with(CERT_URL, cert))
    }

    async fn check(
        v: &PayPal,
        body: &[u8],
        h: &http::HeaderMap,
        now: i64,
    ) -> Result<Verified, VerifyError> {
        let req = SignedRequest::new(body, h).at(at(now));
        if let Some(fetch) = v.prepare(&req) {
            fetch.await;
        }
        v.verify(&req)
    }

    #[tokio::test]
    async fn accepted_and_tampering_refused() {
        let f = fetcher(CERT_PEM);
        let v = PayPal::new(WEBHOOK_ID, f.clone()).unwrap();
        let h = signed_headers(WEBHOOK_ID, BODY, CERT_URL);
        let ok = check(&v, BODY, &h, TS).await.unwrap();
        assert_eq!(ok.signed_at().unwrap().unix_timestamp(), TS);
        assert!(
            check(&v, BODY, &h, TS + 86_400).await.is_ok(),
            "no tolerance by default"
        );
        assert_eq!(
            check(&v, br#"{"id":"WH-other"}"#, &h, TS).await,
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(f.calls().len(), 1, "one fetch, then the cache");
        let mut moved = h.clone();
        moved.insert(
            "paypal-transmission-time",
            "2023-11-14T22:13:21Z".parse().unwrap(),
        );
        assert_eq!(
            check(&v, BODY, &moved, TS).await,
            Err(VerifyError::InvalidSignature)
        );
        let other_hook = PayPal::new("9XY", f.clone()).unwrap();
        assert_eq!(
            check(&other_hook, BODY, &h, TS).await,
            Err(VerifyError::InvalidSignature)
        );
        let wrong_key = PayPal::new(WEBHOOK_ID, fetcher(OTHER_CERT_PEM)).unwrap();
        assert_eq!(
            check(&wrong_key, BODY, &h, TS).await,
            Err(VerifyError::InvalidSignature)
        );
        let h2 = SignedRequest::new(BODY, &h);
        assert_eq!(
            v.delivery_id(&h2).as_deref(),
            Some("WH-2WR32451HC0233532-67976317FL4543714")
        );
    }

    #[tokio::test]
    async fn malformed_missing_untrusted_and_stale() {
        let v = PayPal::new(WEBHOOK_ID, fetcher(CERT_PEM))
            .unwrap()
            .tolerance(Duration::from_secs(300));
        let h = signed_headers(WEBHOOK_ID, BODY, CERT_URL);
        assert_eq!(
            check(&v, BODY, &h, TS + 301).await,
            Err(VerifyError::TimestampOutOfTolerance)
        );
        for (name, value, code) in [
            (
                "paypal-auth-algo",
                "SHA1withRSA",
                VerifyError::MalformedSignature,
            ),
            (
                "paypal-transmission-sig",
                "@@",
                VerifyError::MalformedSignature,
            ),
            (
                "paypal-transmission-time",
                "yesterday",
                VerifyError::MalformedSignature,
            ),
            (
                "paypal-cert-url",
                "https://evil.example/cert",
                VerifyError::UntrustedCertificate,
            ),
            (
                "paypal-cert-url",
                "https://api.paypal.com.evil.example/cert",
                VerifyError::UntrustedCertificate,
            ),
            (
                "paypal-cert-url",
                "http://api.paypal.com/cert",
                VerifyError::UntrustedCertificate,
            ),
            (
                "paypal-cert-url",
                "https://api.sandbox.paypal.com/v1/notifications/certs/missing",
                VerifyError::CertificateUnavailable,
            ),
        ] {
            let mut bad = h.clone();
            bad.insert(name, value.parse().unwrap());
            assert_eq!(
                check(&v, BODY, &bad, TS).await,
                Err(code),
                "{name}: {value}"
            );
        }
        let mut missing = h.clone();
        missing.remove("paypal-transmission-id");
        assert_eq!(
            check(&v, BODY, &missing, TS).await,
            Err(VerifyError::MissingSignature)
        );
    }

    #[tokio::test]
    async fn webhook_ids_rotate() {
        let exp = at(TS + 10);
        let v = PayPal::new(
            SecretSet::new("NEW123").with(Secret::new(WEBHOOK_ID).label("old").expires_at(exp)),
            fetcher(CERT_PEM),
        )
        .unwrap();
        let h = signed_headers(WEBHOOK_ID, BODY, CERT_URL);
        assert_eq!(
            check(&v, BODY, &h, TS + 9).await.unwrap().secret_label(),
            Some("old")
        );
        assert_eq!(
            check(&v, BODY, &h, TS + 10).await,
            Err(VerifyError::InvalidSignature)
        );
        let h = signed_headers("NEW123", BODY, CERT_URL);
        assert_eq!(
            check(&v, BODY, &h, TS + 10).await.unwrap().secret_index(),
            0
        );
        assert!(matches!(
            PayPal::new("has space", fetcher(CERT_PEM)),
            Err(ConfigError::InvalidSecret { index: 0, .. })
        ));
    }

    /// Python (`zlib.crc32`, `cryptography`) signs as PayPal's offline verification describes;
    /// we verify.
    #[tokio::test]
    #[ignore = "needs python3 with cryptography; run scripts/test"]
    async fn python_signed_delivery_verifies() {
        const SCRIPT: &str = "\
import sys, zlib, base64
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
key = serialization.load_pem_private_key(open(sys.argv[1], 'rb').read(), None)
tid, time, webhook_id, body = sys.argv[2:6]
message = f'{tid}|{time}|{webhook_id}|{zlib.crc32(body.encode())}'
print(base64.b64encode(key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())).decode())
";
        let key = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/signing-key.pem"
        );
        let body = std::str::from_utf8(BODY).unwrap();
        let sig = super::super::testing::python(SCRIPT, &[key, TID, TIME, WEBHOOK_ID, body]);
        let mut h = signed_headers(WEBHOOK_ID, BODY, CERT_URL);
        h.insert("paypal-transmission-sig", sig.parse().unwrap());
        let v = PayPal::new(WEBHOOK_ID, fetcher(CERT_PEM)).unwrap();
        assert!(check(&v, BODY, &h, TS).await.is_ok());
        assert_eq!(
            check(&v, b"{}", &h, TS).await,
            Err(VerifyError::InvalidSignature)
        );
        let other = PayPal::new("OTHER1", fetcher(CERT_PEM)).unwrap();
        assert_eq!(
            check(&other, BODY, &h, TS).await,
            Err(VerifyError::InvalidSignature)
        );
    }
}
