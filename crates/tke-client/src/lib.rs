#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod client;
pub mod embedded;
mod error;
pub mod fanout;
pub mod https;
mod transport;
pub mod untrusted;

pub use client::{Client, KnownUnit};
pub use embedded::{EmbeddedFleet, FleetSpec};
pub use error::ClientError;
pub use https::{ApiKey, HttpsError, HttpsOptions, HttpsTransport};
pub use transport::{InstanceId, Transport, UnitDescriptor};
