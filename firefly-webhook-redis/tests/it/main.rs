//! Integration tests against a real Redis (127.0.0.1:6379, or private servers started here).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[cfg(feature = "cluster")]
mod cluster;
mod common;
mod lease;
mod outage;
mod race;
#[path = "../../../firefly-webhook/tests/support/recorded.rs"]
mod recorded;
mod round_trips;
mod semantics;
mod store_metrics;
#[cfg(feature = "tls-native-tls")]
mod tls;
mod ttl;
mod worker;
