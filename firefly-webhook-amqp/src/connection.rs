//! Opening connections, bounding broker calls, building message properties.

use std::future::Future;
use std::time::Duration;

use firefly_webhook::WebhookEvent;
use firefly_webhook::wire::{self, Binding};
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

/// Connects to the broker within `operation_timeout`.
pub(crate) async fn open(config: &AmqpConfig, role: &str) -> Result<Connection> {
    let name = format!("{} ({role})", config.connection_name);
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    bounded(
        config.operation_timeout,
        Connection::connect(&config.url, properties),
    )
    .await
}

/// Message properties for `event`: persistent, message id = event id, content type, receive
/// time, and the wire headers. Nothing else: the broker decodes every property of every
/// publish, so each one costs broker CPU (the type and correlation id are in the headers).
pub(crate) fn properties(event: &WebhookEvent) -> Result<BasicProperties> {
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
