#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod client;
#[cfg(feature = "embedded")]
pub mod embedded;
mod error;
pub mod fanout;
#[cfg(feature = "https")]
pub mod https;
pub mod kms;
pub mod provision;
mod transport;
pub mod untrusted;

pub use client::{Client, KnownUnit};
#[cfg(feature = "embedded")]
pub use embedded::{EmbeddedFleet, FleetSpec};
pub use error::ClientError;
#[cfg(feature = "https")]
pub use https::{ApiKey, HttpsError, HttpsOptions, HttpsTransport};
pub use provision::{FailoverLimits, FailoverTotalError, Provisioning};
pub use transport::{InstanceId, Transport, UnitDescriptor};
