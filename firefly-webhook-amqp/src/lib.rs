#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod broker;
mod config;
mod connection;
mod depth;
pub mod dlq;
mod error;
mod headers;
mod publisher;
mod subscriber;
pub mod topology;

pub use firefly_webhook;
pub use lapin;

pub use crate::broker::AmqpBroker;
pub use crate::config::{
    AmqpConfig, ExchangeType, QueueType, UnknownExchangeType, UnknownQueueType,
};
pub use crate::connection::properties;
pub use crate::depth::DepthWatch;
pub use crate::error::{Error, Result};
pub use crate::publisher::AmqpPublisher;
pub use crate::subscriber::{AmqpSubscriber, AmqpTag};

/// The transport's name, in [`Broker::name`](firefly_webhook::Broker::name) and every
/// delivery's [`Position`](firefly_webhook::Position).
const TRANSPORT: &str = "amqp";
