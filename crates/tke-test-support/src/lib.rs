#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// Fixtures fail the test that uses them: a panic with a clear message is their error path.
#![allow(clippy::missing_panics_doc)]

pub mod admin;
#[cfg(feature = "cli")]
pub mod cli;
pub mod fanout;
pub mod mk;
pub mod rng;
pub mod server;
pub mod softhsm;
pub mod tamper;
pub mod versions;

pub use admin::MemSigner;
pub use rng::Rng;
pub use server::{Server, ServerProc};
pub use softhsm::{isolated, Pool, Tokens};
pub use tamper::{ByteAt, Exchange, Tamper, TamperingTransport};
