//! The memory pipeline's throughput with mimalloc, the gateway's allocator (see
//! `support/pipeline.rs`).
//!
//! `cargo bench -p firefly-webhook --bench pipeline`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/pipeline.rs"]
mod support;

/// Criterion's group: each allocator keeps its own saved results.
const GROUP: &str = "memory_pipeline";

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

criterion::criterion_main!(support::benches);
