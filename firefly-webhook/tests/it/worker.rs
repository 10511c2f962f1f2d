//! worker integration tests.
