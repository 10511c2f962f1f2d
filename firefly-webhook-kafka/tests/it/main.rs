//! Integration tests. Tests marked `#[ignore]` need the Kafka-protocol broker on
//! 127.0.0.1:9092 (`scripts/kafka-broker up`; `scripts/test` runs them); the `mock` tests use
//! librdkafka's in-process mock cluster and run anywhere. `faults` and `tls` start private
//! brokers of their own on free ports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod broker;
mod common;
mod consume;
mod dlq;
mod faults;
mod ingest;
mod mock;
mod parked;
mod private;
mod publish;
#[path = "../../../firefly-webhook/tests/support/recorded.rs"]
mod recorded;
#[cfg(feature = "ssl")]
mod tls;
