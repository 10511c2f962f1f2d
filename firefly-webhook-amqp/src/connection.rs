//! Opening connections, bounding broker calls, building message properties.

use std::future::Future;
use std::time::Duration;

use firefly_webhook::WebhookEvent;
use firefly_webhook::wire::{self, Binding};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::ShortString;
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::config::AmqpConfig;
use crate::error::{Error, Result};
use crate::headers::{short, to_table};

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// Runs a broker call, giving up after `limit`.
pub(crate) async fn bounded<T, E, F>(limit: Duration, f: F) -> Result<T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<Error>,
{
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(Error::Timeout(limit)),
    }
}

/// Connects to the broker within `operation_timeout`, trusting
/// [`AmqpConfig::tls_ca_file`] (read again on every attempt) for `amqps://`.
pub(crate) async fn open(config: &AmqpConfig, role: &str) -> Result<Connection> {
    let name = format!("{} ({role})", config.connection_name);
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let tls = OwnedTLSConfig {
        cert_chain: config.tls_ca()?,
        ..OwnedTLSConfig::default()
    };
    let runtime = lapin::runtime::default_runtime()?;
    bounded(
        config.operation_timeout,
        Connection::connect_with_config(&config.url, properties, tls, runtime),
    )
    .await
}

/// The AMQP message properties [`AmqpPublisher`](crate::AmqpPublisher) sends for `event`:
/// persistent (delivery mode 2), message id = event id, content type, timestamp = receive time
/// (seconds), and the [wire format](firefly_webhook::wire) headers with the `cloudEvents:`
/// prefix, a repeated HTTP header as a field array. The message body is `event.body` unchanged.
///
/// For tools that publish or replay events with their own lapin channel in the same format.
/// Nothing else is set: the broker decodes every property of every publish, so each one costs
/// broker CPU.
///
/// # Errors
///
/// [`Error::NameTooLong`] for a header name over 255 bytes, [`Error::HeadersTooLarge`] when
/// the headers would not fit in one frame.
pub fn properties(event: &WebhookEvent) -> Result<BasicProperties> {
    let headers = to_table(wire::encode(event, Binding::AMQP))?;
    let timestamp = u64::try_from(event.received_at.unix_timestamp()).unwrap_or_default();
    let mut props = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_message_id(short(&event.id.to_string())?)
        .with_timestamp(timestamp)
        .with_headers(headers);
    if let Some(ct) = &event.content_type {
        // An over-long Content-Type still travels in the `http_content-type` header.
        match ShortString::try_new(ct.as_str()) {
            Ok(ct) => props = props.with_content_type(ct),
            Err(_) => {
                tracing::warn!(event_id = %event.id, "content type too long for the amqp property");
            }
        }
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use firefly_webhook::http::{HeaderMap, HeaderValue};
    use lapin::types::AMQPValue;

    use super::*;

    #[test]
    fn properties_carry_the_event_in_the_wire_format() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("x-github-event", HeaderValue::from_static("push"));
        let event = WebhookEvent::new("github", &b"{}"[..]).with_headers(headers);

        let props = properties(&event).unwrap();
        assert_eq!(props.delivery_mode(), &Some(PERSISTENT));
        let id = event.id.to_string();
        assert_eq!(
            props.message_id().as_ref().map(ShortString::as_str),
            Some(id.as_str())
        );
        assert_eq!(
            props.content_type().as_ref().map(ShortString::as_str),
            Some("application/json")
        );
        let table = props.headers().as_ref().unwrap().inner();
        assert_eq!(
            table.get("cloudEvents:id"),
            Some(&AMQPValue::LongString(id.as_str().into()))
        );
        assert_eq!(
            table.get("http_x-github-event"),
            Some(&AMQPValue::LongString("push".into()))
        );
    }

    #[test]
    fn a_header_name_over_255_bytes_is_an_error() {
        let mut headers = HeaderMap::new();
        let name = "x".repeat(300);
        headers.insert(
            firefly_webhook::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_static("v"),
        );
        let event = WebhookEvent::new("github", &b"{}"[..]).with_headers(headers);
        assert!(matches!(properties(&event), Err(Error::NameTooLong(n)) if n.ends_with("xxx")));
    }
}
