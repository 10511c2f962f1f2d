//! Integration tests. Tests marked `#[ignore]` need the Kafka-protocol broker on
//! 127.0.0.1:9092 (`scripts/kafka-broker up`; `scripts/test` runs them); the `mock` tests use
//! librdkafka's in-process mock cluster and run anywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod consume;
mod faults;
mod ingest;
mod mock;
mod publish;
