//! The wire format between the ingest half and the worker half (version 1).
//!
//! A message is a [CloudEvents 1.0] event in **binary content mode**: the message value is the
//! webhook body, byte for byte, and everything else travels in message headers, so any consumer
//! can read it with a CloudEvents SDK or with nothing but its broker client.
//!
//! | header (Kafka spelling)  | content                                                        |
//! |--------------------------|----------------------------------------------------------------|
//! | `ce_specversion`         | `1.0`                                                          |
//! | `ce_id`                  | event id (UUIDv7, assigned at ingest)                          |
//! | `ce_source`              | request path, e.g. `/api/v1/webhook/github`                    |
//! | `ce_type`                | `firefly.webhook.received`                                     |
//! | `ce_time`                | receive time, RFC 3339 UTC                                     |
//! | `content-type`           | the request's `Content-Type` (absent when the request had none) |
//! | `ce_provider`            | provider name                                                  |
//! | `ce_correlationid`       | `X-Request-ID` or the event id                                 |
//! | `ce_sourceip`            | client IP (absent when unknown)                                |
//! | `ce_httpmethod`          | HTTP method                                                    |
//! | `ce_httpquery`           | raw query string (absent when there was none)                  |
//! | `ce_fireflywire`         | wire format version, `1`                                       |
//! | `ce_traceparent`         | W3C `traceparent` of the ingest span (absent when the event has no trace) |
//! | `ce_tracestate`          | W3C `tracestate` (absent when there is none)                   |
//! | `http_{name}`            | one header per original HTTP header **value**, in order; names lower case |
//!
//! Values are the raw bytes of the attribute (UTF-8 for everything but `http_*`, which carry the
//! header value's bytes unchanged). A header sent twice appears twice, in order.
//!
//! Each transport spells the attribute prefix its own way ([`Binding`]): Kafka uses `ce_`,
//! AMQP uses `cloudEvents:` and carries the content type in the message's `content-type`
//! property. On AMQP a repeated `http_*` header becomes a field array.
//!
//! Messages that failed processing and were dead-lettered carry the original value and headers
//! unchanged plus these extension attributes: `deadletterreason`, `deadlettercategory`,
//! `deadletterattempts`, `deadlettererrortype`, `deadletterat` (RFC 3339) and
//! `deadletterdestination`. A redelivered message may carry `attempt` (1-based).
//!
//! `traceparent` and `tracestate` are the CloudEvents [distributed tracing extension]: the
//! [`TraceContext`] of the span that ingested the event, so the
//! worker's span continues the sender's trace (on AMQP `cloudEvents:traceparent`). A reader
//! ignores a malformed one (the event then has no trace) rather than refusing the message.
//!
//! [distributed tracing extension]: https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/extensions/distributed-tracing.md
//!
//! [CloudEvents 1.0]: https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::dead_letter::{DeadLetter, FailureCategory};
use crate::event::{DEFAULT_PREFIX, EventId, TraceContext, WebhookEvent};

/// The version this crate writes in `fireflywire` and understands when reading.
pub const WIRE_VERSION: &str = "1";
/// The CloudEvents `type` of every ingested webhook.
pub const EVENT_TYPE: &str = "firefly.webhook.received";
/// Prefix of the headers that carry the original HTTP headers.
pub const HTTP_HEADER_PREFIX: &str = "http_";

/// How a transport spells CloudEvents attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// Prefix for CloudEvents attributes (`ce_` on Kafka).
    pub prefix: &'static str,
    /// Whether `content-type` travels as a message header (Kafka) or in a native property (AMQP).
    pub content_type_header: bool,
}

impl Binding {
    /// The CloudEvents Kafka protocol binding.
    pub const KAFKA: Self = Self {
        prefix: "ce_",
        content_type_header: true,
    };
    /// The AMQP binding: `cloudEvents:` prefixed application headers.
    pub const AMQP: Self = Self {
        prefix: "cloudEvents:",
        content_type_header: false,
    };
}

