//! [`AmqpPublisher`]: publisher confirms over a small channel pool, with reconnection.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use firefly_webhook::{PublishError, Publisher, WebhookEvent, async_trait};
use futures_util::StreamExt;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{Channel, Connection, ConnectionStatus, Event};
use tokio::sync::{Notify, watch};

use crate::config::AmqpConfig;
use crate::connection::{bounded, open, properties};
use crate::error::{Error, Result};
use crate::headers::short;
use crate::topology;

/// Publishes webhooks to RabbitMQ with publisher confirms.
///
/// `publish` returns `Ok` only after the broker confirmed the message (for a persistent
/// message on a durable queue: after it was written to disk). Messages are published
/// *mandatory* to [`AmqpConfig::exchange`] with routing key = destination, so a message no
/// queue is bound for comes back as an error instead of vanishing.
///
/// | outcome                                  | error                   | HTTP |
/// |------------------------------------------|-------------------------|------|
/// | confirmed                                | —                       | 202  |
/// | unroutable (`basic.return`)              | [`PublishError::Rejected`] | 500 |
/// | negative confirm (`basic.nack`)          | [`PublishError::Unavailable`] | 503 |
/// | not connected, channel or protocol error | [`PublishError::Unavailable`] | 503 |
/// | connection blocked by a resource alarm   | [`PublishError::Overloaded`] | 503 |
/// | no confirm within `publish_timeout`      | [`PublishError::TimedOut`] | 503 |
///
/// A background task owns the connection: it opens [`AmqpConfig::channels`] confirm-mode
/// channels, declares the topology, and after a connection loss reconnects with exponential
/// backoff and declares it again. Meanwhile publishes fail at once as unavailable. The task
/// ends when the last clone of the publisher is dropped.
///
/// Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct AmqpPublisher {
    shared: Arc<Shared>,
}

struct Live {
    connection: Connection,
    channels: Vec<Slot>,
}

struct Slot {
    // An `Arc` so that taking the channel for one publish is a single reference-count bump.
    channel: RwLock<Arc<Channel>>,
    repairing: tokio::sync::Mutex<()>,
}

struct Shared {
    config: AmqpConfig,
    /// `None` when the configured name is too long (every publish then fails).
    exchange: Option<ShortString>,
    live: RwLock<Option<Arc<Live>>>,
    next: AtomicUsize,
    declared: Mutex<HashSet<String>>,
    declaring: tokio::sync::Mutex<()>,
    /// Wakes the supervisor to check the connection after a failed publish.
    check: Arc<Notify>,
    up: watch::Sender<bool>,
}

