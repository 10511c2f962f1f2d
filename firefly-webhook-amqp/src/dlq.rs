//! Reading, replaying and purging dead letters: [`DeadLetters`].
//!
//! A subscriber dead-letters a message by publishing a copy, with the
//! [dead-letter attributes](firefly_webhook::wire) added to its headers, to the dead-letter
//! exchange, which routes it to the destination's dead-letter queue
//! ([`AmqpConfig::dead_letter_queue`], `{queue}.dlq`); messages RabbitMQ itself dead-letters
//! (a quorum queue's delivery limit) land there too, with its `x-death` header instead. This
//! module reads those queues back, republishes what an operator wants replayed and removes
//! what they purge.
//!
//! A [`Cursor`] takes the messages one by one with `basic.get` and holds them unacknowledged:
//!
//! - **replay** publishes a copy straight to the destination's queue (through the default
//!   exchange, so other queues bound to the destination's routing key, which processed the
//!   event, do not get it again) with the original body and properties, without the
//!   dead-letter attributes, the attempt counter and `x-death`, plus [`REPLAYED_AT`]; waits
//!   for the broker's confirm; then acknowledges the dead letter, which removes it;
//! - **purge** acknowledges it without a copy;
//! - everything else (not selected, failed, not reached) goes back to the dead-letter queue
//!   when the cursor closes its channel, in its order. Returned by closing the channel, not by
//!   a reject (which a quorum queue counts toward its delivery limit).
//!
//! A cursor interrupted between the confirm and the acknowledgement (a crash, a killed
//! process) leaves the event in both queues: the worker's idempotency absorbs the duplicate.
//! Nothing is ever acknowledged before its copy was confirmed. A pass covers the messages the
//! queue held when it was opened; those dead-lettered meanwhile (a replayed event failing
//! again) wait for the next one.
//!
//! ```no_run
//! use firefly_webhook_amqp::AmqpConfig;
//! use firefly_webhook_amqp::dlq::DeadLetters;
//!
//! # async fn run() -> Result<(), firefly_webhook_amqp::dlq::Error> {
//! let dead_letters = DeadLetters::connect(AmqpConfig::default()).await?;
//! for letter in dead_letters.list("github", |_| true).await? {
//!     println!("{:?} {:?}", letter.id(), letter.dead_letter.as_ref().map(|d| &d.reason));
//! }
//! let summary = dead_letters.replay("github", |_| true, None).await?;
//! println!("{} replayed, {} failed", summary.handled, summary.failed);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use firefly_webhook::wire::{self, Binding, WireError, WireHeader};
use firefly_webhook::{DeadLetter, EventId, FailureCategory, WebhookEvent};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use crate::config::AmqpConfig;
use crate::connection::{bounded, open};
use crate::headers::{flatten, short};
use crate::subscriber::AmqpTag;

/// The header a replayed message carries: when it was replayed (RFC 3339), a CloudEvents
/// extension attribute like the dead-letter ones.
pub const REPLAYED_AT: &str = "cloudEvents:replayedat";

/// Prefix of the dead-letter attributes, which a replayed message drops.
const DEAD_LETTER_ATTRIBUTES: &str = "cloudEvents:deadletter";

/// Headers RabbitMQ writes when it dead-letters or redelivers a message itself.
const BROKER_HEADERS: [&str; 4] = [
    "x-death",
    "x-first-death-",
    "x-last-death-",
    "x-delivery-count",
];

