#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// `Pkcs11Error` is about 130 bytes because every variant names the module, the token
// (label and serial) and the key for the user. Errors are the cold path here (and a
// signature's error reaches callers boxed in `SignError`), so it is not boxed.
#![allow(clippy::result_large_err)]

mod ec;
mod error;
mod module;
mod pin;
mod signer;
mod token;
pub mod uri;

pub use error::{ckr_name, rv_name, PinTries, Pkcs11Error, TokenList, TokenName};
pub use pin::Pin;
pub use signer::Pkcs11Signer;
pub use token::TokenSession;
pub use uri::{ObjectType, Pkcs11Uri, UriError, UriPart};

/// The cryptoki crate this one is built on, for callers that need its types.
pub use cryptoki;