/// An error reading a message that does not follow the wire format.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A required attribute is absent.
    #[error("message has no `{0}` attribute")]
    Missing(&'static str),
    /// An attribute is present but unreadable.
    #[error("message attribute `{name}` is invalid: {reason}")]
    Invalid {
        /// The attribute name, without prefix.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The message was written by a newer, incompatible version of the format.
    #[error("unsupported wire format version {0}")]
    Version(String),
}

/// A wire header: a name and its raw value.
pub type WireHeader = (String, Bytes);

fn attr(binding: Binding, name: &str) -> String {
    let mut s = String::with_capacity(binding.prefix.len() + name.len());
    s.push_str(binding.prefix);
    s.push_str(name);
    s
}

fn text(value: &str) -> Bytes {
    Bytes::copy_from_slice(value.as_bytes())
}

/// RFC 3339 with the offset as `Z`; see [`push_rfc3339`].
pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    let mut out = Vec::with_capacity(RFC3339_MAX);
    push_rfc3339(&mut out, at);
    // Only ASCII digits and punctuation were written.
    String::from_utf8(out).unwrap_or_default()
}

/// The longest [`push_rfc3339`] writes: `2026-01-02T03:04:05.123456789Z`.
const RFC3339_MAX: usize = 30;

/// Appends `at` in UTC as RFC 3339, byte for byte as `time`'s [`Rfc3339`] formats it (the
/// fraction of a second without trailing zeros, none for a whole second, the offset as
/// `Z`), without its formatting machinery: this runs for every accepted request (the
/// receipt's two times) and every message encoded. A year outside 0 to 9999, which RFC 3339
/// cannot write, is written as the Unix timestamp instead.
pub(crate) fn push_rfc3339(out: &mut Vec<u8>, at: OffsetDateTime) {
    // A time near either end of `time`'s range can fall outside it in UTC (a decoded
    // `ce_time` of 9999-12-31T23:00:00-05:00): written as its Unix timestamp too.
    let utc = at.checked_to_offset(time::UtcOffset::UTC);
    let Some((at, year)) = utc.and_then(|at| {
        let year = u16::try_from(at.year()).ok().filter(|y| *y <= 9999)?;
        Some((at, year))
    }) else {
        let seconds = at.unix_timestamp();
        if seconds < 0 {
            out.push(b'-');
        }
        push_digits(out, seconds.unsigned_abs());
        return;
    };
    let (hour, minute, second, nanos) = at.to_hms_nano();
    let mut text = [0u8; RFC3339_MAX];
    let [y0, y1] = two_digits(u32::from(year / 100));
    let [y2, y3] = two_digits(u32::from(year));
    let [mo0, mo1] = two_digits(u32::from(u8::from(at.month())));
    let [d0, d1] = two_digits(u32::from(at.day()));
    let [h0, h1] = two_digits(u32::from(hour));
    let [mi0, mi1] = two_digits(u32::from(minute));
    let [s0, s1] = two_digits(u32::from(second));
    text[..19].copy_from_slice(&[
        y0, y1, y2, y3, b'-', mo0, mo1, b'-', d0, d1, b'T', h0, h1, b':', mi0, mi1, b':', s0, s1,
    ]);
    let mut len = 19;
    if nanos != 0 {
        // Nine digits (nanos < 10^9), the first alone, then four pairs.
        let [_, n0] = two_digits(nanos / 100_000_000);
        let [n1, n2] = two_digits(nanos / 1_000_000);
        let [n3, n4] = two_digits(nanos / 10_000);
        let [n5, n6] = two_digits(nanos / 100);
        let [n7, n8] = two_digits(nanos);
        text[19..29].copy_from_slice(&[b'.', n0, n1, n2, n3, n4, n5, n6, n7, n8]);
        len = 29;
        while text[len - 1] == b'0' {
            len -= 1;
        }
    }
    text[len] = b'Z';
    out.extend_from_slice(&text[..=len]);
}

/// The last two decimal digits of `n`, in ASCII.
fn two_digits(n: u32) -> [u8; 2] {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    // n % 100 * 2 + 1 < 200: within the table.
    let at = (n % 100) as usize * 2;
    [PAIRS[at], PAIRS[at + 1]]
}

