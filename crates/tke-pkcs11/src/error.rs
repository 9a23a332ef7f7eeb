//! The errors of PKCS#11 plumbing, and the names that messages give tokens and return
//! values. Each error names the module and, once it is found, the token (label and
//! serial); none ever holds a PIN.

use core::fmt;
use std::{io, path::PathBuf};

use cryptoki::error::{Error as CkError, RvError};

use crate::TokenQuery;

/// A token as found on a module: its label and serial number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenName {
    /// The token label (`CK_TOKEN_INFO.label`, without its padding).
    pub label: String,
    /// The token serial number (`CK_TOKEN_INFO.serialNumber`, without its padding).
    pub serial: String,
}

impl fmt::Display for TokenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token {:?} (serial {})", self.label, self.serial)
    }
}

/// When a module shows no token at all, the usual cause is its configuration, not the
/// token: SoftHSM2 reads its token directory from the file `SOFTHSM2_CONF` names.
fn no_token_hint(present: &TokenList) -> &'static str {
    if present.0.is_empty() {
        " (a module finds its tokens through its configuration: for SoftHSM2, check that \
         SOFTHSM2_CONF names the configuration file whose tokendir holds the token)"
    } else {
        ""
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

/// What is wrong with the content of a PIN file. Never holds any of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinFileProblem {
    /// It is not a regular file (a directory, a device...).
    NotRegularFile,
    /// It is empty, or holds only a newline.
    Empty,
    /// It is not UTF-8 text.
    NotUtf8,
    /// It holds more than one line.
    SeveralLines,
}

impl fmt::Display for PinFileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotRegularFile => "is not a regular file",
            Self::Empty => "is empty",
            Self::NotUtf8 => "is not UTF-8 text",
            Self::SeveralLines => "holds more than one line",
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

