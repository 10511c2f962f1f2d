//! Wire headers ⇄ AMQP field tables.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use bytes::Bytes;
use firefly_webhook::wire::WireHeader;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};

use crate::error::{Error, Result};

/// An AMQP short string, or [`Error::NameTooLong`].
pub(crate) fn short(s: &str) -> Result<ShortString> {
    ShortString::try_new(s).map_err(|_| Error::NameTooLong(s.to_owned()))
}

/// [`short`] for a name the caller owns: no copy.
fn short_owned(s: String) -> Result<ShortString> {
    if s.len() > usize::from(u8::MAX) {
        return Err(Error::NameTooLong(s));
    }
    ShortString::try_new(s).map_err(|e| Error::NameTooLong(e.to_string()))
}

/// Largest encoded headers table accepted. The properties travel in one content-header frame,
/// and a frame over the negotiated `frame_max` (RabbitMQ: 128 KiB) makes the broker close the
/// whole connection, failing every publish in flight.
pub(crate) const MAX_HEADERS_BYTES: usize = 96 * 1024;

/// Builds the headers table: values as long strings (raw bytes); a name that repeats
/// (an HTTP header sent several times) becomes a field array of its values in order.
pub(crate) fn to_table(headers: Vec<WireHeader>) -> Result<FieldTable> {
    // Name (1 + n), type tag (1), length (4) and value per entry.
    let size: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 6).sum();
    if size > MAX_HEADERS_BYTES {
        return Err(Error::HeadersTooLarge(size));
    }
    let mut map: BTreeMap<ShortString, AMQPValue> = BTreeMap::new();
    for (name, value) in headers {
        let value = AMQPValue::LongString(LongString::from(Vec::from(value)));
        match map.entry(short_owned(name)?) {
            Entry::Vacant(slot) => {
                slot.insert(value);
            }
            Entry::Occupied(mut slot) => match slot.get_mut() {
                AMQPValue::FieldArray(values) => values.push(value),
                first => {
                    let first = std::mem::replace(first, AMQPValue::Void);
                    *slot.get_mut() = AMQPValue::FieldArray(FieldArray::from(vec![first, value]));
                }
            },
        }
    }
    Ok(FieldTable::from(map))
}

/// Adds `headers` to `table`, replacing values of the same name.
pub(crate) fn extend(table: &mut FieldTable, headers: Vec<WireHeader>) -> Result<()> {
    for (name, value) in headers {
        table.insert(
            short_owned(name)?,
            AMQPValue::LongString(LongString::from(Vec::from(value))),
        );
    }
    Ok(())
}

/// The bytes of a scalar header value; numbers as decimal text (other producers may send
/// integers), other types are skipped.
fn scalar(value: &AMQPValue) -> Option<Cow<'_, [u8]>> {
    Some(match value {
        AMQPValue::LongString(s) => Cow::Borrowed(s.as_bytes()),
        AMQPValue::ShortString(s) => Cow::Borrowed(s.as_str().as_bytes()),
        AMQPValue::ByteArray(b) => Cow::Borrowed(b.as_slice()),
        AMQPValue::ShortShortInt(n) => Cow::Owned(n.to_string().into_bytes()),
        AMQPValue::ShortShortUInt(n) => Cow::Owned(n.to_string().into_bytes()),
        AMQPValue::ShortInt(n) => Cow::Owned(n.to_string().into_bytes()),
        AMQPValue::ShortUInt(n) => Cow::Owned(n.to_string().into_bytes()),
        AMQPValue::LongInt(n) => Cow::Owned(n.to_string().into_bytes()),
        AMQPValue::LongUInt(n) => Cow::Owned(n.to_string().into_bytes()),
        AMQPValue::LongLongInt(n) => Cow::Owned(n.to_string().into_bytes()),
        _ => return None,
    })
}

/// Flattens a headers table back into (name, value) pairs; a field array yields one pair per
/// element, in order.
pub(crate) fn flatten(table: &FieldTable) -> Vec<(&str, Cow<'_, [u8]>)> {
    let mut out = Vec::with_capacity(table.inner().len());
    for (name, value) in table.inner() {
        if let AMQPValue::FieldArray(values) = value {
            out.extend(
                values
                    .as_slice()
                    .iter()
                    .filter_map(scalar)
                    .map(|v| (name.as_str(), v)),
            );
        } else if let Some(v) = scalar(value) {
            out.push((name.as_str(), v));
        }
    }
    out
}

/// The attempt number in `name`, if present and numeric.
pub(crate) fn attempt(table: Option<&FieldTable>, name: &str) -> Option<u32> {
    let value = table?.inner().get(name)?;
    let bytes = scalar(value)?;
    std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
}

/// A header value as decimal text, as written for the attempt counter.
pub(crate) fn number(n: u32) -> Bytes {
    Bytes::from(n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use firefly_webhook::WebhookEvent;
    use firefly_webhook::http::{HeaderMap, HeaderValue};
    use firefly_webhook::wire::{self, Binding};

    #[test]
    fn repeated_headers_become_arrays_and_round_trip() {
        let mut headers = HeaderMap::new();
        headers.append("x-multi", HeaderValue::from_static("one"));
        headers.append("x-multi", HeaderValue::from_static("two"));
        headers.append("x-multi", HeaderValue::from_static("three"));
        headers.append("x-bin", HeaderValue::from_bytes(&[0xff, b'a']).unwrap());
        headers.append("content-type", HeaderValue::from_static("application/json"));
        let event = WebhookEvent::new("github", &b"\x00\xff{}"[..]).with_headers(headers);

        let table = to_table(wire::encode(&event, Binding::AMQP)).unwrap();
        let AMQPValue::FieldArray(multi) = &table.inner()["http_x-multi"] else {
            panic!("not an array")
        };
        assert_eq!(multi.as_slice().len(), 3);
        assert!(matches!(
            table.inner()["cloudEvents:id"],
            AMQPValue::LongString(_)
        ));

        let flat = flatten(&table);
        let back = wire::decode(
            flat.iter().map(|(n, v)| (*n, v.as_ref())),
            event.body.clone(),
            Some("application/json"),
            Binding::AMQP,
        )
        .unwrap();
        assert_eq!(back.id, event.id);
        assert_eq!(back.headers, event.headers);
        let multi: Vec<_> = back.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["one", "two", "three"]);
    }

    #[test]
    fn reads_attempts_as_text_or_numbers() {
        let mut table = FieldTable::default();
        table.insert("a".into(), AMQPValue::LongString("3".into()));
        table.insert("b".into(), AMQPValue::LongLongInt(4));
        table.insert("c".into(), AMQPValue::LongString("x".into()));
        assert_eq!(attempt(Some(&table), "a"), Some(3));
        assert_eq!(attempt(Some(&table), "b"), Some(4));
        assert_eq!(attempt(Some(&table), "c"), None);
        assert_eq!(attempt(None, "a"), None);
    }

    #[test]
    fn oversized_headers_are_refused() {
        let big = Bytes::from(vec![b'a'; MAX_HEADERS_BYTES]);
        assert!(matches!(
            to_table(vec![("http_x-big".to_owned(), big)]),
            Err(Error::HeadersTooLarge(_))
        ));
    }

    #[test]
    fn long_names_are_errors_not_panics() {
        let name = "x".repeat(300);
        assert!(matches!(
            to_table(vec![(name, Bytes::new())]),
            Err(Error::NameTooLong(_))
        ));
    }
}
