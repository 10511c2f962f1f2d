//! Integration tests of the core crate: one binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod breaker;
mod health;
mod ingest;
mod keys;
mod lease;
mod memory;
mod observe;
mod verify;
mod worker;
mod worker_pause;
