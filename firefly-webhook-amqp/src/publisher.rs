//! [`AmqpPublisher`]: publisher confirms over a small channel pool, with reconnection.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use firefly_webhook::publish::RecentNames;
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
/// Get one from [`AmqpBroker::publisher`](crate::AmqpBroker::publisher). A background task
/// owns the connection: it starts on first use (or in
/// [`AmqpBroker::connect`](crate::AmqpBroker::connect)), opens [`AmqpConfig::channels`]
/// confirm-mode channels, declares the exchanges, and after a connection loss reconnects with
/// exponential backoff and declares them again. Meanwhile publishes fail at once as
/// unavailable. A destination's queues are declared before its first publish on each
/// connection, each destination on its own within [`AmqpConfig::operation_timeout`]; the
/// publisher remembers the 10 000 destinations it used most recently (one it forgot is
/// declared again, which is harmless). The task ends when the broker and the last clone of
/// the publisher are dropped.
///
/// Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct AmqpPublisher {
    shared: Arc<Shared>,
}

/// How many destinations a publisher remembers having declared on its connection.
const DECLARED_CAPACITY: usize = 10_000;

/// Declarations of different destinations run in parallel unless they share one of these
/// locks; the same destination's are serialised, so a burst of first publishes declares once.
const DECLARE_LOCKS: u64 = 16;

struct Live {
    connection: Connection,
    channels: Vec<Slot>,
    /// Destinations declared on this connection: a new connection starts empty, so each
    /// destination is declared again on its first publish after a reconnect.
    declared: Mutex<RecentNames>,
}

impl Live {
    fn is_declared(&self, destination: &str) -> bool {
        self.declared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(destination)
    }

    fn mark_declared(&self, destination: &str) {
        self.declared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(destination);
    }

