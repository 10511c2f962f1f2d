//! [`NativeTlsFetcher`]: the HTTPS client of the schemes that fetch something from the provider
//! (`sns`, `paypal`: signing certificates; `sns`: the `SubscribeURL` confirmation).

use std::net::SocketAddr;
use std::time::Duration;

use firefly_webhook::verify::{HttpsFetcher, TrustedUrl};
use firefly_webhook::{BoxError, Bytes, async_trait};
use http::header::{ACCEPT, HOST, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_native_tls::{TlsConnector, native_tls};

/// The whole fetch (DNS, connect, TLS, request, body) must finish within this: well inside the
/// core's `PREPARE_TIMEOUT`, so a slow provider fails the fetch rather than the request.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read, in bytes. A certificate chain is a few KB; so is SNS's
/// `ConfirmSubscription` answer.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024;

const HTTPS_PORT: u16 = 443;

/// A `GET` over HTTPS with the platform's TLS (OpenSSL on Linux) and its trust store.
///
/// One connection per fetch (certificates are cached by the verifiers, so fetches are rare),
/// TLS 1.2 or later with the server's certificate and host name verified, HTTP/1.1, at most
/// [`MAX_RESPONSE_BYTES`], within [`FETCH_TIMEOUT`]. Anything but `200` is an error, redirects
/// included: a redirect could lead off the provider's host, which the [`TrustedUrl`] vouched
/// for. No proxy support.
pub(crate) struct NativeTlsFetcher {
    tls: TlsConnector,
    /// Where to connect instead of `host:443` (tests: a local server posing as the host).
    connect_to: Option<SocketAddr>,
}

impl NativeTlsFetcher {
    /// A fetcher trusting the system's root certificates.
    pub(crate) fn new() -> Result<Self, native_tls::Error> {
        Self::with_tls(native_tls::TlsConnector::builder())
    }

    fn with_tls(mut builder: native_tls::TlsConnectorBuilder) -> Result<Self, native_tls::Error> {
        let tls = builder
            .min_protocol_version(Some(native_tls::Protocol::Tlsv12))
            .build()?;
        Ok(Self {
            tls: tls.into(),
            connect_to: None,
        })
    }

    async fn fetch(&self, host: &str, path_and_query: &str) -> Result<Bytes, BoxError> {
        let tcp = match self.connect_to {
            Some(addr) => TcpStream::connect(addr).await?,
            None => TcpStream::connect((host, HTTPS_PORT)).await?,
        };
        let tls = self.tls.connect(host, tcp).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tls)).await?;
        // The connection is driven beside the request and torn down with this fetch, even
        // when the timeout cuts it short.
        let _connection = AbortOnDrop(tokio::spawn(connection));
        let request = Request::get(path_and_query)
            .header(HOST, host)
            .header(
                USER_AGENT,
                concat!("firefly-webhook/", env!("CARGO_PKG_VERSION")),
            )
            .header(ACCEPT, "*/*")
            .body(Empty::new())?;
        let response = sender.send_request(request).await?;
        if response.status() != StatusCode::OK {
            return Err(format!("{host} answered {}", response.status()).into());
        }
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {host} failed: {e}"))?;
        Ok(body.to_bytes())
    }
}