impl Shared {
    fn current(&self) -> Option<Arc<Live>> {
        self.live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_live(&self, live: Option<Arc<Live>>) {
        let up = live.is_some();
        *self.live.write().unwrap_or_else(PoisonError::into_inner) = live;
        self.up.send_replace(up);
    }

    fn is_declared(&self, destination: &str) -> bool {
        self.declared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(destination)
    }

    fn declared_snapshot(&self) -> Vec<String> {
        self.declared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

impl fmt::Debug for AmqpPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpPublisher")
            .field("config", &self.shared.config)
            .field("connected", &self.shared.current().is_some())
            .finish_non_exhaustive()
    }
}

impl AmqpPublisher {
    /// Starts a publisher that connects in the background; until it is connected, publishes
    /// fail as unavailable and [`health`](Publisher::health) reports it.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime (it spawns the connection task).
    pub fn new(config: AmqpConfig) -> Self {
        let exchange = ShortString::try_new(config.exchange.as_str()).ok();
        let (up, _) = watch::channel(false);
        let check = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            config,
            exchange,
            live: RwLock::new(None),
            next: AtomicUsize::new(0),
            declared: Mutex::new(HashSet::new()),
            declaring: tokio::sync::Mutex::new(()),
            check: Arc::clone(&check),
            up,
        });
        tokio::spawn(supervise(Arc::downgrade(&shared), check));
        Self { shared }
    }

    /// Starts a publisher and waits for its first connection, at most
    /// [`AmqpConfig::operation_timeout`]; fails if the broker cannot be reached by then
    /// (the publisher is dropped and stops trying).
    pub async fn connect(config: AmqpConfig) -> Result<Self> {
        short(&config.exchange)?;
        short(&config.dead_letter_exchange)?;
        let limit = config.operation_timeout;
        let publisher = Self::new(config);
        let mut up = publisher.shared.up.subscribe();
        match tokio::time::timeout(limit, up.wait_for(|up| *up)).await {
            Ok(Ok(_)) => Ok(publisher),
            Ok(Err(_)) => Err(Error::Disconnected),
            Err(_) => Err(Error::Timeout(limit)),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AmqpConfig {
        &self.shared.config
    }

    /// Whether a connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.shared
            .current()
            .is_some_and(|l| l.connection.status().connected())
    }

    /// Publishes `event` to `destination` and waits for the broker's confirm; the crate's
    /// own error, for callers that want more detail than [`PublishError`].
    pub async fn send(&self, destination: &str, event: &WebhookEvent) -> Result<()> {
        let shared = &self.shared;
        let Some(live) = shared.current() else {
            return Err(Error::Disconnected);
        };
        let status = live.connection.status();
        if !status.connected() {
            shared.check.notify_one();
            return Err(Error::Disconnected);
        }
        if status.blocked() {
            return Err(Error::Blocked);
        }
        if shared.config.declare_topology && !shared.is_declared(destination) {
            self.declare(&live, destination).await?;
        }
        let exchange = shared
            .exchange
            .clone()
            .ok_or_else(|| Error::NameTooLong(shared.config.exchange.clone()))?;
        let routing_key = short(destination)?;
        let props = properties(event)?;
        let channel = self.channel(&live).await?;
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let publish = async {
            channel
                .basic_publish(exchange, routing_key, options, &event.body, props)
                .await?
                .await
        };
        let confirmation = bounded(shared.config.publish_timeout, publish)
            .await
            .inspect_err(|e| {
                if matches!(e, Error::Amqp(_)) {
                    shared.check.notify_one();
                }
            })?;
        settle(confirmation)
    }

    /// A connected channel, round-robin; a channel the broker closed is replaced.
    async fn channel(&self, live: &Live) -> Result<Arc<Channel>> {
        let n = live.channels.len();
        let slot = &live.channels[self.shared.next.fetch_add(1, Ordering::Relaxed) % n];
        let channel = Arc::clone(&slot.channel.read().unwrap_or_else(PoisonError::into_inner));
        if channel.status().connected() {
            return Ok(channel);
        }
        // A channel error (e.g. someone deleted the exchange) closes only that channel.
        let Ok(_guard) = slot.repairing.try_lock() else {
            return Err(Error::Disconnected);
        };
        let config = &self.shared.config;
        let fresh = bounded(config.operation_timeout, async {
            let channel = live.connection.create_channel().await?;
            if config.declare_topology {
                topology::declare_exchanges(&channel, config).await?;
            }
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, Error>(channel)
        })
        .await?;
        if config.declare_topology {
            self.shared
                .declared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
        let fresh = Arc::new(fresh);
        *slot.channel.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&fresh);
        Ok(fresh)
    }

    async fn declare(&self, live: &Live, destination: &str) -> Result<()> {
        let shared = &self.shared;
        let _serial = shared.declaring.lock().await;
        if shared.is_declared(destination) {
            return Ok(());
        }
        let config = &shared.config;
        bounded(config.operation_timeout, async {
            // Its own channel: a refused declaration (406) must not close a publishing channel.
            let channel = live.connection.create_channel().await?;
            let declared = topology::declare_destination(&channel, config, destination).await;
            let _ = channel.close(200, "OK".into()).await;
            declared
        })
        .await
        .inspect_err(|e| tracing::error!(error = %e, destination, "could not declare the destination's queues"))?;
        shared
            .declared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(destination.to_owned());
        Ok(())
    }
}

fn settle(confirmation: Confirmation) -> Result<()> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
            Err(Error::Unroutable {
                code: returned.reply_code,
                text: returned.reply_text.to_string(),
            })
        }
        Confirmation::Nack(None) | Confirmation::NotRequested => Err(Error::Nacked),
    }
}

#[async_trait]
impl Publisher for AmqpPublisher {
    async fn publish(&self, destination: &str, event: WebhookEvent) -> Result<(), PublishError> {
        self.send(destination, &event).await.map_err(Into::into)
    }