/// `n` in decimal.
pub(crate) fn push_digits(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Encodes an event's metadata as message headers, in a stable order: CloudEvents attributes
/// first, then the original HTTP headers. The body is the message value and is not included.
pub fn encode(event: &WebhookEvent, binding: Binding) -> Vec<WireHeader> {
    let mut out = Vec::with_capacity(14 + event.headers.len());
    let mut put = |name: &str, value: Bytes| out.push((attr(binding, name), value));
    put("specversion", Bytes::from_static(b"1.0"));
    put("id", text(&event.id.to_string()));
    put("source", text(&event.path));
    put("type", Bytes::from_static(EVENT_TYPE.as_bytes()));
    put("time", Bytes::from(rfc3339(event.received_at)));
    put("provider", text(&event.provider));
    put("correlationid", text(&event.correlation_id));
    if let Some(ip) = event.source_ip {
        put("sourceip", text(&ip.to_string()));
    }
    put("httpmethod", text(event.method.as_str()));
    if let Some(q) = &event.query {
        put("httpquery", text(q));
    }
    put("fireflywire", Bytes::from_static(WIRE_VERSION.as_bytes()));
    if let Some(trace) = &event.trace {
        put("traceparent", text(&trace.traceparent()));
        if let Some(state) = trace.tracestate() {
            put("tracestate", text(state));
        }
    }
    if binding.content_type_header
        && let Some(ct) = &event.content_type
    {
        out.push(("content-type".to_owned(), text(ct)));
    }
    for (name, value) in &event.headers {
        let mut key = String::with_capacity(HTTP_HEADER_PREFIX.len() + name.as_str().len());
        key.push_str(HTTP_HEADER_PREFIX);
        key.push_str(name.as_str());
        out.push((key, Bytes::copy_from_slice(value.as_bytes())));
    }
    out
}

/// Decodes a message into an event.
///
/// `headers` are the message headers in order (a name may repeat); `content_type` is the
/// transport's native content-type property when the binding keeps it there (AMQP), else `None`.
pub fn decode<'a, I>(
    headers: I,
    body: Bytes,
    content_type: Option<&str>,
    binding: Binding,
) -> Result<WebhookEvent, WireError>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    let mut id = None;
    let mut source = None;
    let mut time = None;
    let mut provider = None;
    let mut correlation = None;
    let mut source_ip = None;
    let mut method = None;
    let mut query = None;
    let mut version = None;
    let mut traceparent = None;
    let mut tracestate = None;
    let mut ct = content_type.map(str::to_owned);
    let mut http_headers = HeaderMap::new();

    for (name, value) in headers {
        if let Some(h) = name.strip_prefix(HTTP_HEADER_PREFIX) {
            let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(h.as_bytes()),
                HeaderValue::from_bytes(value),
            ) else {
                return Err(WireError::Invalid {
                    name: "http_*",
                    reason: format!("header `{h}` is not a valid HTTP header"),
                });
            };
            http_headers.append(n, v);
        } else if binding.content_type_header && name.eq_ignore_ascii_case("content-type") {
            ct = Some(utf8("content-type", value)?.to_owned());
        } else if let Some(a) = name.strip_prefix(binding.prefix) {
            let slot = match a {
                "id" => &mut id,
                "source" => &mut source,
                "time" => &mut time,
                "provider" => &mut provider,
                "correlationid" => &mut correlation,
                "sourceip" => &mut source_ip,
                "httpmethod" => &mut method,
                "httpquery" => &mut query,
                "fireflywire" => &mut version,
                "traceparent" => &mut traceparent,
                "tracestate" => &mut tracestate,
                _ => continue,
            };
            *slot = Some(value);
        }
    }

    if let Some(v) = version {
        let v = utf8("fireflywire", v)?;
        if v != WIRE_VERSION {
            return Err(WireError::Version(v.to_owned()));
        }
    }
    let id: EventId = utf8("id", id.ok_or(WireError::Missing("id"))?)?
        .parse()
        .map_err(|e: uuid::Error| invalid("id", e))?;
    let provider = utf8("provider", provider.ok_or(WireError::Missing("provider"))?)?.to_owned();
    let received_at = match time {
        Some(t) => {
            OffsetDateTime::parse(utf8("time", t)?, &Rfc3339).map_err(|e| invalid("time", e))?
        }
        None => return Err(WireError::Missing("time")),
    };
    let method = match method {
        Some(m) => Method::from_bytes(m).map_err(|e| invalid("httpmethod", e))?,
        None => Method::POST,
    };
    let source_ip = source_ip
        .map(|v| {
            utf8("sourceip", v)?
                .parse::<IpAddr>()
                .map_err(|e| invalid("sourceip", e))
        })
        .transpose()?;
    let path = match source {
        Some(s) => utf8("source", s)?.to_owned(),
        None => format!("{DEFAULT_PREFIX}/{provider}"),
    };
    let correlation_id = match correlation {
        Some(c) => utf8("correlationid", c)?.to_owned(),
        None => id.to_string(),
    };
    let query = query
        .map(|q| utf8("httpquery", q).map(str::to_owned))
        .transpose()?;
    let trace = trace_context(traceparent, tracestate);

    let mut event = WebhookEvent::new(provider, body)
        .with_id(id)
        .with_path(path)
        .with_query(query)
        .with_received_at(received_at)
        .with_source_ip(source_ip)
        .with_correlation_id(correlation_id)
        .with_trace(trace);
    event.method = method;
    event.headers = http_headers;
    event.content_type = ct;
    Ok(event)
}

