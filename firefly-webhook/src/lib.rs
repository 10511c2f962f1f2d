#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod event;
pub mod health;
pub mod idempotency;
pub mod ingest;
pub mod memory;
pub mod process;
pub mod publish;
pub mod subscribe;
pub mod verify;
pub mod wire;
pub mod worker;

pub use async_trait::async_trait;
pub use bytes::Bytes;
pub use http;

pub use crate::event::{EventId, WebhookEvent};
pub use crate::idempotency::{Claim, FencingToken, IdempotencyStore, MemoryStore, StoreError};
pub use crate::ingest::{IngestLayer, IngestService, Receipt, Rejection};
pub use crate::process::{Context, Outcome, ProcessError, WebhookProcessor, processor_fn};
pub use crate::publish::{PublishError, Publisher, Routing};
pub use crate::subscribe::{Acker, Delivery, Position, SubscribeError, Subscriber};
pub use crate::verify::{
    SecretSet, SignatureVerifier, Verified, Verifiers, VerifyError, VerifyLayer,
};
pub use crate::worker::{Job, RetryPolicy, Worker};

/// A type-erased error, as used by tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
