//! Helpers for the end-to-end tests: real servers started per test, stopped on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod emulators;
pub mod garage;
pub mod http_server;
pub mod net;

pub use net::{free_port, wait_for_port};