/// What can go wrong reading, replaying or removing dead letters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Connecting, reading or acknowledging failed.
    #[error(transparent)]
    Amqp(#[from] crate::Error),
    /// Republishing the message failed (not confirmed, unroutable): it stays in the
    /// dead-letter queue.
    #[error("republishing the dead letter failed")]
    Publish(#[source] crate::Error),
    /// The message does not follow the wire format, so it cannot be replayed (purge it).
    #[error("the dead letter cannot be replayed: {0}")]
    Undecodable(String),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One message of a dead-letter queue.
#[derive(Debug)]
#[non_exhaustive]
pub struct DeadLettered {
    /// The original event, as the worker received it; an error for a message that does not
    /// follow the wire format (dead-lettered as a `validation` failure).
    pub event: Result<WebhookEvent, WireError>,
    /// The message body: the original request body.
    pub body: Bytes,
    /// Why it was dead-lettered: the dead-letter attributes, else what RabbitMQ's `x-death`
    /// says; `None` when the message has neither.
    pub dead_letter: Option<DeadLetter>,
    /// The destination it is replayed to.
    pub destination: String,
    /// Its delivery on the cursor's channel.
    pub position: AmqpTag,
    /// The message headers, flattened (a field array gives one pair per value).
    pub headers: Vec<WireHeader>,
    properties: BasicProperties,
}

impl DeadLettered {
    /// The event id, when the message has a readable one.
    pub fn id(&self) -> Option<EventId> {
        match &self.event {
            Ok(event) => Some(event.id),
            Err(_) => self.attribute("cloudEvents:id")?.parse().ok(),
        }
    }

    /// The provider, when the message names one.
    pub fn provider(&self) -> Option<&str> {
        match &self.event {
            Ok(event) => Some(&event.provider),
            Err(_) => self.attribute("cloudEvents:provider"),
        }
    }

    fn attribute(&self, name: &str) -> Option<&str> {
        let (_, value) = self.headers.iter().find(|(n, _)| n == name)?;
        std::str::from_utf8(value).ok()
    }
}

/// How a replay or purge went (the shape every transport shares).
pub use firefly_webhook::dead_letter::Summary;

/// The dead-letter queues of a RabbitMQ broker: read them, replay messages to their
/// destination's queue, purge them. See the [module docs](self).
///
/// [`new`](Self::new) checks the config and connects nothing (each [`Cursor`] opens its own
/// connection); [`connect`](Self::connect) also checks that RabbitMQ answers.
#[derive(Clone)]
pub struct DeadLetters {
    config: Arc<AmqpConfig>,
}

impl fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetters")
            .field("config", &self.config)
            .finish()
    }
}

impl DeadLetters {
    /// Dead letters on the broker of `config`, in its
    /// [dead-letter queues](AmqpConfig::dead_letter_queue).
    pub fn new(config: AmqpConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// [`new`](Self::new), then connects once within
    /// [`operation_timeout`](AmqpConfig::operation_timeout), so a wrong address or password
    /// fails here.
    pub async fn connect(config: AmqpConfig) -> Result<Self> {
        let this = Self::new(config)?;
        let connection = open(&this.config, "dlq").await?;
        close(&this.config, &connection).await;
        Ok(this)
    }

    /// The dead-letter queue of `destination`.
    pub fn queue(&self, destination: &str) -> String {
        self.config.dead_letter_queue(destination)
    }

    /// A cursor over the messages of `destination`'s dead-letter queue, as it is now; empty
    /// when the queue does not exist.
    pub async fn open(&self, destination: &str) -> Result<Cursor> {
        let config = &self.config;
        let queue = short(&self.queue(destination))?;
        let target = short(&config.queue(destination))?;
        let connection = open(config, "dlq").await?;
        match setup(config, &connection, queue.clone()).await {
            Ok((len, get, publish)) => Ok(Cursor {
                config: Arc::clone(config),
                connection,
                get,
                publish,
                queue,
                target,
                destination: destination.to_owned(),
                len,
                taken: 0,
                dry_run: false,
            }),
            Err(e) => {
                close(config, &connection).await;
                Err(e)
            }
        }
    }

    /// The dead letters of `destination` that `filter` selects, in queue order. Removes
    /// nothing: every message goes back to the queue.
    pub async fn list<F>(&self, destination: &str, filter: F) -> Result<Vec<DeadLettered>>
    where
        F: Fn(&DeadLettered) -> bool,
    {
        let mut cursor = self.open(destination).await?;
        let mut out = Vec::new();
        while let Some(letter) = cursor.next().await? {
            if filter(&letter) {
                out.push(letter);
            }
        }
        cursor.close().await;
        Ok(out)
    }

    /// Replays the dead letters of `destination` that `filter` selects, at most `limit` of
    /// them, each removed once the broker confirmed its copy. One that fails to replay stays.
    pub async fn replay<F>(
        &self,
        destination: &str,
        filter: F,
        limit: Option<u64>,
    ) -> Result<Summary>
    where
        F: Fn(&DeadLettered) -> bool,
    {
        let mut cursor = self.open(destination).await?;
        let mut summary = Summary::default();
        while let Some(letter) = cursor.next().await? {
            if !filter(&letter) || limit.is_some_and(|l| summary.handled >= l) {
                summary.skipped += 1;
                continue;
            }
            match cursor.replay(&letter).await {
                Ok(()) => summary.handled += 1,
                Err(Error::Publish(_) | Error::Undecodable(_)) => summary.failed += 1,
                Err(e) => return Err(e),
            }
        }
        cursor.close().await;
        Ok(summary)
    }

    /// Removes the dead letters of `destination` that `filter` selects without replaying
    /// them.
    pub async fn purge<F>(&self, destination: &str, filter: F) -> Result<Summary>
    where
        F: Fn(&DeadLettered) -> bool,
    {
        let mut cursor = self.open(destination).await?;
        let mut summary = Summary::default();
        while let Some(letter) = cursor.next().await? {
            if filter(&letter) {
                cursor.remove(&letter).await?;
                summary.handled += 1;
            } else {
                summary.skipped += 1;
            }
        }
        cursor.close().await;
        Ok(summary)
    }
}

/// The queue's depth (0 when it does not exist), a channel to take from and a confirm-mode
/// channel to publish on.
async fn setup(
    config: &AmqpConfig,
    connection: &Connection,
    queue: ShortString,
) -> Result<(u64, Channel, Channel)> {
    let limit = config.operation_timeout;
    // Its own channel: declaring a queue that does not exist closes the channel (404).
    let probe = bounded(limit, connection.create_channel()).await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = bounded(
        limit,
        probe.queue_declare(queue, passive, FieldTable::default()),
    )
    .await;
    let len = match declared {
        Ok(q) => {
            let _ = bounded(limit, probe.close(200, "OK".into())).await;
            u64::from(q.message_count())
        }
        Err(e) if is_not_found(&e) => 0,
        Err(e) => return Err(e.into()),
    };
    let get = bounded(limit, connection.create_channel()).await?;
    let publish = bounded(limit, async {
        let publish = connection.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok::<_, crate::Error>(publish)
    })
    .await?;
    Ok((len, get, publish))
}

fn is_not_found(error: &crate::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        error,
        crate::Error::Amqp(e) if matches!(
            e.kind(),
            lapin::ErrorKind::ProtocolError(p)
                if *p.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)
        )
    )
}

