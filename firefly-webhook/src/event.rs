//! The webhook as it was received.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method};
use time::OffsetDateTime;
use uuid::Uuid;

/// The path under which webhooks are received by default: `POST {DEFAULT_PREFIX}/{provider}`.
pub const DEFAULT_PREFIX: &str = "/api/v1/webhook";

/// The canonical provider name for a path segment: 1–64 of `a-z0-9._-` (upper case folded to
/// lower case), or `None` when the segment is not a usable name.
///
/// ```
/// use firefly_webhook::event::provider_name;
///
/// assert_eq!(provider_name("GitHub").as_deref(), Some("github"));
/// assert_eq!(provider_name("a/b"), None);
/// ```
pub fn provider_name(segment: &str) -> Option<String> {
    let ok = (1..=64).contains(&segment.len())
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then(|| segment.to_ascii_lowercase())
}

/// The identifier the gateway assigns to every accepted webhook: a UUIDv7, so ids sort by
/// arrival time.
///
/// A provider that redelivers the same webhook gets a *new* `EventId`; use the idempotency key
/// (see [`crate::idempotency`]) to recognise redeliveries.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Uuid);

impl EventId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps an existing UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The underlying UUID.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for EventId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One webhook exactly as a provider sent it, plus what the gateway learned while receiving it.
///
/// The body is the raw bytes received (binary, empty and non-UTF-8 bodies survive unchanged) and
/// `headers` keeps every value of every header, in the order received. Signature verification
/// and idempotency keys work on these bytes, never on a re-serialised form.
///
/// Build one with [`WebhookEvent::new`] and the `with_*` methods; the fields are public for
/// reading and for adjusting in tests.
#[derive(Clone)]
#[non_exhaustive]
pub struct WebhookEvent {
    /// Assigned at ingest.
    pub id: EventId,
    /// The provider name from the request path (lower case, `a-z0-9._-`).
    pub provider: String,
    /// The HTTP method of the original request (normally `POST`).
    pub method: Method,
    /// The request path as received, e.g. `/api/v1/webhook/github`.
    pub path: String,
    /// The raw query string, without the `?`, when there was one.
    pub query: Option<String>,
    /// All request headers with all their values.
    pub headers: HeaderMap,
    /// The request body, byte for byte.
    pub body: Bytes,
    /// When the gateway finished reading the request.
    pub received_at: OffsetDateTime,
    /// The client address: the socket peer, or the forwarded client when the peer is a trusted proxy.
    pub source_ip: Option<IpAddr>,
    /// `X-Request-ID` when the request carried a usable one, otherwise the event id.
    pub correlation_id: String,
    /// The request's `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The W3C trace context to continue from: at ingest, the ingest span's own context (a
    /// child of the request's `traceparent`, or a new trace); `None` for events built by hand
    /// or read from messages that carried none.
    pub trace: Option<TraceContext>,
}

impl WebhookEvent {
    /// A `POST` event for `provider` with the given body, a fresh id, received now.
    pub fn new(provider: impl Into<String>, body: impl Into<Bytes>) -> Self {
        let id = EventId::new();
        let provider = provider.into();
        Self {
            id,
            path: format!("{DEFAULT_PREFIX}/{provider}"),
            provider,
            method: Method::POST,
            query: None,
            headers: HeaderMap::new(),
            body: body.into(),
            received_at: OffsetDateTime::now_utc(),
            source_ip: None,
            correlation_id: id.to_string(),
            content_type: None,
            trace: None,
        }
    }