    async fn health(&self) -> Result<(), PublishError> {
        let Some(live) = self.shared.current() else {
            return Err(Error::Disconnected.into());
        };
        let status = live.connection.status();
        if !status.connected() {
            Err(Error::Disconnected.into())
        } else if status.blocked() {
            Err(Error::Blocked.into())
        } else {
            Ok(())
        }
    }
}

/// Opens a connection with its channel pool and declares what is already known.
async fn establish(config: &AmqpConfig, known: Vec<String>) -> Result<Live> {
    let connection = open(config, "publisher").await?;
    let setup = async {
        let mut channels = Vec::with_capacity(config.channels.max(1));
        for _ in 0..config.channels.max(1) {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channels.push(Slot {
                channel: RwLock::new(Arc::new(channel)),
                repairing: tokio::sync::Mutex::new(()),
            });
        }
        if config.declare_topology {
            let channel = connection.create_channel().await?;
            topology::declare_exchanges(&channel, config).await?;
            for destination in &known {
                topology::declare_destination(&channel, config, destination).await?;
            }
            let _ = channel.close(200, "OK".into()).await;
        }
        Ok::<_, Error>(channels)
    };
    match bounded(config.operation_timeout, setup).await {
        Ok(channels) => Ok(Live {
            connection,
            channels,
        }),
        Err(e) => {
            let _ =
                tokio::time::timeout(config.operation_timeout, connection.close(200, "OK".into()))
                    .await;
            Err(e)
        }
    }
}

/// Keeps a connection up while any publisher handle lives.
async fn supervise(shared: Weak<Shared>, check: Arc<Notify>) {
    let mut backoff = None::<Duration>;
    loop {
        let Some(this) = shared.upgrade() else { return };
        let config = this.config.clone();
        let known = this.declared_snapshot();
        drop(this);

        if let Some(delay) = backoff {
            tokio::time::sleep(delay).await;
        }
        match establish(&config, known).await {
            Ok(live) => {
                let status = live.connection.status().clone();
                let events = live.connection.events_listener();
                let live = Arc::new(live);
                let Some(this) = shared.upgrade() else { return };
                this.set_live(Some(Arc::clone(&live)));
                drop(this);
                tracing::info!(url = %crate::config::redact_url(&config.url), "amqp publisher connected");
                backoff = None;

                let alive = watch_connection(&shared, &check, &status, events).await;
                let Some(this) = shared.upgrade() else {
                    close(&live, config.operation_timeout).await;
                    return;
                };
                this.set_live(None);
                drop(this);
                if !alive {
                    tracing::warn!("amqp publisher lost its connection; reconnecting");
                }
                close(&live, config.operation_timeout).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "amqp publisher could not connect");
                let next = backoff.map_or(config.reconnect_min, |d| d.saturating_mul(2));
                backoff = Some(next.min(config.reconnect_max).max(Duration::from_millis(1)));
            }
        }
    }
}

/// Returns when the connection is gone (false) or every publisher handle was dropped (true).
async fn watch_connection(
    shared: &Weak<Shared>,
    check: &Notify,
    status: &ConnectionStatus,
    events: impl futures_util::Stream<Item = Event>,
) -> bool {
    let mut events = std::pin::pin!(events);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            event = events.next() => match event {
                // Channel errors arrive here too (a refused declaration): only the
                // connection state below decides whether to reconnect.
                Some(Event::Error(e)) => tracing::warn!(error = %e, "amqp publisher error"),
                Some(Event::ConnectionBlocked(reason)) => {
                    tracing::warn!(%reason, "rabbitmq blocked the publisher connection");
                }
                Some(Event::ConnectionUnblocked) => tracing::info!("rabbitmq unblocked the publisher connection"),
                Some(_) => {}
                None => return false,
            },
            () = check.notified() => {}
            _ = tick.tick() => {
                if shared.strong_count() == 0 {
                    return true;
                }
            }
        }
        if !status.connected() {
            return false;
        }
    }
}

async fn close(live: &Live, limit: Duration) {
    if live.connection.status().connected() {
        let _ = tokio::time::timeout(limit, live.connection.close(200, "OK".into())).await;
    }
}