async fn close(config: &AmqpConfig, connection: &Connection) {
    let _ = bounded(config.operation_timeout, connection.close(200, "OK".into())).await;
}

/// A pass over one dead-letter queue: the messages it held when opened, taken one by one and
/// held until [replayed](Self::replay) or [removed](Self::remove); the others go back to the
/// queue when it [closes](Self::close) (or its connection drops).
///
/// In a [dry run](Self::dry_run) replay and remove publish and acknowledge nothing but are
/// counted as if they had, so a dry run reports what a real one would do.
pub struct Cursor {
    config: Arc<AmqpConfig>,
    connection: Connection,
    get: Channel,
    publish: Channel,
    queue: ShortString,
    /// The destination's queue, which replays go to.
    target: ShortString,
    destination: String,
    len: u64,
    taken: u64,
    dry_run: bool,
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor")
            .field("queue", &self.queue)
            .field("len", &self.len)
            .field("taken", &self.taken)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

impl Cursor {
    /// Publishes and acknowledges nothing, as a rehearsal.
    #[must_use]
    pub fn dry_run(mut self, on: bool) -> Self {
        self.dry_run = on;
        self
    }

    /// The destination whose dead letters this reads.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// The dead-letter queue.
    pub fn queue(&self) -> &str {
        self.queue.as_str()
    }

    /// How many messages the pass covers: the queue's ready messages when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the pass covers no message.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next message, or `None` once the pass took as many as the queue held when opened
    /// (or the queue ran out).
    pub async fn next(&mut self) -> Result<Option<DeadLettered>> {
        if self.taken >= self.len {
            return Ok(None);
        }
        let options = BasicGetOptions { no_ack: false };
        let got = bounded(
            self.config.operation_timeout,
            self.get.basic_get(self.queue.clone(), options),
        )
        .await?;
        let Some(got) = got else {
            self.taken = self.len;
            return Ok(None);
        };
        self.taken += 1;
        Ok(Some(decode(got.delivery, &self.destination)))
    }

    /// Whether `letter` can leave the queue now: always on RabbitMQ.
    pub fn is_removable(&self, _letter: &DeadLettered) -> bool {
        true
    }