/// Tracing is best effort: a malformed context is dropped, the event still processed.
fn trace_context(traceparent: Option<&[u8]>, tracestate: Option<&[u8]>) -> Option<TraceContext> {
    let parent = std::str::from_utf8(traceparent?).ok()?;
    let state = tracestate.and_then(|v| std::str::from_utf8(v).ok());
    TraceContext::parse(parent, state)
}

fn utf8<'a>(name: &'static str, value: &'a [u8]) -> Result<&'a str, WireError> {
    std::str::from_utf8(value).map_err(|e| invalid(name, e))
}

fn invalid(name: &'static str, e: impl std::fmt::Display) -> WireError {
    WireError::Invalid {
        name,
        reason: e.to_string(),
    }
}

impl DeadLetter {
    /// The dead-letter attributes as message headers, to add to the original message's headers.
    pub fn encode(&self, binding: Binding) -> Vec<WireHeader> {
        vec![
            (attr(binding, "deadletterreason"), text(&self.reason)),
            (
                attr(binding, "deadlettercategory"),
                Bytes::from_static(self.category.as_str().as_bytes()),
            ),
            (
                attr(binding, "deadletterattempts"),
                text(&self.attempts.to_string()),
            ),
            (attr(binding, "deadlettererrortype"), text(&self.error_type)),
            (
                attr(binding, "deadletterat"),
                text(&rfc3339(self.rejected_at)),
            ),
            (
                attr(binding, "deadletterdestination"),
                text(&self.destination),
            ),
        ]
    }

    /// Reads the dead-letter attributes back, if the headers have them.
    pub fn decode<'a, I>(headers: I, binding: Binding) -> Option<Self>
    where
        I: IntoIterator<Item = (&'a str, &'a [u8])>,
    {
        let mut dl = DeadLetter::new("", FailureCategory::Processing, 0, "", "");
        let mut seen = false;
        for (name, value) in headers {
            let Some(a) = name.strip_prefix(binding.prefix) else {
                continue;
            };
            let Ok(v) = std::str::from_utf8(value) else {
                continue;
            };
            seen |= a.starts_with("deadletter");
            match a {
                "deadletterreason" => v.clone_into(&mut dl.reason),
                "deadlettercategory" => {
                    dl.category = v.parse().unwrap_or(FailureCategory::Processing);
                }
                "deadletterattempts" => dl.attempts = v.parse().unwrap_or(0),
                "deadlettererrortype" => v.clone_into(&mut dl.error_type),
                "deadletterdestination" => v.clone_into(&mut dl.destination),
                "deadletterat" => {
                    if let Ok(t) = OffsetDateTime::parse(v, &Rfc3339) {
                        dl.rejected_at = t;
                    }
                }
                _ => {}
            }
        }
        seen.then_some(dl)
    }
}

