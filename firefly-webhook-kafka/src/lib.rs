#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod config;
mod error;
mod key;
mod producer;
mod publisher;
mod subscriber;

pub use firefly_webhook;
pub use rdkafka;

pub use crate::config::{KafkaConfig, SubscriberConfig};
pub use crate::error::{Error, Result};
pub use crate::key::KeyStrategy;
pub use crate::publisher::KafkaPublisher;
pub use crate::subscriber::{KafkaSubscriber, LAG_GAUGE};
