//! [`AmqpSubscriber`]: consumes destination queues with manual acknowledgement.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use firefly_webhook::wire::{self, Binding};
use firefly_webhook::{
    Acker, DeadLetter, Delivery, FailureCategory, Position, SubscribeError, Subscriber,
    WebhookEvent, async_trait,
};
use futures_util::StreamExt;
use futures_util::stream::{BoxStream, SelectAll};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::time::Instant;

use crate::config::AmqpConfig;
use crate::connection::{bounded, open};
use crate::depth::DepthWatch;
use crate::error::{Error, Result};
use crate::headers::{self, short};
use crate::topology;

type Deliveries =
    SelectAll<BoxStream<'static, (Arc<str>, lapin::Result<lapin::message::Delivery>)>>;

/// Where a delivery sits on RabbitMQ: the [`Position`] value of every [`Delivery`] an
/// [`AmqpSubscriber`] yields (transport `"amqp"`). Read it back with
/// [`Position::downcast_ref`].
///
/// ```
/// use firefly_webhook::Position;
/// use firefly_webhook_amqp::AmqpTag;
///
/// let position = Position::new("amqp", AmqpTag { delivery_tag: 42, redelivered: true });
/// assert_eq!(position.to_string(), "amqp:#42 (redelivered)");
/// let tag = position.downcast_ref::<AmqpTag>().unwrap();
/// assert_eq!((tag.delivery_tag, tag.redelivered), (42, true));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AmqpTag {
    /// The delivery tag: numbers the deliveries on the subscriber's channel (it starts again
    /// after a reconnect).
    pub delivery_tag: u64,
    /// Whether the broker delivered this message before without it being acknowledged (a
    /// consumer died, or it was abandoned).
    pub redelivered: bool,
}

impl fmt::Display for AmqpTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.delivery_tag)?;
        if self.redelivered {
            f.write_str(" (redelivered)")?;
        }
        Ok(())
    }
}

/// Receives webhooks from one or more destination queues.
///
/// Get one from [`AmqpBroker::subscriber`](crate::AmqpBroker::subscriber). It opens its own
/// connection on the first call to `next` (or [`connect`](Self::connect)) and declares the
/// destinations' topology (when configured) before consuming.
///
/// Each delivery is acknowledged manually once settled through [`Delivery`]:
///
/// | settle        | on RabbitMQ                                                                  |
/// |---------------|------------------------------------------------------------------------------|
/// | `ack`         | `basic.ack`                                                                  |
/// | `retry(delay)`| a copy with the attempt header raised goes to the destination's retry queue for the smallest tier ≥ `delay` (confirmed), then `basic.ack`; the queue's TTL sends it back |
/// | `dead_letter` | the original body and headers plus the failure attributes go to the dead-letter exchange → `{queue}.dlq` (confirmed), then `basic.ack` |
/// | `abandon`     | `basic.nack` with requeue                                                    |
///
/// If the copy cannot be published (say, the DLQ is gone and the dead-letter exchange cannot
/// route it), the original is requeued instead (`basic.nack` with requeue) after
/// [`AmqpConfig::settle_backoff`], and the call fails: the message is never dropped without a
/// confirmed copy, and comes back at most once per backoff rather than in a tight loop. A
/// message that does not follow the wire format is dead-lettered (category `validation`) and
/// skipped.
///
/// While connected it reports the depth of its destinations' main, retry and dead-letter
/// queues every [`AmqpConfig::depth_interval`] (see [`DepthWatch`](crate::DepthWatch)), on a
/// channel of its own: a failed poll never stops consumption.
///
/// At most [`AmqpConfig::prefetch`] deliveries are unacknowledged at once. After a
/// connection loss `next` returns [`SubscribeError::Unavailable`], then reconnects (with
/// backoff) and resumes; unacknowledged deliveries of the lost connection are redelivered by
/// the broker.
pub struct AmqpSubscriber {
    config: Arc<AmqpConfig>,
    destinations: Vec<Arc<str>>,
    live: Option<SubLive>,
    backoff: Option<Duration>,
    retry_at: Option<Instant>,
}

struct SubLive {
    connection: Arc<Connection>,
    deliveries: Deliveries,
    settle: Arc<Settle>,
    /// Polls the destinations' queue depth on a channel of its own; stops with the
    /// connection (dropped with it).
    _depth: DepthWatch,
}

