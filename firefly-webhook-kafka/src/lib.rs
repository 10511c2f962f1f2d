#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod broker;
mod config;
pub mod dlq;
mod error;
mod key;
mod offset;
mod producer;
mod publisher;
mod stats;
mod subscriber;

pub use firefly_webhook;
pub use rdkafka;

pub use crate::broker::KafkaBroker;
pub use crate::config::{Compression, KafkaConfig, OffsetReset, SaslMechanism, SecurityProtocol};
pub use crate::error::{Error, Result};
pub use crate::key::KeyStrategy;
pub use crate::offset::KafkaOffset;
pub use crate::publisher::KafkaPublisher;
pub use crate::subscriber::{HeldEvents, KafkaSubscriber, LAG_GAUGE};
