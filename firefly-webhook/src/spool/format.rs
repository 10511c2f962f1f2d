//! Framing and the encoding of what the log holds; the layout is in the
//! [module docs](super#file-format).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::dead_letter::{DeadLetter, FailureCategory};
use crate::event::{EventId, WebhookEvent};

/// First bytes of a segment file: name and format version.
pub(super) const SEGMENT_MAGIC: &[u8; 8] = b"FFSPOOL1";
/// First bytes of a dead-letter file.
pub(super) const DEAD_MAGIC: &[u8; 8] = b"FFSPDLQ1";
/// Length of either magic.
pub(super) const MAGIC_LEN: u64 = 8;
/// Length prefix and checksum in front of every record.
pub(super) const FRAME_HEADER: usize = 8;

const ENTRY: u8 = 1;
const RELEASE: u8 = 2;
const LIVE_SET: u8 = 3;
const DEAD: u8 = 4;

/// Bytes of an entry record's payload in front of its destination and event.
const ENTRY_FIXED: usize = 1 + 8 + 8 + 8 + 4 + 4;

/// A field does not fit its length prefix (a string or body of 4 GiB or more).
#[derive(Debug, thiserror::Error)]
#[error("the event is too large for the spool's record format")]
pub(super) struct TooLarge;

/// A record that cannot be read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum Corrupt {
    /// The file ends inside a record (a write cut short by a crash).
    #[error("the file ends inside a record")]
    Torn,
    /// The length prefix is impossible.
    #[error("the record length is invalid")]
    Length,
    /// The checksum does not match the content.
    #[error("the record checksum does not match")]
    Checksum,
    /// The checksum matches but the content is not a record this version writes.
    #[error("the record content is malformed")]
    Malformed,
}

/// Appends one record: a length prefix, the CRC32 of the payload, the payload that `write`
/// puts into `buf`. Returns the frame's length.
pub(super) fn frame(
    buf: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>),
) -> Result<usize, TooLarge> {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER]);
    write(buf);
    let payload = &buf[start + FRAME_HEADER..];
    let Ok(len) = u32::try_from(payload.len()) else {
        buf.truncate(start);
        return Err(TooLarge);
    };
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(buf.len() - start)
}

/// The payload of the frame at `at`, and where the next frame starts; `Ok(None)` at the end.
pub(super) fn read_frame(data: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, Corrupt> {
    let rest = data.get(at..).unwrap_or_default();
    if rest.is_empty() {
        return Ok(None);
    }
    let Some((header, body)) = rest.split_first_chunk::<FRAME_HEADER>() else {
        return Err(Corrupt::Torn);
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    // A zero length is what a file extended with zeroes (and never written) reads as.
    if len == 0 {
        return Err(Corrupt::Length);
    }
    let Some(payload) = body.get(..len) else {
        return Err(Corrupt::Torn);
    };
    if crc32fast::hash(payload) != crc {
        return Err(Corrupt::Checksum);
    }
    Ok(Some((payload, at + FRAME_HEADER + len)))
}

/// What an entry record says besides its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EntryHead {
    pub(super) seq: u64,
    /// When it was written, Unix milliseconds.
    pub(super) written_ms: u64,
    /// Not to be delivered before, Unix milliseconds (0: at once).
    pub(super) due_ms: u64,
    pub(super) attempt: u32,
}

/// One record of a segment.
#[derive(Debug)]
pub(super) enum Record<'a> {
    /// An event for a destination.
    Entry {
        head: EntryHead,
        destination: &'a str,
        /// The encoded event ([`encode_event`]).
        event: &'a [u8],
    },
    /// The entry with this sequence number is done with.
    Release(u64),
    /// Of the entries `base..base + count`, only those whose bit is set may still be live.
    LiveSet {
        base: u64,
        count: u32,
        bits: &'a [u8],
    },
}

/// Appends an entry record.
pub(super) fn entry(
    buf: &mut Vec<u8>,
    head: &EntryHead,
    destination: &str,
    event: &[u8],
) -> Result<usize, TooLarge> {
    let destination_len = u32::try_from(destination.len()).map_err(|_| TooLarge)?;
    frame(buf, |buf| {
        buf.reserve(ENTRY_FIXED + destination.len() + event.len());
        buf.push(ENTRY);
        buf.extend_from_slice(&head.seq.to_le_bytes());
        buf.extend_from_slice(&head.written_ms.to_le_bytes());
        buf.extend_from_slice(&head.due_ms.to_le_bytes());
        buf.extend_from_slice(&head.attempt.to_le_bytes());
        buf.extend_from_slice(&destination_len.to_le_bytes());
        buf.extend_from_slice(destination.as_bytes());
        buf.extend_from_slice(event);
    })
}

