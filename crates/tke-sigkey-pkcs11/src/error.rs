//! The errors of PKCS#11 signers. Each names the module and, once it is found, the token
//! (label and serial) and the key concerned; none ever holds a PIN.

use std::path::PathBuf;

use tke_proto::{AdminName, ProtoError};

use crate::{TokenName, UriError};

/// Errors of PKCS#11 signers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// The PKCS#11 URI was refused.
    #[error(transparent)]
    Uri(#[from] UriError),

    /// The module, the token, the PIN or a call on the token failed (the PKCS#11 layer
    /// shared with the unit backend; its errors name the module and token).
    #[error(transparent)]
    Pkcs11(#[from] tke_pkcs11::Error),

    /// The URI names no key where one is needed.
    #[error(
        "the PKCS#11 URI names no key to {operation}: add `object=LABEL` (and optionally `id=`)"
    )]
    NoKeyInUri {
        /// What was to be done (`generate`, `open`, `register`).
        operation: &'static str,
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
    #[error("cannot make the administrator certificate of {name} with {key} on {token} (PKCS#11 module {})", module.display())]
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
        #[source]
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn messages_name_module_token_and_key_and_do_not_repeat_the_cause() {
        let module = PathBuf::from("/opt/hsm/lib.so");
        let token = TokenName {
            label: "admins".into(),
            serial: "0042".into(),
        };
        let e = Pkcs11Error::KeyNotFound {
            module: module.clone(),
            token: token.clone(),
            key: "key \"alice\"".into(),
            what: "private key",
        };
        assert_eq!(
            e.to_string(),
            "no private key matching key \"alice\" on token \"admins\" (serial 0042) (PKCS#11 module /opt/hsm/lib.so)"
        );
        let cause = ProtoError::from(tke_proto::der::Error::from(
            tke_proto::der::ErrorKind::Failed,
        ));
        let cause_text = cause.to_string();
        let e = Pkcs11Error::Certificate {
            module,
            token,
            key: "key \"alice\"".into(),
            name: AdminName::new("alice").unwrap(),
            source: Box::new(cause),
        };
        assert!(!e.to_string().contains(&cause_text), "{e}");
        assert_eq!(e.source().map(ToString::to_string), Some(cause_text));
        // The shared layer's errors are passed through as they are.
        let inner = tke_pkcs11::Error::PinFileContent {
            path: "/run/a.pin".into(),
            problem: tke_pkcs11::PinFileProblem::Empty,
        };
        let text = inner.to_string();
        assert_eq!(Pkcs11Error::from(inner).to_string(), text);
    }
}
