//! Declaring (and removing) the exchanges and queues.
//!
//! The publisher and the subscriber call these themselves when
//! [`AmqpConfig::declare_topology`] is on; they are public for operators' tools and tests.
//! Declarations are idempotent, but RabbitMQ refuses (channel error 406) to re-declare a
//! queue with different arguments: change `queue_type` or `retry_delays` only together with
//! new names or after deleting the old queues.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use crate::config::{AmqpConfig, ExchangeType, QueueType};
use crate::error::Result;
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
        .await?;
    channel
        .exchange_declare(
            short(&config.dead_letter_exchange)?,
            ExchangeKind::Direct,
            options,
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Declares `destination`'s queues and bindings:
///
/// - `{queue}` bound to the main exchange with routing key `destination`; messages the broker
///   itself dead-letters (a reject, a quorum delivery limit) go to the dead-letter exchange;
/// - `{queue}.dlq` bound to the dead-letter exchange with routing key `destination`;
/// - one `{queue}.retry.{tier}` per retry tier, with `x-message-ttl` = the tier, that
///   dead-letters expired messages through the default exchange straight back to `{queue}`.
pub async fn declare_destination(
    channel: &Channel,
    config: &AmqpConfig,
    destination: &str,
) -> Result<()> {
    let routing_key = short(destination)?;
    let queue = short(&config.queue(destination))?;
    let mut args = queue_args(config.queue_type);
    args.insert(
        "x-dead-letter-exchange".into(),
        text(&config.dead_letter_exchange),
    );
    args.insert("x-dead-letter-routing-key".into(), text(destination));
    channel.queue_declare(queue.clone(), DURABLE, args).await?;
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
    channel
        .queue_declare(dlq.clone(), DURABLE, queue_args(config.queue_type))
        .await?;
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
        let mut args = queue_args(config.queue_type);
        let ttl = i64::try_from(tier.as_millis()).unwrap_or(i64::MAX);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        // The default exchange routes by queue name: expired retries land in this
        // destination's queue only, not in other queues bound to the same routing key.
        args.insert("x-dead-letter-exchange".into(), text(""));
        args.insert("x-dead-letter-routing-key".into(), text(queue.as_str()));
        let name = short(&config.retry_queue_for_tier(destination, *tier))?;
        channel.queue_declare(name, DURABLE, args).await?;
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
