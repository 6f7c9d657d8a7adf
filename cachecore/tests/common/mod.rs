//! Helpers of the library's end-to-end tests. They live in the dev-only crate
//! `cachecore-testkit` (shared with the CLI's tests), re-exported here so that test files keep
//! `mod common;` and paths such as `common::garage::Garage`.
#![allow(unused_imports)]

pub use cachecore_testkit::*;
