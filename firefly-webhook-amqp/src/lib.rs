#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod config;
mod connection;
mod error;
mod headers;
mod publisher;
mod subscriber;
pub mod topology;

pub use firefly_webhook;
pub use lapin;

pub use crate::config::{AmqpConfig, ExchangeType, QueueType};
pub use crate::connection::properties;
pub use crate::error::{Error, Result};
pub use crate::publisher::AmqpPublisher;
pub use crate::subscriber::AmqpSubscriber;