    fn forget_declared(&self) {
        self.declared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

struct Slot {
    // An `Arc` so that taking the channel for one publish is a single reference-count bump.
    channel: RwLock<Arc<Channel>>,
    repairing: tokio::sync::Mutex<()>,
}

struct Shared {
    config: Arc<AmqpConfig>,
    /// The main exchange's name, checked once.
    exchange: ShortString,
    live: RwLock<Option<Arc<Live>>>,
    next: AtomicUsize,
    declaring: Vec<tokio::sync::Mutex<()>>,
    /// Wakes the supervisor to check the connection after a failed publish.
    check: Arc<Notify>,
    /// Whether the supervisor was spawned (on first use).
    started: AtomicBool,
    /// `None` until the first connection attempt ended, then whether a connection is up.
    state: watch::Sender<Option<bool>>,
    /// Why the last connection attempt failed, for [`AmqpBroker::connect`](crate::AmqpBroker::connect).
    last_error: Mutex<Option<Error>>,
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
        if up {
            *self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
        }
        self.state.send_replace(Some(up));
    }

    /// A connection attempt failed with `error`.
    fn set_down(&self, error: Error) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error);
        self.state
            .send_if_modified(|state| state.replace(false) != Some(false));
    }

    fn declaring(&self, destination: &str) -> &tokio::sync::Mutex<()> {
        let mut hasher = DefaultHasher::new();
        destination.hash(&mut hasher);
        let i = usize::try_from(hasher.finish() % DECLARE_LOCKS).unwrap_or_default();
        &self.declaring[i]
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
    /// A publisher that connects on first use (nothing is spawned before). Fails when the
    /// exchange name is too long for AMQP.
    pub(crate) fn lazy(config: Arc<AmqpConfig>) -> Result<Self> {
        let exchange = short(&config.exchange)?;
        let (state, _) = watch::channel(None);
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                exchange,
                live: RwLock::new(None),
                next: AtomicUsize::new(0),
                declaring: (0..DECLARE_LOCKS)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                check: Arc::new(Notify::new()),
                started: AtomicBool::new(false),
                state,
                last_error: Mutex::new(None),
            }),
        })
    }

    /// Spawns the connection task unless it runs already.
    fn start(&self) {
        if !self.shared.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(supervise(
                Arc::downgrade(&self.shared),
                Arc::clone(&self.shared.check),
            ));
        }
    }

    /// Starts the connection task and waits for its first connection, at most
    /// [`AmqpConfig::operation_timeout`]; on timeout, the last attempt's error.
    pub(crate) async fn wait_connected(&self) -> Result<()> {
        self.start();
        let limit = self.shared.config.operation_timeout;
        let mut state = self.shared.state.subscribe();
        match tokio::time::timeout(limit, state.wait_for(|s| *s == Some(true))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Disconnected),
            Err(_) => Err(self
                .shared
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or(Error::Timeout(limit))),
        }
    }

    /// The live connection; on first use, starts the connection task and waits (at most
    /// [`AmqpConfig::operation_timeout`]) for its first attempt to end.
    async fn live(&self) -> Option<Arc<Live>> {
        if let Some(live) = self.shared.current() {
            return Some(live);
        }
        if self.shared.state.borrow().is_none() {
            self.start();
            let mut state = self.shared.state.subscribe();
            let first = state.wait_for(Option::is_some);
            let _ = tokio::time::timeout(self.shared.config.operation_timeout, first).await;
        }
        self.shared.current()
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
        let Some(live) = self.live().await else {
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
        if shared.config.declare_topology && !live.is_declared(destination) {
            self.declare(&live, destination).await?;
        }
        let exchange = shared.exchange.clone();
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
            // Whatever closed the channel may have removed queues too.
            live.forget_declared();
        }
        let fresh = Arc::new(fresh);
        *slot.channel.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// Declares `destination`'s queues on `live`, within its own operation timeout.
    async fn declare(&self, live: &Live, destination: &str) -> Result<()> {
        let shared = &self.shared;
        let config = &shared.config;
        let Ok(_serial) = tokio::time::timeout(
            config.operation_timeout,
            shared.declaring(destination).lock(),
        )
        .await
        else {
            return Err(Error::Timeout(config.operation_timeout));
        };
        if live.is_declared(destination) {
            return Ok(());
        }
        bounded(config.operation_timeout, async {
            // Its own channel: a refused declaration (406) must not close a publishing channel.
            let channel = live.connection.create_channel().await?;
            let declared = topology::declare_destination(&channel, config, destination).await;
            let _ = channel.close(200, "OK".into()).await;
            declared
        })
        .await
        .inspect_err(|e| {
            tracing::error!(
                error = e as &dyn std::error::Error,
                destination,
                "could not declare the destination's queues"
            );
        })?;
        live.mark_declared(destination);
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
        let Some(live) = self.live().await else {
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

/// Opens a connection with its channel pool and declares the exchanges; destinations are
/// declared on their first publish, each within its own timeout.
async fn establish(config: &AmqpConfig) -> Result<Live> {
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
            let _ = channel.close(200, "OK".into()).await;
        }
        Ok::<_, Error>(channels)
    };
    match bounded(config.operation_timeout, setup).await {
        Ok(channels) => Ok(Live {
            connection,
            channels,
            declared: Mutex::new(RecentNames::new(DECLARED_CAPACITY)),
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
        let config = Arc::clone(&this.config);
        drop(this);

        if let Some(delay) = backoff {
            tokio::time::sleep(delay).await;
        }
        match establish(&config).await {
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
                if let Some(this) = shared.upgrade() {
                    this.set_down(e.clone());
                }
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "amqp publisher could not connect"
                );
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
                Some(Event::Error(e)) => {
                    tracing::warn!(error = &e as &dyn std::error::Error, "amqp publisher error");
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_set_is_bounded_and_keeps_the_names_in_use() {
        let mut declared = RecentNames::new(10);
        declared.insert("hot");
        for i in 0..1000 {
            declared.insert(&format!("cold-{i}"));
            // A name in use is looked up before each publish and so stays.
            assert!(declared.contains("hot"));
            assert!(declared.len() <= 10, "{}", declared.len());
        }
        assert!(!declared.contains("cold-0"));
        assert!(declared.contains("cold-999"));
        declared.clear();
        assert_eq!(declared.len(), 0);
        assert!(!declared.contains("hot"));
    }

    #[test]
    fn the_default_bound_is_ten_thousand_names() {
        let mut declared = RecentNames::new(DECLARED_CAPACITY);
        for i in 0..3 * DECLARED_CAPACITY {
            declared.insert(&i.to_string());
        }
        assert!(declared.len() <= DECLARED_CAPACITY);
        assert!(declared.len() >= DECLARED_CAPACITY / 2);
    }
}
