#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod audit;
pub mod cert;
pub mod command;
pub mod control;
pub mod domain;
pub mod ecdh_p256;
pub mod ecdsa_p256;
pub mod error;
pub mod parts;
pub mod response;
pub mod service;
pub mod transport;
mod types;
pub mod vp;

pub use audit::{AuditLog, AuditPage, AuditQuery, AuditRecord, AuditTamper, MAX_AUDIT_PAGE};
pub use cert::{AdminCertificate, CaCertificate, DeviceCertificate, UnitDescription};
pub use command::{AdminCommand, Command, CommandId, Query, Request, SignedCommand, SignerInfo};
pub use control::{ControlPoint, ControlPoints};
pub use domain::{DeviceContext, PROTOCOL_VERSION};
pub use error::{CertificateError, ErrorChain, TransportError};
pub use response::{
    AdminInfo, ModuleError, RegisterStatus, ResponseBody, SignedResponse, UnitStatus,
};
pub use service::{
    GeneratedKeys, Rewrap, SecretOctets, ServiceOp, ServiceOutput, ServiceRequest, UnwrapData,
    WrapData, MAX_SERVICE_BATCH, MAX_SERVICE_DATA, SERVICE_DATA_MULTIPLE,
};
pub use types::{
    label_problem, labels_look_alike, AdminName, Digest32, InstanceId, Nonce, Register,
    RegisterState, Ski, Threshold, UnitId, UnitType, Vp,
};

pub use der;
pub use p256;

use zeroize::Zeroizing;

