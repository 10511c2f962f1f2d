//! Declaring (and removing) the exchanges and queues.
//!
//! The publisher and the subscriber call these themselves when
//! [`AmqpConfig::declare_topology`] is on; they are public for operators' tools and tests.
//! Declarations are idempotent, but RabbitMQ refuses (channel error 406, which also closes
//! the channel) to re-declare an exchange or queue with different arguments: that is
//! [`Error::TopologyMismatch`], naming the exchange or queue.
//! Change `queue_type` or `retry_delays` only together with new names or after deleting the
//! old queues.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::config::{AmqpConfig, ExchangeType, QueueType};
use crate::error::{Error, Result};
use crate::headers::short;

const DURABLE: QueueDeclareOptions = QueueDeclareOptions {
    passive: false,
    durable: true,
    exclusive: false,
    auto_delete: false,
    nowait: false,
};

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn queue_args(queue_type: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), text(queue_type.as_str()));
    args
}

/// The arguments of a queue whose messages the broker dead-letters to `exchange` with
/// `routing_key`. A quorum queue does so at least once: it keeps a message until the target
/// queue confirmed it (the default, at-most-once, drops it when the target is unroutable).
/// That strategy needs `x-overflow = reject-publish`, which changes nothing without a length
/// limit.
fn dead_lettering_args(queue_type: QueueType, exchange: &str, routing_key: &str) -> FieldTable {
    let mut args = queue_args(queue_type);
    args.insert("x-dead-letter-exchange".into(), text(exchange));
    args.insert("x-dead-letter-routing-key".into(), text(routing_key));
    if queue_type == QueueType::Quorum {
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        args.insert("x-overflow".into(), text("reject-publish"));
    }
    args
}

async fn declare_queue(channel: &Channel, name: ShortString, args: FieldTable) -> Result<()> {
    channel
        .queue_declare(name.clone(), DURABLE, args)
        .await
        .map_err(|e| Error::declaring(name.as_str(), e))?;
    Ok(())
}

/// Declares the main exchange (topic by default) and the dead-letter direct exchange (both
/// durable).
pub async fn declare_exchanges(channel: &Channel, config: &AmqpConfig) -> Result<()> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            short(&config.exchange)?,
            match config.exchange_type {
                ExchangeType::Topic => ExchangeKind::Topic,
                ExchangeType::Direct => ExchangeKind::Direct,
            },
            options,
            FieldTable::default(),
        )
        .await
        .map_err(|e| Error::declaring(&config.exchange, e))?;
    channel
        .exchange_declare(
            short(&config.dead_letter_exchange)?,
            ExchangeKind::Direct,
            options,
            FieldTable::default(),
        )
        .await
        .map_err(|e| Error::declaring(&config.dead_letter_exchange, e))?;
    Ok(())
}

/// Declares `destination`'s queues and bindings:
///
/// - `{queue}` bound to the main exchange with routing key `destination`; messages the broker
///   itself dead-letters (a reject, a quorum delivery limit) go to the dead-letter exchange;
/// - `{queue}.dlq` bound to the dead-letter exchange with routing key `destination`;
/// - one `{queue}.retry.{tier}` per retry tier, with `x-message-ttl` = the tier, that
///   dead-letters expired messages through the default exchange straight back to `{queue}`.
///
/// Quorum queues that dead-letter (`{queue}` and the retry queues) do so at least once
/// (`x-dead-letter-strategy = at-least-once`, `x-overflow = reject-publish`): a message stays
/// in its queue until the target queue has it.
///
/// # Errors
///
/// [`Error::TopologyMismatch`] when one of them exists with other arguments (the broker
/// closes `channel` then).
pub async fn declare_destination(
    channel: &Channel,
    config: &AmqpConfig,
    destination: &str,
) -> Result<()> {
    let routing_key = short(destination)?;
    let queue = short(&config.queue(destination))?;
    let args = dead_lettering_args(config.queue_type, &config.dead_letter_exchange, destination);
    declare_queue(channel, queue.clone(), args).await?;
    channel
        .queue_bind(
            queue.clone(),
            short(&config.exchange)?,
            routing_key.clone(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let dlq = short(&config.dead_letter_queue(destination))?;
    declare_queue(channel, dlq.clone(), queue_args(config.queue_type)).await?;
    channel
        .queue_bind(
            dlq,
            short(&config.dead_letter_exchange)?,
            routing_key,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    for tier in &config.retry_delays {
        // The default exchange routes by queue name: expired retries land in this
        // destination's queue only, not in other queues bound to the same routing key.
        let mut args = dead_lettering_args(config.queue_type, "", queue.as_str());
        let ttl = i64::try_from(tier.as_millis()).unwrap_or(i64::MAX);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        let name = short(&config.retry_queue_for_tier(destination, *tier))?;
        declare_queue(channel, name, args).await?;
    }
    Ok(())
}

/// Deletes `destination`'s queues (main, dead-letter and retry), with their messages.
pub async fn delete_destination(
    channel: &Channel,
    config: &AmqpConfig,
    destination: &str,
) -> Result<()> {
    let mut names = vec![
        config.queue(destination),
        config.dead_letter_queue(destination),
    ];
    names.extend(
        config
            .retry_delays
            .iter()
            .map(|t| config.retry_queue_for_tier(destination, *t)),
    );
    for name in names {
        channel
            .queue_delete(short(&name)?, QueueDeleteOptions::default())
            .await?;
    }
    Ok(())
}

/// Deletes the main and dead-letter exchanges.
pub async fn delete_exchanges(channel: &Channel, config: &AmqpConfig) -> Result<()> {
    for name in [&config.exchange, &config.dead_letter_exchange] {
        channel
            .exchange_delete(short(name)?, ExchangeDeleteOptions::default())
            .await?;
    }
    Ok(())
}