/// The length of the frame [`entry`] writes.
pub(super) fn entry_len(destination: &str, event: &[u8]) -> usize {
    FRAME_HEADER + ENTRY_FIXED + destination.len() + event.len()
}

/// Appends a release record.
pub(super) fn release(buf: &mut Vec<u8>, seq: u64) -> usize {
    frame(buf, |buf| {
        buf.push(RELEASE);
        buf.extend_from_slice(&seq.to_le_bytes());
    })
    .unwrap_or_default() // nine bytes always fit
}

/// Appends a live-set record.
pub(super) fn live_set(buf: &mut Vec<u8>, base: u64, count: u32, bits: &[u8]) -> usize {
    frame(buf, |buf| {
        buf.push(LIVE_SET);
        buf.extend_from_slice(&base.to_le_bytes());
        buf.extend_from_slice(&count.to_le_bytes());
        buf.extend_from_slice(bits);
    })
    .unwrap_or_default() // at most count / 8 bytes for a u32 count
}

/// Reads a segment record's payload.
pub(super) fn record(payload: &[u8]) -> Result<Record<'_>, Corrupt> {
    let mut r = Reader::new(payload);
    let record = match r.u8()? {
        ENTRY => {
            let head = EntryHead {
                seq: r.u64()?,
                written_ms: r.u64()?,
                due_ms: r.u64()?,
                attempt: r.u32()?,
            };
            let destination = r.str()?;
            Record::Entry {
                head,
                destination,
                event: r.rest(),
            }
        }
        RELEASE => Record::Release(r.u64()?),
        LIVE_SET => {
            let base = r.u64()?;
            let count = r.u32()?;
            let bits = r.rest();
            if bits.len() != (count as usize).div_ceil(8) {
                return Err(Corrupt::Malformed);
            }
            Record::LiveSet { base, count, bits }
        }
        _ => return Err(Corrupt::Malformed),
    };
    Ok(record)
}

/// The event bytes of an entry record's payload (from a frame read back from disk).
pub(super) fn entry_event(payload: &Bytes) -> Result<(EntryHead, Bytes), Corrupt> {
    match record(payload)? {
        Record::Entry { head, event, .. } => {
            let start = payload.len() - event.len();
            Ok((head, payload.slice(start..)))
        }
        _ => Err(Corrupt::Malformed),
    }
}

/// Encodes every field of `event`: the body byte for byte, every header value in order.
pub(super) fn encode_event(event: &WebhookEvent) -> Result<Vec<u8>, TooLarge> {
    let headers: usize = event
        .headers
        .iter()
        .map(|(name, value)| 9 + name.as_str().len() + value.len())
        .sum();
    let mut buf = Vec::with_capacity(
        96 + event.provider.len()
            + event.path.len()
            + event.query.as_ref().map_or(0, String::len)
            + event.correlation_id.len()
            + event.content_type.as_ref().map_or(0, String::len)
            + headers
            + event.body.len(),
    );
    buf.extend_from_slice(event.id.as_uuid().as_bytes());
    buf.extend_from_slice(&event.received_at.unix_timestamp_nanos().to_le_bytes());
    put_str(&mut buf, &event.provider)?;
    put_str(&mut buf, event.method.as_str())?;
    put_str(&mut buf, &event.path)?;
    put_opt(&mut buf, event.query.as_deref())?;
    match event.source_ip {
        None => buf.push(0),
        Some(IpAddr::V4(ip)) => {
            buf.push(4);
            buf.extend_from_slice(&ip.octets());
        }
        Some(IpAddr::V6(ip)) => {
            buf.push(6);
            buf.extend_from_slice(&ip.octets());
        }
    }
    put_str(&mut buf, &event.correlation_id)?;
    put_opt(&mut buf, event.content_type.as_deref())?;
    let count = u32::try_from(event.headers.len()).map_err(|_| TooLarge)?;
    buf.extend_from_slice(&count.to_le_bytes());
    for (name, value) in &event.headers {
        buf.push(u8::from(value.is_sensitive()));
        put_bytes(&mut buf, name.as_str().as_bytes())?;
        put_bytes(&mut buf, value.as_bytes())?;
    }
    put_bytes(&mut buf, &event.body)?;
    Ok(buf)
}

