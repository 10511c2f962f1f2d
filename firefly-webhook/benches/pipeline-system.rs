//! The memory pipeline's throughput with the system allocator (see `support/pipeline.rs`).
//!
//! `cargo bench -p firefly-webhook --bench pipeline-system`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/pipeline.rs"]
mod support;

/// Criterion's group: each allocator keeps its own saved results.
const GROUP: &str = "memory_pipeline_system_alloc";

criterion::criterion_main!(support::benches);
