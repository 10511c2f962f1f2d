//! Certificates fetched from a provider (AWS SNS, PayPal): the injectable [`HttpsFetcher`],
//! the host check ([`TrustedUrl`]) and the cache the synchronous verifiers read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsa::RsaPublicKey;
use rsa::pkcs8::DecodePublicKey as _;
use time::OffsetDateTime;
use x509_cert::der::{Decode as _, Encode as _};

use crate::verify::VerifyError;
use crate::{BoxError, BoxFuture};

/// How many certificates one verifier keeps.
pub const MAX_CACHED: usize = 64;

/// How long a failed fetch is remembered before the URL is tried again.
pub const RETRY_FAILED_AFTER: Duration = Duration::from_secs(30);

/// The largest certificate (chain) accepted from a fetch, in bytes.
const MAX_CERTIFICATE_BYTES: usize = 64 * 1024;

/// Fetches a URL over HTTPS for the schemes that need something from the provider: the
/// signing certificates of AWS SNS and PayPal, and SNS's `SubscribeURL` confirmation.
///
/// Only ever called with a [`TrustedUrl`] (https, a host of the provider's domain). The
/// implementation must verify the server's TLS certificate, bound the time and size of the
/// answer, and return an error for any status other than 200. Tests use an in-memory one.
///
/// # How a fetch fits a synchronous verifier
///
/// [`SignatureVerifier::verify`](crate::SignatureVerifier::verify) is synchronous, and a
/// certificate is a network fetch. So a scheme that needs one does it in two steps:
///
/// 1. [`SignatureVerifier::prepare`](crate::SignatureVerifier::prepare), which the ingest
///    service awaits before verifying (bounded by
///    [`PREPARE_TIMEOUT`](crate::verify::PREPARE_TIMEOUT)), reads the
///    certificate URL from the request, checks it ([`TrustedUrl`]: `https`, a host of the
///    provider's documented domain, no user info or port) and, when the cache does not hold it
///    yet, fetches and parses it into the verifier's cache;
/// 2. `verify` reads the cache only. A certificate that could not be had is
///    [`VerifyError::CertificateUnavailable`]; an untrusted URL, or a certificate that does not
///    parse or is outside its validity period, is [`VerifyError::UntrustedCertificate`].
///
/// Certificates are cached by URL (providers publish a new URL when they rotate), at most
/// [`MAX_CACHED`] of them; a failed fetch is not retried for [`RETRY_FAILED_AFTER`], so a
/// flood of requests naming a missing certificate costs one fetch, not one each. Trust comes
/// from the HTTPS connection to the provider's host: the fetcher must verify TLS certificates.
///
/// [`VerifyLayer`](crate::VerifyLayer) runs the prepare step too (same bound), so a worker
/// that re-verifies SNS or PayPal events with a cold cache fetches the certificate first.
#[crate::async_trait]
pub trait HttpsFetcher: Send + Sync + 'static {
    /// The body of a `GET` of `url`.
    async fn get(&self, url: &TrustedUrl) -> Result<Bytes, BoxError>;
}

#[crate::async_trait]
impl<F: HttpsFetcher + ?Sized> HttpsFetcher for Arc<F> {
    async fn get(&self, url: &TrustedUrl) -> Result<Bytes, BoxError> {
        (**self).get(url).await
    }
}

/// An `https` URL whose host passed a provider's host check: what an [`HttpsFetcher`] is
/// given.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TrustedUrl {
    url: String,
    host_end: usize,
}

impl TrustedUrl {
    const SCHEME: &'static str = "https://";

    /// `url` when it is `https://{host}/{path}` with no user info, port or fragment, and
    /// `host_ok(host)` (lower case) says yes.
    pub(crate) fn parse(url: &str, host_ok: impl Fn(&str) -> bool) -> Option<Self> {
        let rest = url.strip_prefix(Self::SCHEME)?;
        let host_len = rest.find('/')?;
        let host = &rest[..host_len];
        let clean = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
        if url.len() > 2048
            || host.is_empty()
            || !host.chars().all(clean)
            || url.contains(['#', '\\', ' '])
            || !url.is_ascii()
            || !host_ok(&host.to_ascii_lowercase())
        {
            return None;
        }
        Some(Self {
            url: url.to_owned(),
            host_end: Self::SCHEME.len() + host_len,
        })
    }