    /// Publishes a copy of `letter` to its destination's queue (original body and properties,
    /// without the dead-letter attributes, the attempt counter and `x-death`, with
    /// [`REPLAYED_AT`]), waits for the broker's confirm, then removes it.
    ///
    /// Fails without publishing when it is not in the wire format
    /// ([`Error::Undecodable`]); when the copy is not confirmed ([`Error::Publish`]) the
    /// message stays, to go back to the queue.
    pub async fn replay(&mut self, letter: &DeadLettered) -> Result<()> {
        if let Err(e) = &letter.event {
            return Err(Error::Undecodable(e.to_string()));
        }
        if !self.dry_run {
            let properties = replay_properties(&letter.properties, &rfc3339(SystemTime::now()));
            let options = BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            };
            let publish = async {
                self.publish
                    .basic_publish(
                        ShortString::default(),
                        self.target.clone(),
                        options,
                        &letter.body,
                        properties,
                    )
                    .await?
                    .await
            };
            let confirmation = bounded(self.config.publish_timeout, publish)
                .await
                .map_err(Error::Publish)?;
            confirmed(confirmation).map_err(Error::Publish)?;
        }
        self.remove(letter).await
    }

    /// Removes `letter` without replaying it (acknowledges it).
    pub async fn remove(&mut self, letter: &DeadLettered) -> Result<()> {
        if !self.dry_run {
            bounded(
                self.config.operation_timeout,
                self.get
                    .basic_ack(letter.position.delivery_tag, BasicAckOptions::default()),
            )
            .await?;
        }
        Ok(())
    }

    /// Ends the pass: what was neither replayed nor removed goes back to the queue.
    pub async fn close(self) {
        close(&self.config, &self.connection).await;
    }
}

fn confirmed(confirmation: Confirmation) -> Result<(), crate::Error> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(r)) | Confirmation::Nack(Some(r)) => Err(crate::Error::Unroutable {
            code: r.reply_code,
            text: r.reply_text.to_string(),
        }),
        Confirmation::Nack(None) | Confirmation::NotRequested => Err(crate::Error::Nacked),
    }
}

/// Reads a dead letter; never fails (an undecodable message is still listed).
fn decode(delivery: lapin::message::Delivery, destination: &str) -> DeadLettered {
    let lapin::message::Delivery {
        delivery_tag,
        redelivered,
        properties,
        data,
        ..
    } = delivery;
    let empty = FieldTable::default();
    let table = properties.headers().as_ref().unwrap_or(&empty);
    let headers: Vec<WireHeader> = flatten(table)
        .into_iter()
        .map(|(name, value)| (name.to_owned(), Bytes::copy_from_slice(&value)))
        .collect();
    let pairs = || headers.iter().map(|(n, v)| (n.as_str(), v.as_ref()));
    let body = Bytes::from(data);
    let content_type = properties.content_type().as_ref().map(ShortString::as_str);
    let event = wire::decode(pairs(), body.clone(), content_type, Binding::AMQP);
    let dead_letter = DeadLetter::decode(pairs(), Binding::AMQP)
        .or_else(|| x_death(table.inner().get("x-death")?, destination));
    DeadLettered {
        event,
        body,
        dead_letter,
        destination: destination.to_owned(),
        position: AmqpTag {
            delivery_tag,
            redelivered,
        },
        headers,
        properties,
    }
}

/// What RabbitMQ's `x-death` header says about a message it dead-lettered itself: its latest
/// entry's reason, count and time.
fn x_death(value: &AMQPValue, destination: &str) -> Option<DeadLetter> {
    let AMQPValue::FieldArray(entries) = value else {
        return None;
    };
    let AMQPValue::FieldTable(latest) = entries.as_slice().first()? else {
        return None;
    };
    let field = |name: &str| latest.inner().get(name);
    let reason = match field("reason") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => "unknown".to_owned(),
    };
    let count = match field("count") {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        _ => 0,
    };
    let mut attributes = DeadLetter::new(
        format!("rabbitmq dead-lettered it ({reason})"),
        FailureCategory::Processing,
        count,
        format!("rabbitmq-{reason}"),
        destination,
    )
    .encode(Binding::AMQP);
    // The time goes through the attribute's text form: this crate has no date library.
    if let Some(AMQPValue::Timestamp(at)) = field("time") {
        let at = rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(*at));
        attributes.push((
            format!("{DEAD_LETTER_ATTRIBUTES}at"),
            Bytes::from(at.into_bytes()),
        ));
    }
    DeadLetter::decode(
        attributes.iter().map(|(n, v)| (n.as_str(), v.as_ref())),
        Binding::AMQP,
    )
}

