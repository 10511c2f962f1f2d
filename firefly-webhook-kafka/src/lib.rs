#![doc = include_str!("../README.md")]

pub use firefly_webhook;