    /// The whole URL.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The host.
    pub fn host(&self) -> &str {
        &self.url[Self::SCHEME.len()..self.host_end]
    }

    /// The path and query, from the `/` after the host.
    pub fn path(&self) -> &str {
        &self.url[self.host_end..]
    }
}

impl std::fmt::Display for TrustedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// A parsed signing certificate: its RSA key and validity period.
#[derive(Debug)]
pub(crate) struct Certificate {
    key: RsaPublicKey,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl Certificate {
    /// The first certificate of a PEM chain (PEM or DER), which must hold an RSA key.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_CERTIFICATE_BYTES {
            return None;
        }
        let cert = match x509_cert::Certificate::load_pem_chain(bytes) {
            Ok(chain) => chain.into_iter().next()?,
            Err(_) => x509_cert::Certificate::from_der(bytes).ok()?,
        };
        let tbs = &cert.tbs_certificate;
        let spki = tbs.subject_public_key_info.to_der().ok()?;
        let key = RsaPublicKey::from_public_key_der(&spki).ok()?;
        let at = |t: x509_cert::time::Time| {
            let secs = i64::try_from(t.to_unix_duration().as_secs()).ok()?;
            OffsetDateTime::from_unix_timestamp(secs).ok()
        };
        Some(Self {
            key,
            not_before: at(tbs.validity.not_before)?,
            not_after: at(tbs.validity.not_after)?,
        })
    }

    /// Whether `signature` is an RSA PKCS#1 v1.5 signature of `hashed` (a digest of `D`).
    pub(crate) fn verifies<D>(&self, hashed: &[u8], signature: &[u8]) -> bool
    where
        D: rsa::sha2::digest::Digest + rsa::pkcs8::AssociatedOid,
    {
        self.key
            .verify(rsa::Pkcs1v15Sign::new::<D>(), hashed, signature)
            .is_ok()
    }

    /// [`VerifyError::UntrustedCertificate`] outside the validity period.
    pub(crate) fn check_validity(&self, now: OffsetDateTime) -> Result<(), VerifyError> {
        if now < self.not_before || now > self.not_after {
            return Err(VerifyError::UntrustedCertificate);
        }
        Ok(())
    }
}

enum Slot {
    Ready(Arc<Certificate>),
    Failed { at: Instant, untrusted: bool },
}

/// The certificates of one verifier, by URL, and the fetcher that fills it.
pub(crate) struct CertificateCache {
    fetcher: Arc<dyn HttpsFetcher>,
    slots: Mutex<HashMap<String, Slot>>,
}

impl std::fmt::Debug for CertificateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cached = self.slots.lock().map_or(0, |s| s.len());
        f.debug_struct("CertificateCache")
            .field("cached", &cached)
            .finish_non_exhaustive()
    }
}