    /// Replaces the headers (and takes `content_type` from them).
    #[must_use]
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.headers = headers;
        self
    }

    /// Sets the event id.
    #[must_use]
    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = id;
        self
    }

    /// Sets the request path.
    #[must_use]
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Sets the query string (without `?`).
    #[must_use]
    pub fn with_query(mut self, query: Option<String>) -> Self {
        self.query = query;
        self
    }

    /// Sets the source address.
    #[must_use]
    pub fn with_source_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.source_ip = ip;
        self
    }

    /// Sets the receive time.
    #[must_use]
    pub fn with_received_at(mut self, at: OffsetDateTime) -> Self {
        self.received_at = at;
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = id.into();
        self
    }

    /// Sets the trace context.
    #[must_use]
    pub fn with_trace(mut self, trace: Option<TraceContext>) -> Self {
        self.trace = trace;
        self
    }

    /// Copies the body and header values into buffers of their own.
    ///
    /// Bodies and header values parsed by hyper are slices of its connection read buffer, so an
    /// event kept around (queued in memory) would keep that whole buffer alive. Transports that
    /// hold events call this first.
    ///
    /// The body and every header value are copied into one allocation, of their combined size.
    pub fn detach(&mut self) {
        let size = self.body.len()
            + self
                .headers
                .values()
                .map(http::HeaderValue::len)
                .sum::<usize>();
        let mut buffer = BytesMut::with_capacity(size);
        buffer.extend_from_slice(&self.body);
        for value in self.headers.values() {
            buffer.extend_from_slice(value.as_bytes());
        }
        let buffer = buffer.freeze();
        self.body = buffer.slice(..self.body.len());
        let mut at = self.body.len();
        // Each value is replaced where it is: the map (names, order, hash table) stays.
        for value in self.headers.values_mut() {
            let copy = buffer.slice(at..at + value.len());
            at += value.len();
            // A value that was valid stays valid when copied; this only re-checks it.
            if let Ok(mut copy) = http::HeaderValue::from_maybe_shared(copy) {
                copy.set_sensitive(value.is_sensitive());
                *value = copy;
            }
        }
    }

    /// The first value of header `name` as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Number of header values (a header sent twice counts twice).
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }
}

impl fmt::Debug for WebhookEvent {
    // Header values may carry credentials (Authorization, signatures) and bodies may carry
    // personal data: Debug shows only their shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookEvent")
            .field("id", &self.id)
            .field("provider", &self.provider)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("header_names", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .field("received_at", &self.received_at)
            .field("source_ip", &self.source_ip)
            .field("correlation_id", &self.correlation_id)
            .field("content_type", &self.content_type)
            .field("trace", &self.trace)
            .finish_non_exhaustive()
    }
}

/// The W3C Trace Context request header that names the caller's trace and span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C Trace Context request header with vendor-specific trace data.
pub const TRACESTATE: &str = "tracestate";

/// A trace id: 16 bytes, never all zero. Displays as 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

/// A span id: 8 bytes, never all zero. Displays as 16 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

impl TraceId {
    /// The id's bytes.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl SpanId {
    /// The id's bytes.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    for (pair, b) in text.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
    // Hex digits are ASCII.
    f.write_str(std::str::from_utf8(&text[..bytes.len() * 2]).unwrap_or_default())
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A [W3C Trace Context](https://www.w3.org/TR/trace-context/): the `traceparent` (trace id,
/// parent span id, flags) and, optionally, the `tracestate` that travel with an event.
///
/// Parsing is strict, as the recommendation asks: a `traceparent` that is not version `00`
/// in exactly its form (lower-case hex, non-zero ids; later versions by their first four
/// fields, version `ff` never) is no context at all, and a `tracestate` that breaks its list
/// grammar (keys, values, at most 32 members, no key twice) is dropped while the
/// `traceparent` is kept. What this type writes is always version `00`.
///
/// ```
/// use firefly_webhook::event::TraceContext;
///
/// let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// let trace = TraceContext::parse(parent, Some("congo=t61rcWkgMzE")).unwrap();
/// assert_eq!(trace.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(trace.sampled());
///
/// // The context a service passes on: same trace, its own span.
/// let child = trace.child();
/// assert_eq!(child.trace_id(), trace.trace_id());
/// assert_ne!(child.parent_id(), trace.parent_id());
/// assert_eq!(child.tracestate(), Some("congo=t61rcWkgMzE"));
///
/// assert!(TraceContext::parse("00-0000-bad", None).is_none());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: TraceId,
    parent_id: SpanId,
    flags: u8,
    state: Option<Box<str>>,
}

impl TraceContext {
    /// The `sampled` trace flag.
    pub const SAMPLED: u8 = 0x01;
    /// The longest `tracestate` kept, in bytes; the recommendation asks for at least 512.
    /// Members past it are dropped from the end.
    pub const MAX_TRACESTATE: usize = 512;