/// Decodes what [`encode_event`] wrote; the body is a slice of `bytes`, not a copy.
pub(super) fn decode_event(bytes: &Bytes) -> Result<WebhookEvent, Corrupt> {
    let mut r = Reader::new(bytes);
    let id = Uuid::from_bytes(r.array::<16>()?);
    let received_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from_le_bytes(r.array()?))
        .map_err(|_| Corrupt::Malformed)?;
    let provider = r.str()?.to_owned();
    let method = Method::from_bytes(r.bytes()?).map_err(|_| Corrupt::Malformed)?;
    let path = r.str()?.to_owned();
    let query = r.opt()?;
    let source_ip = match r.u8()? {
        0 => None,
        4 => Some(IpAddr::V4(Ipv4Addr::from(r.array::<4>()?))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(r.array::<16>()?))),
        _ => return Err(Corrupt::Malformed),
    };
    let correlation_id = r.str()?.to_owned();
    let content_type = r.opt()?;
    let count = r.u32()?;
    let mut headers = HeaderMap::with_capacity((count as usize).min(1024));
    for _ in 0..count {
        let sensitive = r.u8()? & 1 == 1;
        let name = HeaderName::from_bytes(r.bytes()?).map_err(|_| Corrupt::Malformed)?;
        let mut value = HeaderValue::from_bytes(r.bytes()?).map_err(|_| Corrupt::Malformed)?;
        value.set_sensitive(sensitive);
        headers.append(name, value);
    }
    let body_len = r.u32()? as usize;
    let start = r.at;
    if bytes.len() - start != body_len {
        return Err(Corrupt::Malformed);
    }
    let mut event = WebhookEvent::new(provider, bytes.slice(start..))
        .with_id(EventId::from_uuid(id))
        .with_path(path)
        .with_query(query)
        .with_received_at(received_at)
        .with_source_ip(source_ip)
        .with_correlation_id(correlation_id);
    event.method = method;
    event.headers = headers;
    event.content_type = content_type;
    Ok(event)
}

/// Appends a dead-letter record: the failure, then the event as [`encode_event`] writes it.
pub(super) fn dead(
    buf: &mut Vec<u8>,
    destination: &str,
    record: &DeadLetter,
    event: &[u8],
) -> Result<usize, TooLarge> {
    let mut head = Vec::with_capacity(64 + record.reason.len() + record.error_type.len());
    head.push(DEAD);
    put_str(&mut head, destination)?;
    put_str(&mut head, &record.reason)?;
    put_str(&mut head, record.category.as_str())?;
    head.extend_from_slice(&record.attempts.to_le_bytes());
    put_str(&mut head, &record.error_type)?;
    head.extend_from_slice(&record.rejected_at.unix_timestamp_nanos().to_le_bytes());
    put_str(&mut head, &record.destination)?;
    frame(buf, |buf| {
        buf.extend_from_slice(&head);
        buf.extend_from_slice(event);
    })
}

/// Reads a dead-letter record: its destination, the failure and the event.
pub(super) fn read_dead(payload: &Bytes) -> Result<(String, DeadLetter, WebhookEvent), Corrupt> {
    let mut r = Reader::new(payload);
    if r.u8()? != DEAD {
        return Err(Corrupt::Malformed);
    }
    let destination = r.str()?.to_owned();
    let reason = r.str()?.to_owned();
    let category: FailureCategory = r.str()?.parse().map_err(|_| Corrupt::Malformed)?;
    let attempts = r.u32()?;
    let error_type = r.str()?.to_owned();
    let rejected_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from_le_bytes(r.array()?))
        .map_err(|_| Corrupt::Malformed)?;
    let origin = r.str()?.to_owned();
    let at = r.at;
    let event = decode_event(&payload.slice(at..))?;
    let mut record = DeadLetter::new(reason, category, attempts, error_type, origin);
    record.rejected_at = rejected_at;
    Ok((destination, record, event))
}

/// Which dead letter a record is: its destination, its event's id and when it was
/// dead-lettered (Unix ns), without decoding the rest.
pub(super) fn dead_key(payload: &[u8]) -> Result<(&str, EventId, i128), Corrupt> {
    let mut r = Reader::new(payload);
    if r.u8()? != DEAD {
        return Err(Corrupt::Malformed);
    }
    let destination = r.str()?;
    let _reason = r.str()?;
    let _category = r.str()?;
    let _attempts = r.u32()?;
    let _error_type = r.str()?;
    let rejected_at = i128::from_le_bytes(r.array()?);
    let _origin = r.str()?;
    let id = EventId::from_uuid(Uuid::from_bytes(r.array::<16>()?));
    Ok((destination, id, rejected_at))
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) -> Result<(), TooLarge> {
    let len = u32::try_from(bytes.len()).map_err(|_| TooLarge)?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(bytes);
    Ok(())
}

fn put_str(buf: &mut Vec<u8>, s: &str) -> Result<(), TooLarge> {
    put_bytes(buf, s.as_bytes())
}

fn put_opt(buf: &mut Vec<u8>, s: Option<&str>) -> Result<(), TooLarge> {
    match s {
        None => {
            buf.push(0);
            Ok(())
        }
        Some(s) => {
            buf.push(1);
            put_str(buf, s)
        }
    }
}

