//! The errors of PKCS#11 signers. Each names the module and, once it is found, the token
//! (label and serial) and the key concerned; none ever holds a PIN.

use core::fmt;
use std::{io, path::PathBuf};

use cryptoki::error::{Error as CkError, RvError};
use tke_proto::{AdminName, ProtoError};

use crate::UriError;

/// A token as found on a module: its label and serial number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenName {
    /// The token label (`CK_TOKEN_INFO.label`, without its padding).
    pub label: String,
    /// The token serial number (`CK_TOKEN_INFO.serialNumber`).
    pub serial: String,
}

impl fmt::Display for TokenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token {:?} (serial {})", self.label, self.serial)
    }
}

/// A list of tokens for messages: `token "a" (serial 1), token "b" (serial 2)`, or `none`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenList(pub Vec<TokenName>);

impl fmt::Display for TokenList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{t}")?;
        }
        Ok(())
    }
}

/// What a token says about the tries left after a wrong PIN. PKCS#11 reports no count,
/// only two flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinTries {
    /// The token reports neither flag.
    NotReported,
    /// `CKF_USER_PIN_COUNT_LOW`: wrong PINs were given since the last login; fewer tries
    /// are left than the token allows.
    Low,
    /// `CKF_USER_PIN_FINAL_TRY`: one try is left; one more wrong PIN locks it.
    FinalTry,
}

impl fmt::Display for PinTries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotReported => "the token does not report how many tries are left",
            Self::Low => {
                "the token reports that few tries are left (CKF_USER_PIN_COUNT_LOW) before the PIN locks"
            }
            Self::FinalTry => {
                "1 try left: the token reports that one more wrong PIN locks it (CKF_USER_PIN_FINAL_TRY)"
            }
        })
    }
}

/// The PKCS#11 name of a cryptoki error: `CKR_PIN_INCORRECT`, `CKR_VENDOR_DEFINED(0x...)`,
/// or, for errors that did not come from the module, cryptoki's own message.
pub fn ckr_name(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, _) => rv_name(*rv),
        other => other.to_string(),
    }
}

/// `CKR_...` for a return value.
pub fn rv_name(rv: RvError) -> String {
    match rv {
        RvError::VendorDefined(code) => format!("CKR_VENDOR_DEFINED({code:#x})"),
        RvError::UnknownErrorCode(code) => format!("CKR {code:#x} (unknown)"),
        // cryptoki names each variant after its CKR_ constant in CamelCase.
        _ => {
            let camel = format!("{rv:?}");
            let mut s = String::from("CKR");
            for c in camel.chars() {
                if c.is_ascii_uppercase() {
                    s.push('_');
                }
                s.push(c.to_ascii_uppercase());
            }
            s
        }
    }
}

