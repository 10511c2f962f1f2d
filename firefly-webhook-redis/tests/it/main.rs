//! Integration tests against a real Redis (127.0.0.1:6379, or private servers started here).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[cfg(feature = "cluster")]
mod cluster;
mod common;
mod outage;
mod race;
mod round_trips;
mod semantics;
mod ttl;
mod worker;
