#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// `Pkcs11Error` is about 130 bytes because every variant names the module, the token
// (label and serial) and the key for the user. Errors are the cold path here (and a
// signature's error reaches callers boxed in `SignError`), so it is not boxed.
#![allow(clippy::result_large_err)]

mod error;
mod signer;
mod token;
pub mod uri;

pub use error::Pkcs11Error;
pub use signer::Pkcs11Signer;
pub use token::TokenSession;
pub use uri::{ObjectType, Pkcs11Uri, UriError, UriPart};

/// The shared PKCS#11 layer (module table, token lookup, PINs, encodings, errors) this
/// crate is built on, and through it the cryptoki crate, for callers that need their
/// types.
pub use tke_pkcs11::{self, cryptoki};
/// Shared with the PKCS#11 unit backend: see [`tke_pkcs11`].
pub use tke_pkcs11::{ckr_name, rv_name, Pin, PinTries, TokenList, TokenName};
