//! The `202 Accepted` receipt, written straight into the response buffer.
//!
//! This is on every accepted request, so instead of building a [`Receipt`] (five small strings)
//! and serialising it with serde, the fields known before publishing are encoded into one
//! buffer up front; after the broker confirmed, only the confirmation time and the response
//! time are appended. The output is the JSON form of [`Receipt`], field for field (tested below).

use std::io::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;

use super::IngestBody;
use crate::event::{EventId, WebhookEvent};
use crate::publish::Storage;
use crate::wire::{push_digits, push_rfc3339};

/// The JSON body of a `202 Accepted` answer, in this field order.
///
/// ```json
/// {"eventId":"0193…","status":"accepted","message":"Webhook accepted","provider":"github",
///  "destination":"github","sourceIp":"203.0.113.9","payloadSize":1432,"headerCount":9,
///  "receivedAt":"2026-01-02T03:04:05.123456789Z","storage":"broker",
///  "processedAt":"2026-01-02T03:04:05.1239Z",
///  "responseTimeMs":0.410}
/// ```
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// The assigned event id.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub event_id: EventId,
    /// Always `accepted`.
    #[cfg_attr(feature = "openapi", schema(example = "accepted"))]
    pub status: &'static str,
    /// Human-readable summary.
    pub message: &'static str,
    /// The provider name.
    pub provider: String,
    /// Where the event was published.
    pub destination: String,
    /// The client address, if known.
    pub source_ip: Option<String>,
    /// Body size in bytes.
    pub payload_size: usize,
    /// Number of header values received (a header sent twice counts twice).
    pub header_count: usize,
    /// When the request was read (RFC 3339).
    pub received_at: String,
    /// Where the event is held: `broker` (the broker confirmed it) or `spool` (on the local
    /// disk, forwarded once the broker takes it).
    #[cfg_attr(feature = "openapi", schema(example = "broker"))]
    pub storage: &'static str,
    /// When the broker confirmed the event (RFC 3339).
    pub processed_at: String,
    /// Time from the start of handling to the broker's confirmation, in milliseconds with
    /// three decimals (whole microseconds).
    pub response_time_ms: f64,
    /// The body echoed back, when enabled with
    /// [`IngestService::echo_payload`](super::IngestService::echo_payload): as JSON when it is
    /// JSON, else as a string when it is UTF-8, else omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub received_payload: Option<Box<RawValue>>,
}

/// A receipt being written. Holds nothing of the event, which moves on to the publisher.
pub(super) struct ReceiptWriter {
    buf: Vec<u8>,
    echo: Option<Box<RawValue>>,
}