/// A boxed error from a signer or a backend, carried as a source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the protocol layer. Each names what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// Malformed or non-canonical DER (the source says where the decoder stopped).
    #[error("malformed DER")]
    Der(#[from] der::Error),
    /// A fixed-length value has the wrong length.
    #[error("the {what} must be {expected} bytes, not {actual}")]
    Length {
        /// What the value is.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Length received.
        actual: usize,
    },
    /// A hex string is not hex.
    #[error("the {what} is not valid hexadecimal")]
    Hex {
        /// What the value is.
        what: &'static str,
    },
    /// An administrator name breaks the rules.
    #[error("the administrator name {name:?} ({chars} characters) is not valid: {problem}; use 1 to 30 printable characters")]
    AdminName {
        /// The name (at most 40 characters of it).
        name: String,
        /// Its length in characters.
        chars: usize,
        /// What is wrong.
        problem: &'static str,
    },
    /// A threshold outside 1..=8.
    #[error("the threshold {value} is out of range: it must be a number between 1 and 8")]
    Threshold {
        /// The value received.
        value: u32,
    },
    /// A command input that must be empty was not.
    #[error("the {command:?} command takes no input")]
    UnexpectedInput {
        /// The command.
        command: CommandId,
    },
    /// An `exportMkBatch` names no target or too many.
    #[error("an export batch names {count} targets; it must name 1 to {max}", max = command::MAX_EXPORT_TARGETS)]
    ExportTargets {
        /// How many it named.
        count: usize,
    },
    /// An `importMkParts` names fewer or more parts than a master key is made of.
    #[error("a master key is loaded from {min} or {max} parts, not {count}", min = parts::MIN_PARTS, max = parts::MAX_PARTS)]
    PartCount {
        /// How many it named.
        count: usize,
    },
    /// A master key part's position is outside 1 to 3.
    #[error("there is no master key part number {index}: parts are numbered 1 to {max}", max = parts::MAX_PARTS)]
    PartIndex {
        /// The position given.
        index: usize,
    },
    /// A control point number or name that does not exist.
    #[error("{value:?} is not a control point: give a number from 0 to 127 or one of XCP_CPB_ALG_EC_25519, XCP_CPB_BTC, XCP_CPB_ECDSA_OTHER")]
    ControlPoint {
        /// What was given (at most 40 characters of it).
        value: String,
    },
    /// A certificate failed a check (the source says which).
    #[error("invalid certificate")]
    Certificate(#[from] CertificateError),
    /// A public key is not a P-256 point.
    #[error("the {what} is not an uncompressed P-256 point")]
    PublicKey {
        /// Which key.
        what: &'static str,
    },
    /// A master key transport check failed (the source says which).
    #[error("master key transport failed")]
    Transport(#[from] TransportError),
    /// A signer or a device key failed to sign.
    #[error("signing failed")]
    Signing {
        /// The signer's error.
        source: BoxError,
    },
    /// A response's signature does not verify under the unit's device key.
    #[error("the response from crypto unit {} is not signed by its device key", unit.uuid())]
    ResponseSignature {
        /// The unit asked.
        unit: UnitId,
    },
    /// A device-key signature follows an older protocol version's rules (a version 2 unit
    /// signed under its own label, a version 1 unit under none).
    #[error("the {what} from crypto unit {} is signed under protocol version {found}; version {expected} is required", unit.uuid())]
    ProtocolVersion {
        /// The unit whose device key signed it.
        unit: UnitId,
        /// What was signed ([`DeviceContext::what`]).
        what: &'static str,
        /// The version the signature follows.
        found: u32,
        /// The version this side speaks ([`PROTOCOL_VERSION`]).
        expected: u32,
    },
    /// A response does not answer the request that was sent.
    #[error("the response from crypto unit {} does not match the request ({what} differs)", unit.uuid())]
    ResponseBinding {
        /// The unit asked.
        unit: UnitId,
        /// What differs.
        what: &'static str,
    },
    /// A `generateKeys` or `rewrap` request names no key or more than a unit takes.
    #[error("a key-service batch of {count} keys is not allowed: send 1 to {max} keys per request", max = service::MAX_SERVICE_BATCH)]
    ServiceBatch {
        /// How many keys it named.
        count: usize,
    },
    /// An audit page or record holds more entries than the protocol allows.
    #[error("an audit answer holds {count} {what}, more than the {max} the protocol allows")]
    AuditSize {
        /// What was counted.
        what: &'static str,
        /// How many there were.
        count: usize,
        /// The most allowed.
        max: usize,
    },
    /// A `wrapData` request's data key is empty, too long, or not a multiple of 8 bytes.
    #[error("a data key of {len} bytes cannot be wrapped: it must be 8 to {max} bytes, a multiple of 8", max = service::MAX_SERVICE_DATA)]
    ServiceData {
        /// The data key's length.
        len: usize,
    },
    /// A service answer does not answer the request (for example fewer keys than asked).
    #[error("the service answer from crypto unit {} does not answer the request ({what})", unit.uuid())]
    ServiceOutput {
        /// The unit asked.
        unit: UnitId,
        /// What is wrong.
        what: &'static str,
    },
    /// A unit reported a status that breaks the protocol's invariants.
    #[error("crypto unit {} reported an impossible status: {what}", unit.uuid())]
    InvalidStatus {
        /// The unit.
        unit: UnitId,
        /// The broken invariant.
        what: &'static str,
    },
}

impl From<der::pem::Error> for ProtoError {
    fn from(e: der::pem::Error) -> Self {
        Self::Der(e.into())
    }
}

/// Copies a P-256 private scalar into a zeroizing array and wipes the copy it came in, for
/// handing keys to aws-lc ([`ecdsa_p256`], [`ecdh_p256`]).
pub(crate) fn scalar_bytes(mut field: p256::FieldBytes) -> Zeroizing<[u8; 32]> {
    let scalar = Zeroizing::new(<[u8; 32]>::from(field));
    zeroize::Zeroize::zeroize(field.as_mut_slice());
    scalar
}

/// Defines a 32-byte secret value type: zeroized on drop, its `Debug` shows only its
/// verification pattern, and the value comes out only through `expose_secret`.
macro_rules! secret_value {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name(::zeroize::Zeroizing<[u8; 32]>);

        impl $name {
            #[doc = concat!("A fresh random ", $what, ".")]
            pub fn random() -> Self {
                let mut k = ::zeroize::Zeroizing::new([0u8; 32]);
                ::rand_core::RngCore::fill_bytes(&mut ::rand_core::OsRng, k.as_mut());
                Self(k)
            }

            #[doc = concat!("A ", $what, " from 32 bytes.")]
            ///
            /// # Errors
            /// [`ProtoError::Length`](crate::ProtoError::Length) for another length.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, $crate::ProtoError> {
                if bytes.len() != 32 {
                    return Err($crate::ProtoError::Length {
                        what: $what,
                        expected: 32,
                        actual: bytes.len(),
                    });
                }
                let mut k = ::zeroize::Zeroizing::new([0u8; 32]);
                k.copy_from_slice(bytes);
                Ok(Self(k))
            }

            /// The 32 bytes. Use only to hand them to a cipher.
            pub fn expose_secret(&self) -> &[u8; 32] {
                &self.0
            }

            /// Its verification pattern (`docs/protocol.md` §12).
            pub fn vp(&self) -> $crate::Vp {
                $crate::vp::of_value(&self.0)
            }
        }

        impl ::core::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                write!(f, "{}(vp={}, value=<redacted>)", stringify!($name), self.vp())
            }
        }
    };
}
pub(crate) use secret_value;

secret_value!(
    /// A 256-bit AES master key value. Zeroized on drop; no `Debug` that shows it; the
    /// value comes out only through [`MasterKey::expose_secret`].
    MasterKey,
    "master key"
);