    /// Reads a `traceparent` header value and an optional `tracestate`; `None` when the
    /// `traceparent` is malformed.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let (trace_id, parent_id, flags) = parse_traceparent(traceparent.trim_matches(OWS))?;
        Some(Self {
            trace_id,
            parent_id,
            flags,
            state: tracestate.and_then(parse_tracestate),
        })
    }

    /// Reads the `traceparent` and `tracestate` headers; `None` when `traceparent` is absent,
    /// malformed or sent more than once. Several `tracestate` headers form one list.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        // Names made once: a `&str` is parsed into a header name on every lookup.
        const PARENT: http::HeaderName = http::HeaderName::from_static(TRACEPARENT);
        const STATE: http::HeaderName = http::HeaderName::from_static(TRACESTATE);
        let mut parents = headers.get_all(&PARENT).iter();
        let parent = parents.next()?.to_str().ok()?;
        if parents.next().is_some() {
            return None;
        }
        let mut states = headers.get_all(&STATE).iter();
        let state = match (states.next(), states.next()) {
            (None, _) => None,
            (Some(one), None) => one.to_str().ok().map(std::borrow::Cow::Borrowed),
            (Some(_), Some(_)) => {
                let mut joined = String::new();
                for value in headers.get_all(&STATE) {
                    if let Ok(v) = value.to_str() {
                        if !joined.is_empty() {
                            joined.push(',');
                        }
                        joined.push_str(v);
                    }
                }
                Some(std::borrow::Cow::Owned(joined))
            }
        };
        Self::parse(parent, state.as_deref())
    }

    /// A new trace: random trace and span ids, sampled, no `tracestate`.
    pub fn start() -> Self {
        Self {
            trace_id: TraceId(nonzero(|| fastrand::u128(..)).to_be_bytes()),
            parent_id: new_span_id(),
            flags: Self::SAMPLED,
            state: None,
        }
    }

    /// The context of a new span in the same trace, as the span passes it on: a random span
    /// id, the same trace id, flags and `tracestate`.
    #[must_use]
    pub fn child(&self) -> Self {
        Self {
            parent_id: new_span_id(),
            ..self.clone()
        }
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The `parent-id` field: the id of the span that passed this context on.
    pub fn parent_id(&self) -> SpanId {
        self.parent_id
    }

    /// The trace flags (version `00` defines [`SAMPLED`](Self::SAMPLED) and the `random`
    /// bit, `0x02`; others are cleared).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the caller may have recorded its span (the `sampled` flag).
    pub fn sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// The `traceparent` header value, version `00`.
    pub fn traceparent(&self) -> String {
        self.to_string()
    }

    /// The `tracestate` header value, when there is one.
    pub fn tracestate(&self) -> Option<&str> {
        self.state.as_deref()
    }
}

/// Writes the `traceparent` value.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-", self.trace_id, self.parent_id)?;
        write_hex(f, &[self.flags])
    }
}

#[allow(clippy::missing_fields_in_debug, reason = "the traceparent shows them")]
impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("traceparent", &format_args!("{self}"))
            .field("tracestate", &self.state)
            .finish()
    }
}

/// Optional white space around list members and header values.
const OWS: &[char] = &[' ', '\t'];

fn nonzero<T: Default + PartialEq>(random: impl Fn() -> T) -> T {
    loop {
        let n = random();
        if n != T::default() {
            return n;
        }
    }
}