/// Errors of the PKCS#11 plumbing.
///
/// Messages describe this layer only. Where a lower layer failed (loading the library,
/// reading a file), that error is the [`source`](std::error::Error::source) and is not
/// repeated in the message. A failed PKCS#11 call is this layer's own failure: its message
/// names the return value (`CKR_PIN_INCORRECT`), and cryptoki's error is kept in the
/// `error` field rather than as a source, since its text is only the specification's long
/// description of that same code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The module cannot be loaded (no such file, not a PKCS#11 module...).
    #[error("cannot load the PKCS#11 module {}", module.display())]
    ModuleLoad {
        /// The module, as given.
        module: PathBuf,
        /// cryptoki's error (the loader's, or `C_GetFunctionList`'s).
        #[source]
        source: CkError,
    },

    /// A module-level call failed (before any token was chosen).
    #[error("{operation} failed in PKCS#11 module {}: {}", module.display(), ckr_name(error))]
    Module {
        /// The module.
        module: PathBuf,
        /// The PKCS#11 function (`C_Initialize`, `C_GetSlotList`...).
        operation: &'static str,
        /// cryptoki's error, named in the message.
        error: CkError,
    },

    /// No initialized token matches.
    #[error("{wanted} was not found in PKCS#11 module {}; tokens present: {present}{}", module.display(), no_token_hint(present))]
    TokenNotFound {
        /// The module.
        module: PathBuf,
        /// The token asked for.
        wanted: TokenQuery,
        /// Every initialized token the module shows.
        present: TokenList,
    },

    /// Several tokens match.
    #[error("{wanted} is ambiguous in PKCS#11 module {}: it matches {candidates}; name the token by its serial number too", module.display())]
    AmbiguousToken {
        /// The module.
        module: PathBuf,
        /// The token asked for.
        wanted: TokenQuery,
        /// The tokens that match.
        candidates: TokenList,
    },

    /// The PIN file cannot be read.
    #[error("cannot read the PIN file {}", path.display())]
    PinFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// The PIN file may be read or written by other users.
    #[error("the PIN file {} can be read or written by other users (mode {mode:04o}): make it mode 0600 (`chmod 600 {}`)", path.display(), path.display())]
    PinFileMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The PIN file holds no usable PIN.
    #[error("the PIN file {} {problem}", path.display())]
    PinFileContent {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: PinFileProblem,
    },

    /// An empty PIN was given.
    #[error("refusing an empty PIN for {token} (PKCS#11 module {})", module.display())]
    EmptyPin {
        /// The module.
        module: PathBuf,
        /// The token.
        token: TokenName,
    },

    /// The token refused the PIN (`CKR_PIN_INCORRECT`, `CKR_PIN_LEN_RANGE`).
    #[error(
        "wrong PIN for {token} (PKCS#11 module {}){}: the PIN is incorrect; {tries}",
        module.display(),
        pin_file.as_ref().map(|p| format!(", read from the PIN file {}", p.display())).unwrap_or_default()
    )]
    WrongPin {
        /// The module.
        module: PathBuf,
        /// The token.
        token: TokenName,
        /// The file the PIN was read from, if it came from one.
        pin_file: Option<PathBuf>,
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

    /// The token's user PIN was never set.
    #[error("the user PIN of {token} (PKCS#11 module {}) was never set (C_InitPIN)", module.display())]
    PinNotInitialized {
        /// The module.
        module: PathBuf,
        /// The token.
        token: TokenName,
    },

    /// The token lacks mechanisms the caller needs.
    #[error("{token} (PKCS#11 module {}) does not offer {}, which is needed to {purpose}", module.display(), missing.join(", "))]
    MechanismMissing {
        /// The module.
        module: PathBuf,
        /// The token.
        token: TokenName,
        /// The mechanisms it lacks (`CKM_EC_KEY_PAIR_GEN`, `CKM_ECDSA`).
        missing: Vec<&'static str>,
        /// What they are needed for.
        purpose: &'static str,
    },

    /// Any other PKCS#11 failure on a token, with its CKR name.
    #[error("{operation} failed on {token} (PKCS#11 module {}): {}", module.display(), ckr_name(error))]
    Token {
        /// The module.
        module: PathBuf,
        /// The token.
        token: TokenName,
        /// What was being done: the PKCS#11 function (`C_Sign`), or the caller's step
        /// (`generating the device key`).
        operation: &'static str,
        /// cryptoki's error, named in the message.
        error: CkError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;
    use std::error::Error as _;

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
            rv_name(RvError::UserAlreadyLoggedIn),
            "CKR_USER_ALREADY_LOGGED_IN"
        );
        assert_eq!(
            rv_name(RvError::VendorDefined(0x8000_0001)),
            "CKR_VENDOR_DEFINED(0x80000001)"
        );
        assert_eq!(
            ckr_name(&CkError::Pkcs11(RvError::DeviceRemoved, Function::Sign)),
            "CKR_DEVICE_REMOVED"
        );
        // Not from the module: cryptoki's own words.
        assert_eq!(
            ckr_name(&CkError::NullFunctionPointer),
            "Calling a NULL function pointer"
        );
    }

    fn token() -> TokenName {
        TokenName {
            label: "admins".into(),
            serial: "0042".into(),
        }
    }

    #[test]
    fn messages_name_module_token_and_advice() {
        let module = PathBuf::from("/opt/hsm/lib.so");
        let e = Error::PinLocked {
            module: module.clone(),
            token: token(),
        };
        let m = e.to_string();
        assert!(
            m.contains("/opt/hsm/lib.so") && m.contains("token \"admins\" (serial 0042)"),
            "{m}"
        );
        assert!(m.contains("SO) PIN") && m.contains("--init-pin"), "{m}");
        let e = Error::WrongPin {
            module: module.clone(),
            token: token(),
            pin_file: None,
            tries: PinTries::FinalTry,
        };
        assert_eq!(
            e.to_string(),
            "wrong PIN for token \"admins\" (serial 0042) (PKCS#11 module /opt/hsm/lib.so): \
             the PIN is incorrect; 1 try left: the token reports that one more wrong PIN \
             locks it (CKF_USER_PIN_FINAL_TRY)"
        );
        let e = Error::WrongPin {
            module: module.clone(),
            token: token(),
            pin_file: Some("/run/tke/admins.pin".into()),
            tries: PinTries::NotReported,
        };
        assert!(
            e.to_string()
                .contains(", read from the PIN file /run/tke/admins.pin: the PIN is incorrect"),
            "{e}"
        );
        let e = Error::MechanismMissing {
            module: module.clone(),
            token: token(),
            missing: vec!["CKM_EC_KEY_PAIR_GEN"],
            purpose: "generate a P-256 key pair",
        };
        assert_eq!(
            e.to_string(),
            "token \"admins\" (serial 0042) (PKCS#11 module /opt/hsm/lib.so) does not offer CKM_EC_KEY_PAIR_GEN, which is needed to generate a P-256 key pair"
        );
        let e = Error::Token {
            module,
            token: token(),
            operation: "C_Sign",
            error: CkError::Pkcs11(RvError::DeviceRemoved, Function::Sign),
        };
        assert_eq!(
            e.to_string(),
            "C_Sign failed on token \"admins\" (serial 0042) (PKCS#11 module /opt/hsm/lib.so): CKR_DEVICE_REMOVED"
        );
        // The CKR name is the whole story: cryptoki's long text is not a second cause.
        assert!(e.source().is_none());
    }

    #[test]
    fn a_source_is_not_repeated_in_the_message() {
        let io = io::Error::new(io::ErrorKind::PermissionDenied, "denied-by-test");
        let e = Error::PinFile {
            path: "/run/tke/a.pin".into(),
            source: io,
        };
        assert_eq!(e.to_string(), "cannot read the PIN file /run/tke/a.pin");
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("denied-by-test")
        );
    }

    #[test]
    fn token_lists() {
        assert_eq!(TokenList::default().to_string(), "none");
        let two = TokenList(vec![
            token(),
            TokenName {
                label: "b".into(),
                serial: "7".into(),
            },
        ]);
        assert_eq!(
            two.to_string(),
            "token \"admins\" (serial 0042), token \"b\" (serial 7)"
        );
    }
}