/// Reads fields front to back; any overrun is [`Corrupt::Malformed`].
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        let end = self.at.checked_add(n).ok_or(Corrupt::Malformed)?;
        let slice = self.data.get(self.at..end).ok_or(Corrupt::Malformed)?;
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Corrupt> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, Corrupt> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, Corrupt> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, Corrupt> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], Corrupt> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn str(&mut self) -> Result<&'a str, Corrupt> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Corrupt::Malformed)
    }

    fn opt(&mut self) -> Result<Option<String>, Corrupt> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?.to_owned())),
            _ => Err(Corrupt::Malformed),
        }
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = self.data.get(self.at..).unwrap_or_default();
        self.at = self.data.len();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WebhookEvent {
        let mut headers = HeaderMap::new();
        headers.append("x-multi", HeaderValue::from_static("one"));
        headers.append("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-multi", HeaderValue::from_static("two"));
        let mut secret = HeaderValue::from_static("Bearer s");
        secret.set_sensitive(true);
        headers.append("authorization", secret);
        headers.append(
            "x-bin",
            HeaderValue::from_bytes(&[0xff, b'a', 0x80]).unwrap(),
        );
        let mut event = WebhookEvent::new("github", Bytes::from_static(&[0, 159, 146, 150, 255]))
            .with_headers(headers)
            .with_query(Some("a=1&b=2".into()))
            .with_source_ip(Some("2001:db8::1".parse().unwrap()))
            .with_correlation_id("req-1");
        event.method = Method::PUT;
        event
    }

    #[test]
    fn events_round_trip_exactly() {
        for event in [sample(), WebhookEvent::new("a", "")] {
            let bytes = Bytes::from(encode_event(&event).unwrap());
            let back = decode_event(&bytes).unwrap();
            assert_eq!(back.id, event.id);
            assert_eq!(back.provider, event.provider);
            assert_eq!(back.method, event.method);
            assert_eq!(back.path, event.path);
            assert_eq!(back.query, event.query);
            assert_eq!(back.source_ip, event.source_ip);
            assert_eq!(back.correlation_id, event.correlation_id);
            assert_eq!(back.content_type, event.content_type);
            assert_eq!(back.received_at, event.received_at);
            assert_eq!(back.body, event.body);
            let pairs = |e: &WebhookEvent| {
                e.headers
                    .iter()
                    .map(|(n, v)| (n.clone(), v.clone(), v.is_sensitive()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(pairs(&back), pairs(&event));
        }
    }

    #[test]
    fn frames_detect_torn_and_corrupt_tails() {
        let event = encode_event(&sample()).unwrap();
        let head = EntryHead {
            seq: 7,
            written_ms: 1,
            due_ms: 0,
            attempt: 2,
        };
        let mut buf = Vec::new();
        let len = entry(&mut buf, &head, "github", &event).unwrap();
        assert_eq!(len, entry_len("github", &event));
        release(&mut buf, 7);
        let (payload, next) = read_frame(&buf, 0).unwrap().unwrap();
        assert_eq!(next, len);
        let Record::Entry {
            head: back,
            destination,
            event: bytes,
        } = record(payload).unwrap()
        else {
            panic!("not an entry");
        };
        assert_eq!((back, destination, bytes), (head, "github", &event[..]));
        assert!(matches!(
            record(read_frame(&buf, next).unwrap().unwrap().0),
            Ok(Record::Release(7))
        ));
        for cut in [1, FRAME_HEADER - 1, FRAME_HEADER + 3, len - 1] {
            assert_eq!(read_frame(&buf[..cut], 0), Err(Corrupt::Torn));
        }
        let mut flipped = buf.clone();
        flipped[len / 2] ^= 1;
        assert_eq!(read_frame(&flipped, 0), Err(Corrupt::Checksum));
        assert_eq!(read_frame(&[0; 16], 0), Err(Corrupt::Length));
        assert_eq!(read_frame(&buf, buf.len()), Ok(None));
    }

    #[test]
    fn dead_letters_round_trip() {
        let event = sample();
        let failure = DeadLetter::new("boom", FailureCategory::Timeout, 3, "timeout", "github");
        let mut buf = Vec::new();
        dead(&mut buf, "github", &failure, &encode_event(&event).unwrap()).unwrap();
        let payload = Bytes::copy_from_slice(read_frame(&buf, 0).unwrap().unwrap().0);
        let (destination, record, back) = read_dead(&payload).unwrap();
        assert_eq!(destination, "github");
        assert_eq!(record, failure);
        assert_eq!(back.id, event.id);
        assert_eq!(back.body, event.body);
    }
}
