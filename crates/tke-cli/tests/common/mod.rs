//! The CLI tests' helpers are `tke_test_support::cli` (shared with any crate whose tests
//! run `tke`); the test files reach them as `common::...`.
pub use tke_test_support::cli::*;
