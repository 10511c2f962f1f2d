//! A minimal HTTP/1.1 client for `send`: one request on one connection.

use std::time::Duration;

use bytes::Bytes;
use firefly_webhook::http::{HeaderMap, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

use crate::exit::Fatal;

/// A gateway's answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

/// Where to send: an `http://` URL's authority, checked.
pub(crate) fn authority(uri: &Uri) -> Result<(String, u16), Fatal> {
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(Fatal::usage(
                "https URLs are not supported: send to the gateway's own http listener \
                 (e.g. through a port-forward) and give --public-url the https address",
            ));
        }
        _ => return Err(Fatal::usage(format!("`{uri}` is not an http:// URL"))),
    }
    let host = uri
        .host()
        .ok_or_else(|| Fatal::usage(format!("`{uri}` has no host")))?;
    Ok((
        host.trim_matches(['[', ']']).to_owned(),
        uri.port_u16().unwrap_or(80),
    ))
}

/// POSTs `body` with `headers` to `uri` and reads the whole answer, within `timeout`.
pub(crate) async fn post(
    uri: &Uri,
    headers: HeaderMap,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Answer, Fatal> {
    let (host, port) = authority(uri)?;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| Fatal::failed(format!("cannot connect to {host}:{port}: {e}")))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Fatal::broker("http handshake failed", &e))?;
        tokio::spawn(connection);
        let target = uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let mut request = Request::post(target)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Fatal::usage(format!("invalid request: {e}")))?;
        let host_header = uri.authority().map_or(host.clone(), ToString::to_string);
        *request.headers_mut() = headers;
        request.headers_mut().insert(
            header::HOST,
            host_header
                .parse()
                .map_err(|_| Fatal::usage("the URL's host is not a valid Host header"))?,
        );
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Fatal::broker("the request failed", &e))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Fatal::broker("reading the answer failed", &e))?
            .to_bytes();
        Ok(Answer { status, body })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Fatal::failed(format!("no answer within {}s", timeout.as_secs())))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls() {
        let uri: Uri = "http://127.0.0.1:8080/api".parse().unwrap();
        assert_eq!(authority(&uri).unwrap(), ("127.0.0.1".into(), 8080));
        let uri: Uri = "http://[::1]/x".parse().unwrap();
        assert_eq!(authority(&uri).unwrap(), ("::1".into(), 80));
        assert!(authority(&"https://example.com/".parse().unwrap()).is_err());
        assert!(authority(&"/relative".parse().unwrap()).is_err());
    }
}
