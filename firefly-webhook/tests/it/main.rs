//! Integration tests of the core crate: one binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod ingest;
mod verify;
mod worker;
