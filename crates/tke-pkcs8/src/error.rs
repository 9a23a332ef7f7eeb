//! The errors of encrypted private keys. None ever holds a password or key bytes.

use std::path::PathBuf;

/// What is wrong with an encrypted private key (PEM text). The message states the problem
/// only: the caller names the key or the file it came from ([`FileError`] does).
///
/// Exhaustive on purpose: the crates that keep keys in this format map each kind to an
/// error of their own, and a new kind must make them decide.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs8Error {
    /// The PEM text or the DER inside it could not be decoded.
    #[error("{what}")]
    Encoding {
        /// Which layer failed (`not a complete PEM block`, `not a valid
        /// EncryptedPrivateKeyInfo`).
        what: &'static str,
        /// The decoder's error, with its position.
        source: pkcs8::der::Error,
    },

    /// The key breaks the format in a way we detect ourselves: unencrypted, another
    /// scheme, a KDF cost over the limits, data cut short, another curve.
    #[error("{problem}")]
    Malformed {
        /// What is wrong with it.
        problem: &'static str,
    },

    /// Decryption failed: the password is wrong, or the encrypted data was altered.
    #[error(
        "wrong password, or the encrypted data was altered (with AES-CBC encryption the two \
         look alike)"
    )]
    WrongPassword,
}

/// What went wrong opening an encrypted private key file ([`crate::decrypt_file`]). Each
/// variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// Decryption failed: the password is wrong, or the encrypted data was altered.
    #[error(
        "wrong password for the key file {}, or its encrypted data was altered \
         (with AES-CBC encryption the two look alike)",
        path.display()
    )]
    WrongPassword {
        /// The key file.
        path: PathBuf,
    },

    /// The file is not a valid encrypted P-256 private key.
    #[error("the key file {} is malformed", path.display())]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it ([`Pkcs8Error::Encoding`] or [`Pkcs8Error::Malformed`]).
        source: Pkcs8Error,
    },
}