impl ReceiptWriter {
    /// Encodes everything up to `receivedAt`.
    pub(super) fn start(event: &WebhookEvent, destination: &str, echo: bool) -> Self {
        let echo = if echo { super::echo(&event.body) } else { None };
        let echo_len = echo.as_ref().map_or(0, |raw| raw.get().len());
        let mut buf = Vec::with_capacity(384 + destination.len() + echo_len);
        buf.extend_from_slice(br#"{"eventId":""#);
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        buf.extend_from_slice(
            event
                .id
                .as_uuid()
                .hyphenated()
                .encode_lower(&mut id)
                .as_bytes(),
        );
        buf.extend_from_slice(br#"","status":"accepted","message":"Webhook accepted","provider":"#);
        push_str(&mut buf, &event.provider);
        buf.extend_from_slice(br#","destination":"#);
        push_str(&mut buf, destination);
        buf.extend_from_slice(br#","sourceIp":"#);
        match event.source_ip {
            Some(ip) => {
                buf.push(b'"');
                push_ip(&mut buf, ip);
                buf.push(b'"');
            }
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(br#","payloadSize":"#);
        push_digits(&mut buf, event.body.len() as u64);
        buf.extend_from_slice(br#","headerCount":"#);
        push_digits(&mut buf, event.header_count() as u64);
        buf.extend_from_slice(br#","receivedAt":"#);
        push_time(&mut buf, event.received_at);
        Self { buf, echo }
    }

    /// Appends the confirmation time and the response time; the `202` response.
    pub(super) fn finish(mut self, started: Instant, storage: Storage) -> Response<IngestBody> {
        let buf = &mut self.buf;
        buf.extend_from_slice(br#","storage":""#);
        buf.extend_from_slice(storage.as_str().as_bytes());
        buf.extend_from_slice(br#"","processedAt":"#);
        push_time(buf, OffsetDateTime::now_utc());
        buf.extend_from_slice(br#","responseTimeMs":"#);
        push_millis(buf, started.elapsed());
        if let Some(raw) = &self.echo {
            buf.extend_from_slice(br#","receivedPayload":"#);
            buf.extend_from_slice(raw.get().as_bytes());
        }
        buf.push(b'}');
        let mut response = Response::new(Full::new(Bytes::from(self.buf)));
        *response.status_mut() = StatusCode::ACCEPTED;
        // Sized for its one header: an empty map's first insert makes room for eight.
        let mut headers = HeaderMap::with_capacity(1);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        *response.headers_mut() = headers;
        response
    }
}

/// A JSON string, escaped as serde_json does.
fn push_str(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    // Provider names and destinations have nothing to escape: copied in one go.
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        buf.reserve(bytes.len() + 2);
        buf.push(b'"');
        buf.extend_from_slice(bytes);
        buf.push(b'"');
        return;
    }
    buf.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0x00..=0x1f => b'u',
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.push(b'\\');
        buf.push(short);
        if short == b'u' {
            buf.extend_from_slice(b"00");
            buf.push(HEX[usize::from(b >> 4)]);
            buf.push(HEX[usize::from(b & 0xf)]);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

/// `elapsed` in milliseconds with three decimals (whole microseconds), as a JSON number:
/// `0.034`, `1.244`. Integer formatting: a float's would print `1.2444380000000002`.
fn push_millis(buf: &mut Vec<u8>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    push_digits(buf, micros / 1000);
    buf.push(b'.');
    let fraction = micros % 1000;
    for digit in [fraction / 100, fraction / 10 % 10, fraction % 10] {
        // Each is a single digit: the conversion cannot fail.
        buf.push(b'0' + u8::try_from(digit).unwrap_or_default());
    }
}

fn push_ip(buf: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                push_digits(buf, u64::from(octet));
            }
        }
        // Rare enough for the formatting machinery; writing into a Vec cannot fail.
        IpAddr::V6(v6) => {
            let _ = write!(buf, "{v6}");
        }
    }
}

/// A quoted RFC 3339 UTC time, exactly as [`crate::wire`] writes it into message headers.
fn push_time(buf: &mut Vec<u8>, at: OffsetDateTime) {
    buf.push(b'"');
    push_rfc3339(buf, at);
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(res: Response<IngestBody>) -> (StatusCode, serde_json::Value) {
        use http_body_util::BodyExt;
        let status = res.status();
        let body = futures_util::FutureExt::now_or_never(res.into_body().collect())
            .unwrap()
            .unwrap()
            .to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    fn serde_receipt(
        event: &WebhookEvent,
        destination: &str,
        written: &serde_json::Value,
    ) -> String {
        let receipt = Receipt {
            event_id: event.id,
            status: "accepted",
            message: "Webhook accepted",
            provider: event.provider.clone(),
            destination: destination.to_owned(),
            source_ip: event.source_ip.map(|ip| ip.to_string()),
            payload_size: event.body.len(),
            header_count: event.header_count(),
            received_at: crate::wire::rfc3339(event.received_at),
            storage: "broker",
            // The two values that depend on when the receipt was finished.
            processed_at: written["processedAt"].as_str().unwrap().to_owned(),
            response_time_ms: written["responseTimeMs"].as_f64().unwrap(),
            received_payload: None,
        };
        serde_json::to_string(&receipt).unwrap()
    }

    #[test]
    fn response_times_are_milliseconds_with_three_decimals() {
        for (micros, text) in [
            (0, "0.000"),
            (34, "0.034"),
            (1_244, "1.244"),
            (1_000, "1.000"),
            (12_345_678, "12345.678"),
        ] {
            let mut buf = Vec::new();
            push_millis(&mut buf, Duration::from_micros(micros));
            assert_eq!(std::str::from_utf8(&buf).unwrap(), text);
            let number: f64 = serde_json::from_slice(&buf).unwrap();
            #[allow(clippy::cast_precision_loss)]
            let expected = micros as f64 / 1000.0;
            assert!((number - expected).abs() < 1e-9, "{text}");
        }
        // Sub-microsecond parts are dropped, not carried into a long fraction.
        let mut buf = Vec::new();
        push_millis(&mut buf, Duration::from_nanos(1_244_438));
        assert_eq!(buf, b"1.244");
    }

    #[test]
    fn written_receipt_is_the_serde_form() {
        let mut headers = http::HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let cases = [
            (None, "github".to_owned(), 0),
            (
                Some("203.0.113.255".parse().unwrap()),
                "webhooks.github".to_owned(),
                1,
            ),
            (
                Some("0.0.0.0".parse().unwrap()),
                "a\"b\\c\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}é/😀".to_owned(),
                999,
            ),
            (
                Some("2001:db8::1".parse().unwrap()),
                String::new(),
                1_234_567,
            ),
        ];
        for (ip, destination, at_nanos) in cases {
            let event = WebhookEvent::new("git.hub_1-x", vec![b'x'; 1432])
                .with_headers(headers.clone())
                .with_source_ip(ip)
                .with_received_at(
                    OffsetDateTime::from_unix_timestamp_nanos(1_767_323_045_000_000_000 + at_nanos)
                        .unwrap(),
                );
            let res = ReceiptWriter::start(&event, &destination, false)
                .finish(Instant::now(), Storage::Broker);
            assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
            let body = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(
                res.into_body(),
            ))
            .unwrap()
            .unwrap()
            .to_bytes();
            let written: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let expected = serde_receipt(&event, &destination, &written);
            // Byte for byte up to the response time (a float that need not survive a parse
            // round trip exactly), and equal as JSON values apart from it.
            let body = std::str::from_utf8(&body).unwrap();
            let cut = |s: &str| s.split_once(r#""responseTimeMs":"#).unwrap().0.to_owned();
            assert_eq!(cut(body), cut(&expected));
            assert!(body.ends_with('}'));
            let mut expected: serde_json::Value = serde_json::from_str(&expected).unwrap();
            let mut written = written;
            assert!(
                written["responseTimeMs"]
                    .as_f64()
                    .is_some_and(|ms| ms >= 0.0)
            );
            expected.as_object_mut().unwrap().remove("responseTimeMs");
            written.as_object_mut().unwrap().remove("responseTimeMs");
            assert_eq!(written, expected);
        }
    }

    #[test]
    fn times_are_quoted_rfc3339() {
        use time::format_description::well_known::Rfc3339;
        for nanos in [0, 10, 123_456_789] {
            let at = OffsetDateTime::from_unix_timestamp(1_767_323_045).unwrap()
                + time::Duration::nanoseconds(nanos);
            let mut buf = Vec::new();
            push_time(&mut buf, at);
            assert_eq!(
                buf,
                format!("\"{}\"", at.format(&Rfc3339).unwrap()).into_bytes()
            );
        }
        let far = OffsetDateTime::from_unix_timestamp(-62_198_755_200).unwrap(); // year -1
        let mut buf = Vec::new();
        push_time(&mut buf, far);
        assert_eq!(buf, b"\"-62198755200\"");
    }

    #[test]
    fn numbers() {
        for n in [0u64, 7, 10, 99, 100, 1_048_576, u64::MAX] {
            let mut buf = Vec::new();
            push_digits(&mut buf, n);
            assert_eq!(buf, n.to_string().into_bytes());
        }
    }

    #[test]
    fn echo_is_appended_last() {
        let event = WebhookEvent::new("github", r#"{"a":[1,2]}"#);
        let (status, json) = parts(
            ReceiptWriter::start(&event, "github", true).finish(Instant::now(), Storage::Broker),
        );
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(json["receivedPayload"], serde_json::json!({"a": [1, 2]}));
        let event = WebhookEvent::new("github", vec![0xff]);
        let (_, json) = parts(
            ReceiptWriter::start(&event, "github", true).finish(Instant::now(), Storage::Broker),
        );
        assert!(json.get("receivedPayload").is_none());
    }
}