impl CertificateCache {
    pub(crate) fn new(fetcher: Arc<dyn HttpsFetcher>) -> Arc<Self> {
        Arc::new(Self {
            fetcher,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// The cached certificate of `url`: [`VerifyError::CertificateUnavailable`] when it was
    /// not fetched (or the fetch failed), [`VerifyError::UntrustedCertificate`] when what was
    /// fetched is not a usable certificate.
    pub(crate) fn get(&self, url: &TrustedUrl) -> Result<Arc<Certificate>, VerifyError> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        match slots.get(url.as_str()) {
            Some(Slot::Ready(cert)) => Ok(Arc::clone(cert)),
            Some(Slot::Failed {
                untrusted: true, ..
            }) => Err(VerifyError::UntrustedCertificate),
            Some(Slot::Failed { .. }) | None => Err(VerifyError::CertificateUnavailable),
        }
    }

    /// A fetch of `url` into the cache, unless it is cached or failed recently.
    pub(crate) fn prepare(self: &Arc<Self>, url: TrustedUrl) -> Option<BoxFuture<()>> {
        {
            let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            match slots.get(url.as_str()) {
                Some(Slot::Ready(_)) => return None,
                Some(Slot::Failed { at, .. }) if at.elapsed() < RETRY_FAILED_AFTER => {
                    return None;
                }
                _ => {}
            }
        }
        let this = Arc::clone(self);
        Some(Box::pin(async move {
            let slot = match this.fetcher.get(&url).await {
                Ok(bytes) => {
                    if let Some(cert) = Certificate::parse(&bytes) {
                        Slot::Ready(Arc::new(cert))
                    } else {
                        tracing::warn!(url = %url, "the fetched signing certificate does not parse");
                        Slot::Failed {
                            at: Instant::now(),
                            untrusted: true,
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(url = %url, %error, "signing certificate fetch failed");
                    Slot::Failed {
                        at: Instant::now(),
                        untrusted: false,
                    }
                }
            };
            this.insert(url.url, slot);
        }))
    }

    fn insert(&self, url: String, slot: Slot) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.len() >= MAX_CACHED && !slots.contains_key(&url) {
            slots.retain(|_, s| matches!(s, Slot::Ready(_)));
            if slots.len() >= MAX_CACHED {
                slots.clear();
            }
        }
        slots.insert(url, slot);
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! An in-memory fetcher and the checked-in test certificates.

    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    /// A test RSA-2048 key and a self-signed certificate for it, valid 2020-01-01 to
    /// 2050-01-01. Made once with Python's `cryptography` (see
    /// `tests/fixtures/README.md` for the script); for tests only.
    pub(crate) const KEY_PEM: &str = include_str!("../../../tests/fixtures/signing-key.pem");
    /// The certificate of [`KEY_PEM`].
    pub(crate) const CERT_PEM: &str = include_str!("../../../tests/fixtures/signing-cert.pem");
    /// Another key's certificate, same validity.
    pub(crate) const OTHER_CERT_PEM: &str = include_str!("../../../tests/fixtures/other-cert.pem");

    /// Answers from a map of URL to body; counts calls.
    #[derive(Default)]
    pub(crate) struct MapFetcher {
        pub(crate) bodies: HashMap<String, Bytes>,
        pub(crate) calls: Mutex<Vec<String>>,
    }

    impl MapFetcher {
        pub(crate) fn with(mut self, url: &str, body: impl Into<Bytes>) -> Self {
            self.bodies.insert(url.to_owned(), body.into());
            self
        }

        pub(crate) fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[crate::async_trait]
    impl HttpsFetcher for MapFetcher {
        async fn get(&self, url: &TrustedUrl) -> Result<Bytes, BoxError> {
            self.calls.lock().unwrap().push(url.as_str().to_owned());
            self.bodies
                .get(url.as_str())
                .cloned()
                .ok_or_else(|| "404 not found".into())
        }
    }

    pub(crate) fn signing_key() -> rsa::RsaPrivateKey {
        use rsa::pkcs8::DecodePrivateKey as _;
        rsa::RsaPrivateKey::from_pkcs8_pem(KEY_PEM).unwrap()
    }

    /// RSA PKCS#1 v1.5 signature of `message` with the test key, over digest `D`.
    pub(crate) fn sign<D>(message: &[u8]) -> Vec<u8>
    where
        D: rsa::sha2::digest::Digest + rsa::pkcs8::AssociatedOid,
    {
        let hashed = D::digest(message);
        signing_key()
            .sign(rsa::Pkcs1v15Sign::new::<D>(), &hashed)
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn aws(host: &str) -> bool {
        host.ends_with(".amazonaws.com")
    }

    #[test]
    fn urls_must_be_https_on_an_allowed_host() {
        let ok = TrustedUrl::parse("https://sns.us-east-1.amazonaws.com/cert.pem", aws).unwrap();
        assert_eq!(ok.host(), "sns.us-east-1.amazonaws.com");
        assert_eq!(ok.path(), "/cert.pem");
        for bad in [
            "http://sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/cert.pem",
            "https://user@sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
            "https://sns.us-east-1.amazonaws.com",
            "https://sns.us-east-1.amazonaws.com\\@evil.example/x",
            "https://sns.us-east-1.amazonaws.com/x#frag",
            "https://snś.amazonaws.com/x",
            "",
        ] {
            assert!(TrustedUrl::parse(bad, aws).is_none(), "{bad}");
        }
    }

    #[test]
    fn certificates_parse_and_verify() {
        let cert = Certificate::parse(CERT_PEM.as_bytes()).unwrap();
        let sig = sign::<rsa::sha2::Sha256>(b"hello");
        let hashed = <rsa::sha2::Sha256 as rsa::sha2::Digest>::digest(b"hello");
        assert!(cert.verifies::<rsa::sha2::Sha256>(&hashed, &sig));
        let other = Certificate::parse(OTHER_CERT_PEM.as_bytes()).unwrap();
        assert!(!other.verifies::<rsa::sha2::Sha256>(&hashed, &sig));
        let at = |y: i64| OffsetDateTime::from_unix_timestamp((y - 1970) * 31_556_952).unwrap();
        assert!(cert.check_validity(at(2030)).is_ok());
        assert_eq!(
            cert.check_validity(at(2019)),
            Err(VerifyError::UntrustedCertificate)
        );
        assert_eq!(
            cert.check_validity(at(2051)),
            Err(VerifyError::UntrustedCertificate)
        );
        // A chain: the first certificate counts.
        let chain = format!("{CERT_PEM}{OTHER_CERT_PEM}");
        assert!(
            Certificate::parse(chain.as_bytes())
                .unwrap()
                .verifies::<rsa::sha2::Sha256>(&hashed, &sig)
        );
        assert!(Certificate::parse(b"not a certificate").is_none());
        assert!(Certificate::parse(&vec![b'A'; 70_000]).is_none());
    }

    #[tokio::test]
    async fn the_cache_fetches_once_and_remembers_failures() {
        let url = "https://sns.us-east-1.amazonaws.com/cert.pem";
        let fetcher = Arc::new(MapFetcher::default().with(url, CERT_PEM));
        let cache = CertificateCache::new(fetcher.clone());
        let trusted = TrustedUrl::parse(url, aws).unwrap();
        assert_eq!(
            cache.get(&trusted).unwrap_err(),
            VerifyError::CertificateUnavailable
        );
        cache.prepare(trusted.clone()).unwrap().await;
        assert!(cache.get(&trusted).is_ok());
        assert!(cache.prepare(trusted.clone()).is_none(), "cached");

        let missing =
            TrustedUrl::parse("https://sns.us-east-1.amazonaws.com/gone.pem", aws).unwrap();
        cache.prepare(missing.clone()).unwrap().await;
        assert_eq!(
            cache.get(&missing).unwrap_err(),
            VerifyError::CertificateUnavailable
        );
        assert!(cache.prepare(missing).is_none(), "failure remembered");

        let garbage_url = "https://sns.us-east-1.amazonaws.com/garbage.pem";
        let garbage = Arc::new(MapFetcher::default().with(garbage_url, "garbage"));
        let cache = CertificateCache::new(garbage);
        let trusted = TrustedUrl::parse(garbage_url, aws).unwrap();
        cache.prepare(trusted.clone()).unwrap().await;
        assert_eq!(
            cache.get(&trusted).unwrap_err(),
            VerifyError::UntrustedCertificate
        );
        assert_eq!(fetcher.calls().len(), 2);
    }

    #[tokio::test]
    async fn the_cache_is_bounded() {
        let fetcher = Arc::new(MapFetcher::default());
        let cache = CertificateCache::new(fetcher);
        for i in 0..(MAX_CACHED * 2) {
            let url =
                TrustedUrl::parse(&format!("https://sns.x.amazonaws.com/{i}.pem"), aws).unwrap();
            cache.prepare(url).unwrap().await;
        }
        assert!(cache.slots.lock().unwrap().len() <= MAX_CACHED);
    }
}