/// Errors of PKCS#11 signers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// The PKCS#11 URI was refused.
    #[error(transparent)]
    Uri(#[from] UriError),

    /// The URI names no key where one is needed.
    #[error(
        "the PKCS#11 URI names no key to {operation}: add `object=LABEL` (and optionally `id=`)"
    )]
    NoKeyInUri {
        /// What was to be done (`generate`, `open`, `register`).
        operation: &'static str,
    },

    /// The PIN file (`pin-source`) cannot be read.
    #[error("cannot read the PIN file {} (pin-source of the PKCS#11 URI): {source}", path.display())]
    PinFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },

    /// The PIN file may be read by other users.
    #[error("the PIN file {} can be read by other users; restrict it with `chmod 600 {}`", path.display(), path.display())]
    PinFileMode {
        /// The file.
        path: PathBuf,
    },

    /// The PIN file holds no usable PIN.
    #[error("the PIN file {} holds no PIN: {problem}", path.display())]
    PinFileContent {
        /// The file.
        path: PathBuf,
        /// What is wrong (`it is empty`, `it is not UTF-8 text`).
        problem: &'static str,
    },

    /// An empty PIN was given.
    #[error("refusing an empty PIN for {token} (PKCS#11 module {})", module.display())]
    EmptyPin {
        /// The module.
        module: PathBuf,
        /// The token.
        token: TokenName,
    },

    /// The module cannot be loaded (wrong `module-path`, not a PKCS#11 module...).
    #[error("cannot load the PKCS#11 module {}: {source}; check module-path in the URI (is the vendor's module installed there?)", module.display())]
    ModuleLoad {
        /// The module.
        module: PathBuf,
        /// cryptoki's error.
        source: CkError,
    },

    /// A module-level call failed (before any token was chosen).
    #[error("{operation} failed in PKCS#11 module {}: {}", module.display(), ckr_name(source))]
    Module {
        /// The module.
        module: PathBuf,
        /// The PKCS#11 function (`C_Initialize`, `C_GetSlotList`...).
        operation: &'static str,
        /// cryptoki's error.
        source: CkError,
    },

    /// No token matches the URI.
    #[error("{wanted} was not found in PKCS#11 module {}; tokens present: {present}", module.display())]
    TokenNotFound {
        /// The module.
        module: PathBuf,
        /// The token the URI asked for (`token "admins" (serial ...)`).
        wanted: String,
        /// Every initialized token the module shows.
        present: TokenList,
    },

    /// Several tokens match the URI.
    #[error("{wanted} is ambiguous in PKCS#11 module {}: it matches {candidates}; add `serial=` to the URI", module.display())]
    AmbiguousToken {
        /// The module.
        module: PathBuf,
        /// The token the URI asked for.
        wanted: String,
        /// The tokens that match.
        candidates: TokenList,
    },

    /// The PIN is wrong.
    #[error("wrong PIN for {token} (PKCS#11 module {}): {tries}", module.display())]
    WrongPin {
        /// The module.
        module: PathBuf,
        /// The token.
        token: TokenName,
        /// What the token says about the tries left.
        tries: PinTries,
    },

    /// The user PIN is locked.
    #[error(
        "the user PIN of {token} (PKCS#11 module {}) is locked after too many wrong PINs: \
         unblock it with the security officer (SO) PIN, e.g. `pkcs11-tool --module {} \
         --token-label {:?} --login --login-type so --init-pin`",
        module.display(), module.display(), token.label
    )]
    PinLocked {
        /// The module.
        module: PathBuf,
        /// The token.
        token: TokenName,
    },

    /// The token lacks a mechanism TKE needs.
    #[error("{token} (PKCS#11 module {}) does not offer {mechanism}, which is needed to {purpose}", module.display())]
    MechanismMissing {
        /// The module.
        module: PathBuf,
        /// The token.
        token: TokenName,
        /// The mechanism (`CKM_EC_KEY_PAIR_GEN`, `CKM_ECDSA`).
        mechanism: &'static str,
        /// What it is needed for.
        purpose: &'static str,
    },

    /// No key on the token matches the URI.
    #[error("no {what} matching {key} on {token} (PKCS#11 module {})", module.display())]
    KeyNotFound {
        /// The module.
        module: PathBuf,
        /// The token.
        token: TokenName,
        /// The key the URI names (`key "alice" (id 01ab)`).
        key: String,
        /// Which object is missing (`private key`, `public key`).
        what: &'static str,
    },

    /// Several keys match the URI.
    #[error("{count} {what}s match {key} on {token} (PKCS#11 module {}); add `id=` to the URI to choose one", module.display())]
    AmbiguousKey {
        /// The module.
        module: PathBuf,
        /// The token.
        token: TokenName,
        /// The key the URI names.
        key: String,
        /// Which objects (`private key`, `public key`).
        what: &'static str,
        /// How many match.
        count: usize,
    },

    /// Generating a key under a label or id that an object already has.
    #[error("{token} (PKCS#11 module {}) already holds an object with the {what}; choose another `object=` label (nothing was generated)", module.display())]
    KeyExists {
        /// The module.
        module: PathBuf,
        /// The token.
        token: TokenName,
        /// Which label or id (`label "alice"`, `id 01ab`).
        what: String,
    },

    /// The key is not an ECDSA P-256 key TKE can use.
    #[error("{key} on {token} (PKCS#11 module {}) is not usable as an administrator key: {problem}", module.display())]
    NotP256 {
        /// The module.
        module: PathBuf,
        /// The token.
        token: TokenName,
        /// The key.
        key: String,
        /// What is wrong.
        problem: &'static str,
    },

    /// The key on the token is not the certificate's key.
    #[error("{key} on {token} (PKCS#11 module {}) is not the key of the administrator certificate of {name}", module.display())]
    CertificateMismatch {
        /// The module.
        module: PathBuf,
        /// The token.
        token: TokenName,
        /// The key.
        key: String,
        /// The administrator the certificate names.
        name: AdminName,
    },

    /// The administrator certificate could not be made (the token's signature included).
    #[error("cannot make the administrator certificate of {name} with {key} on {token} (PKCS#11 module {}): {source}", module.display())]
    Certificate {
        /// The module.
        module: PathBuf,
        /// The token.
        token: TokenName,
        /// The key.
        key: String,
        /// The administrator.
        name: AdminName,
        /// The protocol layer's error.
        source: Box<ProtoError>,
    },

    /// The token returned a signature TKE cannot read.
    #[error("{key} on {token} (PKCS#11 module {}) returned a malformed ECDSA signature ({len} bytes)", module.display())]
    BadSignature {
        /// The module.
        module: PathBuf,
        /// The token.
        token: TokenName,
        /// The key.
        key: String,
        /// Its length.
        len: usize,
    },

    /// Any other PKCS#11 failure on a token, with its CKR name.
    #[error("{operation} failed on {token} (PKCS#11 module {}): {}", module.display(), ckr_name(source))]
    Token {
        /// The module.
        module: PathBuf,
        /// The token.
        token: TokenName,
        /// The PKCS#11 function (`C_Sign`, `C_GenerateKeyPair`...).
        operation: &'static str,
        /// cryptoki's error.
        source: CkError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    #[test]
    fn ckr_names() {
        assert_eq!(rv_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(rv_name(RvError::PinLocked), "CKR_PIN_LOCKED");
        assert_eq!(rv_name(RvError::MechanismInvalid), "CKR_MECHANISM_INVALID");
        assert_eq!(
            rv_name(RvError::CryptokiNotInitialized),
            "CKR_CRYPTOKI_NOT_INITIALIZED"
        );
        assert_eq!(
            rv_name(RvError::VendorDefined(0x8000_0001)),
            "CKR_VENDOR_DEFINED(0x80000001)"
        );
        assert_eq!(
            ckr_name(&CkError::Pkcs11(RvError::DeviceRemoved, Function::Sign)),
            "CKR_DEVICE_REMOVED"
        );
    }

    #[test]
    fn messages_name_module_token_and_advice() {
        let module = PathBuf::from("/opt/hsm/lib.so");
        let token = TokenName {
            label: "admins".into(),
            serial: "0042".into(),
        };
        let e = Pkcs11Error::PinLocked {
            module: module.clone(),
            token: token.clone(),
        };
        let m = e.to_string();
        assert!(
            m.contains("/opt/hsm/lib.so") && m.contains("token \"admins\" (serial 0042)"),
            "{m}"
        );
        assert!(m.contains("SO) PIN") && m.contains("--init-pin"), "{m}");
        let e = Pkcs11Error::WrongPin {
            module: module.clone(),
            token: token.clone(),
            tries: PinTries::FinalTry,
        };
        assert!(e.to_string().contains("1 try left"), "{e}");
        let e = Pkcs11Error::MechanismMissing {
            module: module.clone(),
            token: token.clone(),
            mechanism: "CKM_EC_KEY_PAIR_GEN",
            purpose: "generate a P-256 key pair",
        };
        assert_eq!(
            e.to_string(),
            "token \"admins\" (serial 0042) (PKCS#11 module /opt/hsm/lib.so) does not offer CKM_EC_KEY_PAIR_GEN, which is needed to generate a P-256 key pair"
        );
        let e = Pkcs11Error::Token {
            module,
            token,
            operation: "C_Sign",
            source: CkError::Pkcs11(RvError::DeviceRemoved, Function::Sign),
        };
        assert_eq!(
            e.to_string(),
            "C_Sign failed on token \"admins\" (serial 0042) (PKCS#11 module /opt/hsm/lib.so): CKR_DEVICE_REMOVED"
        );
    }
}