#[async_trait]
impl HttpsFetcher for NativeTlsFetcher {
    async fn get(&self, url: &TrustedUrl) -> Result<Bytes, BoxError> {
        // Only the host in errors: SNS's `SubscribeURL` carries a confirmation token.
        let host = url.host();
        tokio::time::timeout(FETCH_TIMEOUT, self.fetch(host, url.path()))
            .await
            .map_err(|_| format!("{host} did not answer within {FETCH_TIMEOUT:?}"))?
            .map_err(|e| format!("fetching from {host} failed: {e}").into())
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::sync::Arc;

    use firefly_webhook::WebhookEvent;
    use firefly_webhook::verify::{Sns, Verifiers, VerifyError};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;
    use tokio_native_tls::TlsAcceptor;

    use super::*;

    // The core's test certificate: self-signed, CN=sns.us-east-1.amazonaws.com, RSA-2048,
    // valid 2020-2050. Here it is the local server's TLS certificate and the client's only
    // trusted root, and also what the server hands out as SNS's signing certificate.
    const CERT_PEM: &str = include_str!("../../../firefly-webhook/tests/fixtures/signing-cert.pem");
    const KEY_PEM: &str = include_str!("../../../firefly-webhook/tests/fixtures/signing-key.pem");
    const HOST: &str = "sns.us-east-1.amazonaws.com";
    const CERT_PATH: &str = "/SimpleNotificationService-test.pem";

    /// An HTTPS server on 127.0.0.1 posing as `HOST`, answering by path.
    async fn server() -> SocketAddr {
        let identity =
            native_tls::Identity::from_pkcs8(CERT_PEM.as_bytes(), KEY_PEM.as_bytes()).unwrap();
        let acceptor = TlsAcceptor::from(native_tls::TlsAcceptor::new(identity).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    assert!(
                        head.to_ascii_lowercase()
                            .contains(&format!("host: {HOST}\r\n"))
                    );
                    let (status, body) = match path.as_str() {
                        CERT_PATH => ("200 OK", CERT_PEM.to_owned()),
                        "/moved.pem" => ("301 Moved Permanently", String::new()),
                        "/huge.pem" => ("200 OK", "A".repeat(MAX_RESPONSE_BYTES + 1)),
                        _ => ("404 Not Found", String::new()),
                    };
                    let mut answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
                        body.len()
                    );
                    if path == "/moved.pem" {
                        let _ = write!(answer, "location: https://{HOST}{CERT_PATH}\r\n");
                    }
                    answer.push_str("\r\n");
                    answer.push_str(&body);
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        addr
    }

    /// A fetcher trusting only the test certificate, connecting to `addr` for any host.
    fn fetcher(addr: SocketAddr) -> NativeTlsFetcher {
        let root = native_tls::Certificate::from_pem(CERT_PEM.as_bytes()).unwrap();
        let mut builder = native_tls::TlsConnector::builder();
        builder.add_root_certificate(root);
        let mut fetcher = NativeTlsFetcher::with_tls(builder).unwrap();
        fetcher.connect_to = Some(addr);
        fetcher
    }

    #[tokio::test]
    async fn fetches_over_verified_tls() {
        let addr = server().await;
        let body = fetcher(addr).fetch(HOST, CERT_PATH).await.unwrap();
        assert_eq!(body, CERT_PEM.as_bytes());
    }

    #[tokio::test]
    async fn refuses_redirects_errors_oversized_answers_and_untrusted_servers() {
        let addr = server().await;
        let f = fetcher(addr);
        for (path, expected) in [
            ("/moved.pem", "answered 301"),
            ("/gone.pem", "answered 404"),
            ("/huge.pem", "reading the answer"),
        ] {
            let err = f.fetch(HOST, path).await.unwrap_err().to_string();
            assert!(err.contains(expected), "{path}: {err}");
        }
        // The certificate is not for this name.
        assert!(f.fetch("other.example", CERT_PATH).await.is_err());
        // Without the test root, the self-signed server is not trusted.
        let mut system = NativeTlsFetcher::new().unwrap();
        system.connect_to = Some(addr);
        assert!(system.fetch(HOST, CERT_PATH).await.is_err());
    }

    /// The SNS verifier with this fetcher: a cold cache is filled over TLS by the prepare step.
    #[tokio::test]
    async fn sns_fetches_its_certificate_through_it() {
        let addr = server().await;
        let topic = "arn:aws:sns:us-east-1:123456789012:orders";
        let sns = Sns::new(topic, Arc::new(fetcher(addr))).unwrap();
        let verifiers = Verifiers::new().provider("sns", sns);
        let body = serde_json::json!({
            "Type": "Notification",
            "MessageId": "m-1",
            "TopicArn": topic,
            "Message": "{}",
            "Timestamp": "2023-11-14T22:13:20.000Z",
            "SignatureVersion": "2",
            "Signature": "AAAA",
            "SigningCertURL": format!("https://{HOST}{CERT_PATH}"),
        });
        let event = WebhookEvent::new("sns", serde_json::to_vec(&body).unwrap());
        assert_eq!(
            verifiers.verify_event(&event),
            Err(VerifyError::CertificateUnavailable)
        );
        verifiers.prepare_event(&event).unwrap().await;
        // The certificate is in the cache now: what fails is the (bogus) signature.
        assert_eq!(
            verifiers.verify_event(&event),
            Err(VerifyError::InvalidSignature)
        );
        assert!(
            verifiers
                .get("sns")
                .unwrap()
                .prepare(&firefly_webhook::verify::SignedRequest::from_event(&event))
                .is_none()
        );
    }
}