fn new_span_id() -> SpanId {
    SpanId(nonzero(|| fastrand::u64(..)).to_be_bytes())
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Lower-case hex into `out`, which must be half as long as `text`.
fn parse_hex(text: &[u8], out: &mut [u8]) -> Option<()> {
    for (pair, byte) in text.chunks_exact(2).zip(out.iter_mut()) {
        *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(())
}

/// `version-traceid-parentid-flags`, as the recommendation's processing model reads it.
fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId, u8)> {
    const LEN: usize = 55;
    let b = value.as_bytes();
    if b.len() < LEN || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let mut version = [0u8];
    parse_hex(&b[..2], &mut version)?;
    match version[0] {
        0xff => return None,
        0 if b.len() != LEN => return None,
        // A later version may append fields, after a dash.
        _ if b.len() > LEN && b[LEN] != b'-' => return None,
        _ => {}
    }
    let mut trace_id = [0u8; 16];
    parse_hex(&b[3..35], &mut trace_id)?;
    let mut parent_id = [0u8; 8];
    parse_hex(&b[36..52], &mut parent_id)?;
    let mut flags = [0u8];
    parse_hex(&b[53..55], &mut flags)?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    // Only the flags this crate knows are passed on; of a later version, only `sampled`.
    let known = if version[0] == 0 {
        0x03
    } else {
        TraceContext::SAMPLED
    };
    Some((TraceId(trace_id), SpanId(parent_id), flags[0] & known))
}

/// A normalised `tracestate` (members joined by `,` without white space, empty members
/// dropped, cut to [`TraceContext::MAX_TRACESTATE`] at a member boundary), or `None` when
/// the list is malformed or empty.
fn parse_tracestate(value: &str) -> Option<Box<str>> {
    const MAX_MEMBERS: usize = 32;
    let mut keys: Vec<&str> = Vec::new();
    let mut out = String::new();
    let mut full = false;
    for member in value.split(',').map(|m| m.trim_matches(OWS)) {
        if member.is_empty() {
            continue;
        }
        let (key, val) = member.split_once('=')?;
        if !valid_key(key) || !valid_value(val) || keys.contains(&key) {
            return None;
        }
        keys.push(key);
        if keys.len() > MAX_MEMBERS {
            return None;
        }
        let extra = usize::from(!out.is_empty()) + member.len();
        full |= out.len() + extra > TraceContext::MAX_TRACESTATE;
        if !full {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(member);
        }
    }
    (!out.is_empty()).then(|| out.into_boxed_str())
}

fn valid_key(key: &str) -> bool {
    let tail = |s: &[u8]| {
        s.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/')
        })
    };
    match key.split_once('@') {
        None => {
            let b = key.as_bytes();
            (1..=256).contains(&b.len()) && b[0].is_ascii_lowercase() && tail(&b[1..])
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            (1..=241).contains(&t.len())
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && tail(&t[1..])
                && (1..=14).contains(&s.len())
                && s[0].is_ascii_lowercase()
                && tail(&s[1..])
        }
    }
}

fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    (1..=256).contains(&b.len())
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && b[b.len() - 1] != b' '
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_ordered() {
        let a = EventId::new();
        let b = EventId::new();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a < b);
        assert_eq!(a.to_string().parse::<EventId>().unwrap(), a);
    }

    #[test]
    fn detach_keeps_content() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", "1".parse().unwrap());
        headers.append("x-a", "2".parse().unwrap());
        let shared = Bytes::from_static(b"0123456789");
        let mut event = WebhookEvent::new("p", shared.slice(2..5)).with_headers(headers.clone());
        event.detach();
        assert_eq!(&event.body[..], b"234");
        assert_eq!(event.headers, headers);
    }

    #[test]
    fn debug_hides_header_values_and_body() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer s3cr3t".parse().unwrap());
        let event = WebhookEvent::new("github", "top secret body").with_headers(headers);
        let debug = format!("{event:?}");
        assert!(!debug.contains("s3cr3t"));
        assert!(!debug.contains("top secret"));
        assert!(debug.contains("authorization"));
    }

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparents_are_read_strictly() {
        let trace = TraceContext::parse(PARENT, None).unwrap();
        assert_eq!(trace.traceparent(), PARENT);
        assert_eq!(trace.parent_id().to_string(), "00f067aa0ba902b7");
        assert!(trace.sampled());
        assert_eq!(trace.tracestate(), None);
        let unsampled = TraceContext::parse(&PARENT.replace("-01", "-00"), None).unwrap();
        assert!(!unsampled.sampled());
        // Unknown flags are cleared; a later version is read by its first four fields.
        let flags = TraceContext::parse(&PARENT.replace("-01", "-ff"), None).unwrap();
        assert_eq!(flags.flags(), 0x03);
        let later = format!("cc{}-what-comes-next", &PARENT[2..]);
        let later = TraceContext::parse(&later, None).unwrap();
        assert_eq!(later.traceparent(), PARENT, "written as version 00");
        assert!(TraceContext::parse(&format!("cc{}", &PARENT[2..]), None).is_some());
        for bad in [
            String::new(),
            "00".to_owned(),
            PARENT.to_uppercase(),
            PARENT.replace("4bf9", "4BF9"),
            format!("{PARENT}-"),
            format!("{PARENT}0"),
            format!("ff{}", &PARENT[2..]),
            format!("cc{}x", &PARENT[2..]),
            PARENT.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)),
            PARENT.replace("00f067aa0ba902b7", &"0".repeat(16)),
            PARENT.replace("-00f0", "_00f0"),
            PARENT.replace("4bf9", "4bfg"),
            PARENT.replace("-01", "-1"),
            PARENT[..54].to_owned(),
        ] {
            assert!(TraceContext::parse(&bad, None).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn tracestates_are_normalised_or_dropped() {
        let state = |s: &str| TraceContext::parse(PARENT, Some(s)).unwrap();
        assert_eq!(
            state(" congo=t61rcWkgMzE ,, rojo=00f067aa0ba902b7,t@sys=v a ").tracestate(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,t@sys=v a")
        );
        for bad in [
            "", " , ", "no-value", "Upper=1", "a=1,a=2", "a=b=c", "a= ", "1a=x", "a@=x",
            "a@1sys=x", "a=\u{7f}",
        ] {
            let trace = state(bad);
            assert_eq!(trace.tracestate(), None, "{bad:?}");
            assert_eq!(trace.traceparent(), PARENT, "the parent survives {bad:?}");
        }
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(state(&many.join(",")).tracestate(), None);
        assert!(state(&many[..32].join(",")).tracestate().is_some());
        // Too long: cut at a member boundary.
        let long: Vec<String> = (0..20)
            .map(|i| format!("k{i}={}", "v".repeat(40)))
            .collect();
        let cut = state(&long.join(",")).tracestate().unwrap().to_owned();
        assert!(cut.len() <= TraceContext::MAX_TRACESTATE);
        assert!(long.join(",").starts_with(&cut));
        assert!(cut.ends_with(&"v".repeat(40)));
    }

    #[test]
    fn trace_headers() {
        let mut headers = HeaderMap::new();
        assert!(TraceContext::from_headers(&headers).is_none());
        headers.insert(TRACEPARENT, PARENT.parse().unwrap());
        headers.append(TRACESTATE, "a=1".parse().unwrap());
        headers.append(TRACESTATE, "b=2".parse().unwrap());
        let trace = TraceContext::from_headers(&headers).unwrap();
        assert_eq!(trace.tracestate(), Some("a=1,b=2"));
        headers.append(TRACEPARENT, PARENT.parse().unwrap());
        assert!(TraceContext::from_headers(&headers).is_none(), "sent twice");
    }

    #[test]
    fn new_traces_and_children() {
        let a = TraceContext::start();
        let b = TraceContext::start();
        assert_ne!(a.trace_id(), b.trace_id());
        assert!(a.sampled());
        assert_eq!(TraceContext::parse(&a.traceparent(), None), Some(a.clone()));
        let child = a.child();
        assert_eq!(child.trace_id(), a.trace_id());
        assert_ne!(child.parent_id(), a.parent_id());
        assert_eq!(child.flags(), a.flags());
        let debug = format!(
            "{:?}",
            WebhookEvent::new("p", "").with_trace(Some(a.clone()))
        );
        assert!(debug.contains(&a.traceparent()), "{debug}");
    }
}
