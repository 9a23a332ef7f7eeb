#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod api;
pub mod apikey;
pub mod ca;
pub mod config;
mod error;
pub mod http;
pub mod init;
pub mod kms;
pub mod server;
pub mod tlscert;

pub use config::Config;
pub use error::ServerError;
pub use init::{init, join_install, join_request, InitOptions, InitReport, JoinReport};
pub use server::{Server, ShutdownHandle};
