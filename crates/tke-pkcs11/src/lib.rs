#![doc = include_str!("../README.md")]
// Denied, not forbidden: `mechanism::standard` allows it for one transmute.
#![deny(unsafe_code)]
// `Error` is about 130 bytes because its variants name the module and the token (label
// and serial) for the user. Errors are the cold path here, so it is not boxed.
#![allow(clippy::result_large_err)]

pub mod ec;
mod error;
pub mod mechanism;
mod module;
mod pin;
mod token;

pub use error::{ckr_name, rv_name, Error, PinFileProblem, PinTries, TokenList, TokenName};
pub use module::Module;
pub use pin::Pin;
pub use token::{Token, TokenQuery};

/// The cryptoki crate this one is built on, for the sessions, objects and mechanisms
/// that callers drive themselves. The workspace depends on cryptoki through this crate
/// only.
pub use cryptoki;
