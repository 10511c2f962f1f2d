#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod config;
mod error;
mod keys;
mod lanes;
mod scripts;
mod store;

pub use deadpool_redis;
pub use deadpool_redis::redis;
pub use firefly_webhook;

pub use crate::config::{FailurePolicy, RedisConfig, UnknownFailurePolicy};
pub use crate::error::{Error, Result};
pub use crate::store::RedisStore;
