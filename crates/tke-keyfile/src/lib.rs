#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod atomic;
mod password;

pub use password::Password;