/// What every delivery's acker shares.
struct Settle {
    config: Arc<AmqpConfig>,
    /// Confirm-mode channel for retry and dead-letter copies.
    publish: Channel,
    dead_letter_exchange: ShortString,
}

impl fmt::Debug for AmqpSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpSubscriber")
            .field("destinations", &self.destinations)
            .field("connected", &self.live.is_some())
            .finish_non_exhaustive()
    }
}

impl AmqpSubscriber {
    /// A subscriber that connects on the first call to `next`. Fails if there is no
    /// destination or a name the destinations make is too long for AMQP.
    pub(crate) fn lazy<I, S>(config: Arc<AmqpConfig>, destinations: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let destinations: Vec<Arc<str>> = destinations
            .into_iter()
            .map(|d| Arc::from(d.into()))
            .collect();
        if destinations.is_empty() {
            return Err(Error::NoDestinations);
        }
        for destination in &destinations {
            check_names(&config, destination)?;
        }
        Ok(Self {
            config,
            destinations,
            live: None,
            backoff: None,
            retry_at: None,
        })
    }

    /// Connects now instead of on the first `next`: declares the destinations' topology (when
    /// configured) and starts consuming, so a worker can fail at start-up when RabbitMQ does
    /// not answer, or make sure its queues exist before anything is published. Does nothing
    /// when connected already.
    pub async fn connect(&mut self) -> Result<()> {
        if self.live.is_none() {
            self.live = Some(establish(&self.config, &self.destinations).await?);
            self.backoff = None;
            self.retry_at = None;
        }
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &AmqpConfig {
        &self.config
    }

    /// Whether a connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.live
            .as_ref()
            .is_some_and(|l| l.connection.status().connected())
    }

    /// Closes the connection; unacknowledged deliveries are redelivered to other consumers.
    /// A later `next` reconnects.
    pub async fn close(&mut self) {
        if let Some(live) = self.live.take() {
            let _ = tokio::time::timeout(
                self.config.operation_timeout,
                live.connection.close(200, "OK".into()),
            )
            .await;
        }
    }
}

/// Fails early for a name the subscriber would declare or consume that AMQP cannot carry.
fn check_names(config: &AmqpConfig, destination: &str) -> Result<()> {
    short(destination)?;
    short(&config.queue(destination))?;
    if config.declare_topology {
        short(&config.dead_letter_queue(destination))?;
        for tier in &config.retry_delays {
            short(&config.retry_queue_for_tier(destination, *tier))?;
        }
    }
    Ok(())
}

async fn establish(config: &Arc<AmqpConfig>, destinations: &[Arc<str>]) -> Result<SubLive> {
    let connection = Arc::new(open(config, "subscriber").await?);
    match setup(config, &connection, destinations).await {
        Ok((deliveries, publish)) => Ok(SubLive {
            _depth: DepthWatch::on(
                Arc::clone(&connection),
                Arc::clone(config),
                destinations.to_vec(),
            ),
            connection,
            deliveries,
            settle: Arc::new(Settle {
                config: Arc::clone(config),
                publish,
                dead_letter_exchange: short(&config.dead_letter_exchange)?,
            }),
        }),
        Err(e) => {
            let _ =
                tokio::time::timeout(config.operation_timeout, connection.close(200, "OK".into()))
                    .await;
            Err(e)
        }
    }
}