/// The header name for the delivery attempt counter on `binding`.
pub fn attempt_header(binding: Binding) -> String {
    attr(binding, "attempt")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WebhookEvent {
        let mut headers = HeaderMap::new();
        headers.append("x-multi", HeaderValue::from_static("one"));
        headers.append("x-multi", HeaderValue::from_static("two"));
        headers.append("content-type", HeaderValue::from_static("application/json"));
        headers.append(
            "x-binary",
            HeaderValue::from_bytes(&[0xff, b'a', 0x80]).unwrap(),
        );
        WebhookEvent::new("github", Bytes::from_static(&[0, 159, 146, 150, 255]))
            .with_headers(headers)
            .with_query(Some("a=1&b=2".into()))
            .with_source_ip(Some("203.0.113.9".parse().unwrap()))
            .with_correlation_id("req-1")
    }

    #[test]
    fn times_are_written_as_time_formats_them() {
        let check = |at: OffsetDateTime| {
            let mut written = Vec::new();
            push_rfc3339(&mut written, at);
            let expected = at.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap();
            assert_eq!(String::from_utf8(written).unwrap(), expected, "{at:?}");
            assert_eq!(rfc3339(at), expected);
            assert_eq!(OffsetDateTime::parse(&expected, &Rfc3339).unwrap(), at);
        };
        // Every number of trailing zeros in the fraction, and none.
        let second = OffsetDateTime::from_unix_timestamp(1_767_323_045).unwrap();
        for nanos in [
            0,
            1,
            10,
            120,
            1_000,
            12_340,
            100_000,
            1_200_000,
            10_000_000,
            120_000_000,
            123_456_789,
            999_999_999,
        ] {
            check(second + time::Duration::nanoseconds(nanos));
        }
        // Both ends of the four-digit years, leap days, an offset other than UTC, and a
        // spread of times in between.
        check(OffsetDateTime::from_unix_timestamp(-62_167_219_200).unwrap()); // 0000-01-01
        check(time::macros::datetime!(9999-12-31 23:59:59.999999999 UTC));
        check(time::macros::datetime!(2024-02-29 00:00:00 UTC));
        check(time::macros::datetime!(2026-03-01 01:02:03.5 +05:30));
        let mut seconds: i64 = -62_167_219_200;
        let mut nanos: i64 = 7;
        while seconds < 253_402_300_799 {
            check(
                OffsetDateTime::from_unix_timestamp(seconds).unwrap()
                    + time::Duration::nanoseconds(nanos),
            );
            seconds += 86_399 * 367 + 12_345;
            nanos = (nanos * 31 + 17) % 1_000_000_000;
        }
        // Outside RFC 3339's years: the Unix timestamp.
        let year_minus_one = OffsetDateTime::from_unix_timestamp(-62_198_755_200).unwrap();
        assert_eq!(rfc3339(year_minus_one), "-62198755200");
        // A time whose UTC is past 9999 (`to_offset` would panic on it).
        let late = time::macros::datetime!(9999-12-31 23:00:00 -05:00);
        assert_eq!(rfc3339(late), late.unix_timestamp().to_string());
        // (Year 10,000 exists only with `time`'s `large-dates`.)
        if let Ok(year_10000) = OffsetDateTime::from_unix_timestamp(253_402_300_800) {
            assert_eq!(rfc3339(year_10000), "253402300800");
        }
    }

    fn as_refs(h: &[WireHeader]) -> impl Iterator<Item = (&str, &[u8])> {
        h.iter().map(|(n, v)| (n.as_str(), v.as_ref()))
    }

    #[test]
    fn round_trips_on_both_bindings() {
        let event = sample();
        for binding in [Binding::KAFKA, Binding::AMQP] {
            let headers = encode(&event, binding);
            let ct = (!binding.content_type_header).then_some("application/json");
            let back = decode(as_refs(&headers), event.body.clone(), ct, binding).unwrap();
            assert_eq!(back.id, event.id);
            assert_eq!(back.provider, "github");
            assert_eq!(back.body, event.body);
            assert_eq!(back.query.as_deref(), Some("a=1&b=2"));
            assert_eq!(back.source_ip, event.source_ip);
            assert_eq!(back.correlation_id, "req-1");
            assert_eq!(back.content_type.as_deref(), Some("application/json"));
            assert_eq!(back.headers, event.headers);
            let multi: Vec<_> = back.headers.get_all("x-multi").iter().collect();
            assert_eq!(multi, ["one", "two"]);
            assert_eq!(
                back.received_at.unix_timestamp_nanos(),
                event.received_at.unix_timestamp_nanos()
            );
        }
    }

    #[test]
    fn trace_context_round_trips_on_both_bindings() {
        const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = TraceContext::parse(PARENT, Some("congo=t61rcWkgMzE")).unwrap();
        let event = sample().with_trace(Some(trace.clone()));
        for (binding, name) in [
            (Binding::KAFKA, "ce_traceparent"),
            (Binding::AMQP, "cloudEvents:traceparent"),
        ] {
            let headers = encode(&event, binding);
            let value = |n: &str| headers.iter().find(|(h, _)| h == n).map(|(_, v)| v.clone());
            assert_eq!(value(name).unwrap(), PARENT.as_bytes());
            let state = name.replace("traceparent", "tracestate");
            assert_eq!(value(&state).unwrap(), "congo=t61rcWkgMzE".as_bytes());
            let back = decode(as_refs(&headers), Bytes::new(), None, binding).unwrap();
            assert_eq!(back.trace.as_ref(), Some(&trace));
            assert_eq!(back.trace.unwrap().trace_id(), trace.trace_id());
        }
        // No trace, no attributes; a malformed one is ignored, not an error.
        let headers = encode(&sample(), Binding::KAFKA);
        assert!(!headers.iter().any(|(n, _)| n.starts_with("ce_trace")));
        let mut headers = encode(&event, Binding::KAFKA);
        for (n, v) in &mut headers {
            if n == "ce_traceparent" {
                *v = Bytes::from_static(b"00-nope");
            }
        }
        let back = decode(as_refs(&headers), Bytes::new(), None, Binding::KAFKA).unwrap();
        assert!(back.trace.is_none());
    }

    #[test]
    fn kafka_names_follow_cloudevents() {
        let headers = encode(&sample(), Binding::KAFKA);
        let names: Vec<_> = headers.iter().map(|(n, _)| n.as_str()).collect();
        for required in ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time"] {
            assert!(names.contains(&required), "{required} missing");
        }
        assert!(names.contains(&"content-type"));
        assert_eq!(names.iter().filter(|n| **n == "http_x-multi").count(), 2);
    }

    #[test]
    fn rejects_missing_id_and_newer_versions() {
        let headers = vec![("ce_provider".to_owned(), Bytes::from_static(b"x"))];
        assert!(matches!(
            decode(as_refs(&headers), Bytes::new(), None, Binding::KAFKA),
            Err(WireError::Missing("id"))
        ));
        let mut headers = encode(&sample(), Binding::KAFKA);
        for (n, v) in &mut headers {
            if n == "ce_fireflywire" {
                *v = Bytes::from_static(b"2");
            }
        }
        assert!(matches!(
            decode(as_refs(&headers), Bytes::new(), None, Binding::KAFKA),
            Err(WireError::Version(_))
        ));
    }

    #[test]
    fn dead_letter_round_trip() {
        let dl = DeadLetter::new("boom", FailureCategory::Timeout, 3, "timeout", "github");
        let headers = dl.encode(Binding::KAFKA);
        let back = DeadLetter::decode(as_refs(&headers), Binding::KAFKA).unwrap();
        assert_eq!(back.reason, "boom");
        assert_eq!(back.category, FailureCategory::Timeout);
        assert_eq!(back.attempts, 3);
        assert_eq!(back.destination, "github");
        assert!(
            DeadLetter::decode(as_refs(&encode(&sample(), Binding::KAFKA)), Binding::KAFKA)
                .is_none()
        );
    }
}