/// The properties of a replayed message: the original ones, with the headers less the
/// dead-letter attributes, the attempt counter, RabbitMQ's own and an earlier replay mark,
/// plus [`REPLAYED_AT`].
fn replay_properties(original: &BasicProperties, replayed_at: &str) -> BasicProperties {
    let attempt = wire::attempt_header(Binding::AMQP);
    let mut kept: BTreeMap<ShortString, AMQPValue> = original
        .headers()
        .as_ref()
        .map(|table| {
            table
                .inner()
                .iter()
                .filter(|(name, _)| {
                    let name = name.as_str();
                    !(name.starts_with(DEAD_LETTER_ATTRIBUTES)
                        || name == attempt
                        || name == REPLAYED_AT
                        || BROKER_HEADERS.iter().any(|h| name.starts_with(h)))
                })
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect()
        })
        .unwrap_or_default();
    kept.insert(
        REPLAYED_AT.into(),
        AMQPValue::LongString(LongString::from(replayed_at)),
    );
    original.clone().with_headers(FieldTable::from(kept))
}

/// `at` as RFC 3339 UTC with whole seconds, e.g. `2026-01-02T03:04:05Z` (the crate has no
/// date library of its own).
fn rfc3339(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, day) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = i64::try_from(days).unwrap_or_default() + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        day / 3_600,
        day % 3_600 / 60,
        day % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lapin::types::FieldArray;

    use super::*;
    use crate::headers::to_table;

    #[test]
    fn replayed_messages_drop_dead_letter_attributes_attempts_and_x_death() {
        let event = WebhookEvent::new("github", "{}");
        let mut headers = wire::encode(&event, Binding::AMQP);
        headers.push((
            wire::attempt_header(Binding::AMQP),
            Bytes::from_static(b"3"),
        ));
        let failure = DeadLetter::new("boom", FailureCategory::Timeout, 3, "timeout", "github");
        headers.extend(failure.encode(Binding::AMQP));
        let mut table = to_table(headers).unwrap();
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::default()),
        );
        table.insert(
            "x-first-death-queue".into(),
            AMQPValue::LongString("q".into()),
        );
        let original = crate::connection::properties(&event)
            .unwrap()
            .with_headers(table);

        let replayed = replay_properties(&original, "2026-01-02T03:04:05Z");
        let names: Vec<&str> = replayed
            .headers()
            .as_ref()
            .unwrap()
            .inner()
            .keys()
            .map(ShortString::as_str)
            .collect();
        assert!(names.contains(&"cloudEvents:id"));
        assert!(names.contains(&REPLAYED_AT));
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("cloudEvents:deadletter"))
        );
        assert!(!names.iter().any(|n| n.starts_with("x-")));
        assert!(!names.contains(&"cloudEvents:attempt"));
        assert_eq!(replayed.message_id(), original.message_id());
        assert_eq!(replayed.content_type(), original.content_type());
        assert_eq!(replayed.delivery_mode(), original.delivery_mode());
    }

    #[test]
    fn x_death_becomes_a_dead_letter() {
        let mut entry = FieldTable::default();
        entry.insert(
            "reason".into(),
            AMQPValue::LongString("delivery_limit".into()),
        );
        entry.insert("count".into(), AMQPValue::LongLongInt(20));
        entry.insert("time".into(), AMQPValue::Timestamp(1_767_323_045));
        let value = AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(entry)]));
        let dl = x_death(&value, "github").unwrap();
        assert_eq!(dl.attempts, 20);
        assert_eq!(dl.category, FailureCategory::Processing);
        assert_eq!(dl.error_type, "rabbitmq-delivery_limit");
        assert_eq!(dl.destination, "github");
        assert_eq!(dl.rejected_at.unix_timestamp(), 1_767_323_045);
        assert!(x_death(&AMQPValue::LongString("x".into()), "github").is_none());
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        let at = |secs| rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_767_323_045), "2026-01-02T03:04:05Z");
    }
}