/// Declares the topology (each destination within its own timeout), then consumes.
async fn setup(
    config: &AmqpConfig,
    connection: &Connection,
    destinations: &[Arc<str>],
) -> Result<(Deliveries, Channel)> {
    let limit = config.operation_timeout;
    let consume = bounded(limit, connection.create_channel()).await?;
    if config.declare_topology {
        bounded(limit, topology::declare_exchanges(&consume, config)).await?;
        for destination in destinations {
            bounded(
                limit,
                topology::declare_destination(&consume, config, destination),
            )
            .await?;
        }
    }
    bounded(
        limit,
        consume.basic_qos(config.prefetch, BasicQosOptions::default()),
    )
    .await?;
    let mut deliveries: Deliveries = SelectAll::new();
    for destination in destinations {
        let consumer = bounded(
            limit,
            consume.basic_consume(
                short(&config.queue(destination))?,
                ShortString::default(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        let destination = Arc::clone(destination);
        deliveries.push(consumer.map(move |d| (Arc::clone(&destination), d)).boxed());
    }
    let publish = bounded(limit, async {
        let publish = connection.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok::<_, Error>(publish)
    })
    .await?;
    Ok((deliveries, publish))
}

impl AmqpSubscriber {
    async fn reconnect(&mut self) -> Result<()> {
        if let Some(at) = self.retry_at {
            tokio::time::sleep_until(at).await;
        }
        match establish(&self.config, &self.destinations).await {
            Ok(live) => {
                tracing::info!(destinations = ?self.destinations, "amqp subscriber connected");
                self.live = Some(live);
                self.backoff = None;
                self.retry_at = None;
                Ok(())
            }
            Err(e) => {
                let next = self
                    .backoff
                    .map_or(self.config.reconnect_min, |d| d.saturating_mul(2))
                    .min(self.config.reconnect_max);
                self.backoff = Some(next);
                self.retry_at = Some(Instant::now() + next);
                Err(e)
            }
        }
    }

    fn lost(&mut self, error: Error) -> SubscribeError {
        tracing::warn!(
            error = &error as &dyn std::error::Error,
            "amqp subscriber lost its connection"
        );
        self.live = None;
        self.backoff = None;
        self.retry_at = Some(Instant::now() + self.config.reconnect_min);
        SubscribeError::Unavailable(Box::new(error))
    }
}

#[async_trait]
impl Subscriber for AmqpSubscriber {
    async fn next(&mut self) -> Option<Result<Delivery, SubscribeError>> {
        loop {
            if self.live.is_none()
                && let Err(e) = self.reconnect().await
            {
                return Some(Err(SubscribeError::Unavailable(Box::new(e))));
            }
            let Some(live) = self.live.as_mut() else {
                continue;
            };
            if !live.settle.publish.status().connected() {
                // The broker closed the channel used for retries and dead letters (e.g. an
                // exchange was deleted): start over, which declares the topology again.
                return Some(Err(self.lost(Error::Disconnected)));
            }
            let status = live.connection.status().clone();
            let item = tokio::select! {
                item = live.deliveries.next() => item,
                // The stream may stay silent when the socket dies; look at the state too.
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    if status.connected() {
                        continue;
                    }
                    return Some(Err(self.lost(Error::Disconnected)));
                }
            };
            match item {
                Some((destination, Ok(delivery))) => {
                    let settle = Arc::clone(&live.settle);
                    if let Some(delivery) = receive(settle, &destination, delivery) {
                        return Some(Ok(delivery));
                    }
                }
                Some((_, Err(e))) => return Some(Err(self.lost(Error::Amqp(e)))),
                None => return Some(Err(self.lost(Error::Disconnected))),
            }
        }
    }
}

/// Turns a broker delivery into a [`Delivery`]; an undecodable one is dead-lettered and
/// skipped (`None`).
fn receive(
    settle: Arc<Settle>,
    destination: &str,
    delivery: lapin::message::Delivery,
) -> Option<Delivery> {
    let lapin::message::Delivery {
        delivery_tag,
        redelivered,
        properties,
        data,
        acker,
        ..
    } = delivery;
    let table = properties.headers().as_ref();
    let attempt_name = wire::attempt_header(Binding::AMQP);
    let attempt = headers::attempt(table, &attempt_name).unwrap_or(1).max(1);
    let body = Bytes::from(data);
    let decoded = {
        let empty = FieldTable::default();
        let flat = headers::flatten(table.unwrap_or(&empty));
        wire::decode(
            flat.iter().map(|(n, v)| (*n, v.as_ref())),
            body.clone(),
            properties.content_type().as_ref().map(ShortString::as_str),
            Binding::AMQP,
        )
    };
    let acker = AmqpAcker {
        settle,
        acker,
        destination: destination.to_owned(),
        properties,
        body,
    };
    match decoded {
        Ok(event) => Some(Delivery::new(
            event,
            destination,
            attempt,
            Position::new(
                crate::TRANSPORT,
                AmqpTag {
                    delivery_tag,
                    redelivered,
                },
            ),
            acker,
        )),
        Err(e) => {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                destination,
                delivery_tag,
                "undecodable message; dead-lettering it"
            );
            let failure = DeadLetter::new(
                e.to_string(),
                FailureCategory::Validation,
                attempt,
                "decode",
                destination,
            );
            // In the background: a failed copy waits out the settle backoff, and the
            // deliveries behind this one need not.
            tokio::spawn(async move {
                if let Err(e) = acker.dead_letter_raw(&failure).await {
                    tracing::error!(
                        error = &e as &dyn std::error::Error,
                        destination = acker.destination,
                        delivery_tag,
                        "could not dead-letter an undecodable message; requeued it"
                    );
                }
            });
            None
        }
    }
}

/// Settles one AMQP delivery.
struct AmqpAcker {
    settle: Arc<Settle>,
    acker: lapin::Acker,
    destination: String,
    properties: BasicProperties,
    body: Bytes,
}

impl AmqpAcker {
    fn limit(&self) -> Duration {
        self.settle.config.operation_timeout
    }

    async fn ack(&self) -> Result<()> {
        bounded(self.limit(), self.acker.ack(BasicAckOptions::default())).await?;
        Ok(())
    }

    /// Publishes a copy with confirm; the caller acks the original afterwards.
    async fn copy(
        &self,
        exchange: ShortString,
        routing_key: &str,
        headers: FieldTable,
    ) -> Result<()> {
        let props = self.properties.clone().with_headers(headers);
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let routing_key = short(routing_key)?;
        let channel = &self.settle.publish;
        let confirmation = bounded(self.settle.config.publish_timeout, async {
            channel
                .basic_publish(exchange, routing_key, options, &self.body, props)
                .await?
                .await
        })
        .await?;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(r)) | Confirmation::Nack(Some(r)) => Err(Error::Unroutable {
                code: r.reply_code,
                text: r.reply_text.to_string(),
            }),
            Confirmation::Nack(None) | Confirmation::NotRequested => Err(Error::Nacked),
        }
    }

    /// After a failed copy: give the original back, after the settle backoff so a copy that
    /// keeps failing does not turn into a hot redelivery loop. Never a reject without
    /// requeue: with the copy unconfirmed, that could drop the message.
    async fn requeue_after(&self, error: Error) -> Error {
        tokio::time::sleep(self.settle.config.settle_backoff).await;
        let _ = bounded(
            self.limit(),
            self.acker.nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            }),
        )
        .await;
        error
    }

    async fn dead_letter_raw(&self, failure: &DeadLetter) -> Result<()> {
        let mut table = self.properties.headers().clone().unwrap_or_default();
        headers::extend(&mut table, failure.encode(Binding::AMQP))?;
        let copied = self
            .copy(
                self.settle.dead_letter_exchange.clone(),
                &self.destination,
                table,
            )
            .await;
        if let Err(e) = copied {
            return Err(self.requeue_after(e).await);
        }
        self.ack().await
    }
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(&self) -> Result<(), SubscribeError> {
        AmqpAcker::ack(self).await.map_err(Error::into_subscribe)
    }

    async fn retry(
        &self,
        event: &WebhookEvent,
        next_attempt: u32,
        delay: Duration,
    ) -> Result<(), SubscribeError> {
        let config = &self.settle.config;
        if config.retry_delays.is_empty() {
            return self.abandon(event, next_attempt).await;
        }
        let (queue, _) = config.retry_queue(&self.destination, delay);
        let mut table = self.properties.headers().clone().unwrap_or_default();
        let attempt = vec![(
            wire::attempt_header(Binding::AMQP),
            headers::number(next_attempt),
        )];
        if let Err(e) = headers::extend(&mut table, attempt) {
            return Err(self.requeue_after(e).await.into_subscribe());
        }
        // The default exchange routes straight to the retry queue by its name.
        if let Err(e) = self.copy(ShortString::default(), &queue, table).await {
            return Err(self.requeue_after(e).await.into_subscribe());
        }
        AmqpAcker::ack(self).await.map_err(Error::into_subscribe)
    }

    async fn dead_letter(
        &self,
        _event: &WebhookEvent,
        failure: &DeadLetter,
    ) -> Result<(), SubscribeError> {
        self.dead_letter_raw(failure)
            .await
            .map_err(Error::into_subscribe)
    }

    async fn abandon(&self, _event: &WebhookEvent, _attempt: u32) -> Result<(), SubscribeError> {
        bounded(
            self.limit(),
            self.acker.nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            }),
        )
        .await
        .map(drop)
        .map_err(Error::into_subscribe)
    }
}
