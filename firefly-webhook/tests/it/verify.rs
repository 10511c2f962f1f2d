//! verify integration tests.
