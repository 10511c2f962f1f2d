#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

// Layers, innermost first; a module only uses the ones above it:
// event, dead_letter, metric → publish, subscribe, process → broker, wire, memory →
// ingest, verify, idempotency, health → worker, serve.
pub mod dead_letter;
mod done;
pub mod event;
mod handles;
pub mod metric;

pub mod process;
pub mod publish;
pub mod subscribe;

pub mod broker;
pub mod memory;
pub mod wire;

pub mod health;
pub mod idempotency;
pub mod ingest;
mod json;
pub mod verify;

pub mod worker;

#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "spool")]
pub mod spool;

pub use async_trait::async_trait;
pub use bytes::Bytes;
pub use http;

pub use crate::broker::Broker;
pub use crate::dead_letter::{DeadLetter, FailureCategory};
pub use crate::event::{EventId, WebhookEvent};
pub use crate::idempotency::{Claim, FencingToken, IdempotencyStore, MemoryStore, StoreError};
pub use crate::ingest::{IngestLayer, IngestService, Receipt, Rejection};
pub use crate::process::{
    Context, Job, Outcome, ProcessError, RetryDecision, WebhookProcessor, processor_fn,
};
pub use crate::publish::{CircuitBreaker, PublishError, Publisher, Routing};
pub use crate::subscribe::{Acker, Delivery, Position, SubscribeError, Subscriber};
pub use crate::verify::{
    SecretSet, SignatureVerifier, Verified, Verifiers, VerifyError, VerifyLayer,
};
pub use crate::worker::{RetryPolicy, Worker};

/// A type-erased error, as used by tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A boxed, sendable future, as the crate's services return.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;
