//! Key-service requests (protocol version 4): operations a unit performs with its master
//! key registers for key storage, without changing its state.
//!
//! A service request is not an administrator command: it is unsigned, carries no
//! transaction counter and changes nothing in the unit. The unit still signs its answer
//! with its device key, bound to SHA-256 of the request, and the request carries a fresh
//! nonce, so an answer cannot be replayed for another request.
//!
//! Root keys are AES-256 keys that exist in the clear only inside a unit: outside, each is
//! AES-KWP-wrapped (RFC 5649) under a master key, and tagged by its owner with that
//! master key's verification pattern. Data keys are wrapped (AES-KWP) under a root key.

use der::{
    asn1::{OctetString, OctetStringRef},
    Choice, Decode, DecodeValue, Encode, EncodeValue, FixedTag, Header, Length, Reader, Sequence,
    Tag, Writer,
};
use zeroize::Zeroizing;

use crate::{Nonce, ProtoError, UnitId, Vp};

/// The most keys one `generateKeys` or `rewrap` request names. A full rewrap request
/// (1,024 wrapped root keys of 40 bytes) is about 43 KB of DER, inside `tke-unitd`'s
/// default 64 KiB request body limit.
pub const MAX_SERVICE_BATCH: usize = 1024;

/// The longest data key `wrapData` takes, in bytes.
pub const MAX_SERVICE_DATA: usize = 4096;

/// A data key's length must be a multiple of this (every AES and HMAC key length is).
/// PKCS#11 tokens wrap secret-key objects whose length is not a multiple of 8 in ways
/// that differ from RFC 5649 (SoftHSM2 pads them with zeros first, and records the padded
/// length), so the rule keeps every backend's bytes the same.
pub const SERVICE_DATA_MULTIPLE: usize = 8;

/// The length of a wrapped root key: AES-KWP of a 32-byte key.
pub const WRAPPED_ROOT_LEN: usize = 40;

/// A request for a key-service operation.
///
/// ```asn1
/// ServiceRequest ::= SEQUENCE {
///   unitId  OCTET STRING (SIZE(16)),  -- the unit asked
///   nonce   OCTET STRING (SIZE(16)),  -- fresh, so that the signed answer is too
///   op      ServiceOp }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct ServiceRequest {
    /// The unit asked.
    pub unit_id: UnitId,
    /// A fresh client nonce.
    pub nonce: Nonce,
    /// What to do.
    pub op: ServiceOp,
}

impl ServiceRequest {
    /// A request for `op` to `unit_id` with a fresh random nonce.
    pub fn new(unit_id: UnitId, op: ServiceOp) -> Self {
        Self {
            unit_id,
            nonce: Nonce::random(),
            op,
        }
    }

    /// Decodes the `output` of a successful answer to this request, and checks that it
    /// answers it: as many keys as asked for.
    ///
    /// # Errors
    /// [`ProtoError::Der`] for malformed output, [`ProtoError::ServiceOutput`] for output
    /// that does not answer the request.
    pub fn decode_output(&self, output: &[u8]) -> Result<ServiceOutput, ProtoError> {
        let bad = |what| ProtoError::ServiceOutput {
            unit: self.unit_id,
            what,
        };
        Ok(match &self.op {
            ServiceOp::GenerateKeys(count) => {
                let g = GeneratedKeys::from_der(output)?;
                if g.keys.len() != *count as usize {
                    return Err(bad("the number of keys generated"));
                }
                ServiceOutput::Generated(g)
            }
            ServiceOp::WrapData(_) => {
                if output.is_empty() {
                    return Err(bad("empty wrapped data"));
                }
                ServiceOutput::Wrapped(output.to_vec())
            }
            ServiceOp::UnwrapData(_) => {
                if output.is_empty() {
                    return Err(bad("empty data key"));
                }
                ServiceOutput::Unwrapped(SecretOctets::new(output.to_vec()))
            }
            ServiceOp::Rewrap(r) => {
                let keys = Vec::<OctetString>::from_der(output)?;
                if keys.len() != r.keys.len() {
                    return Err(bad("the number of keys rewrapped"));
                }
                ServiceOutput::Rewrapped(keys)
            }
        })
    }
}

/// A key-service operation.
///
/// ```asn1
/// ServiceOp ::= CHOICE {
///   generateKeys  [0] IMPLICIT INTEGER (1..1024),  -- how many root keys
///   wrapData      [1] IMPLICIT WrapData,
///   unwrapData    [2] IMPLICIT UnwrapData,
///   rewrap        [3] IMPLICIT Rewrap }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Choice)]
pub enum ServiceOp {
    /// Generate this many fresh AES-256 root keys (1 to [`MAX_SERVICE_BATCH`]), each
    /// wrapped under the current register. Output: [`GeneratedKeys`].
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    GenerateKeys(u32),
    /// Wrap a data key under a root key. Output: the wrapped data (AES-KWP).
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", constructed = "true")]
    WrapData(WrapData),
    /// Unwrap a data key wrapped under a root key. Output: the data key.
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT", constructed = "true")]
    UnwrapData(UnwrapData),
    /// Rewrap root keys from the current register to the new one, all or nothing.
    /// Output: `SEQUENCE OF OCTET STRING`, the keys in the same order.
    #[asn1(context_specific = "3", tag_mode = "IMPLICIT", constructed = "true")]
    Rewrap(Rewrap),
}

impl ServiceOp {
    /// The operation's ASN.1 name, for logs and messages.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::GenerateKeys(_) => "generateKeys",
            Self::WrapData(_) => "wrapData",
            Self::UnwrapData(_) => "unwrapData",
            Self::Rewrap(_) => "rewrap",
        }
    }

    /// Checks the sizes the protocol allows: 1 to [`MAX_SERVICE_BATCH`] keys; data keys
    /// of 8 to [`MAX_SERVICE_DATA`] bytes, a multiple of [`SERVICE_DATA_MULTIPLE`]. A unit refuses a request that fails this with
    /// [`crate::ModuleError::SERVICE_BATCH`] or [`crate::ModuleError::SERVICE_DATA`].
    ///
    /// # Errors
    /// [`ProtoError::ServiceBatch`] or [`ProtoError::ServiceData`].
    pub fn check(&self) -> Result<(), ProtoError> {
        let batch = |count: usize| {
            if (1..=MAX_SERVICE_BATCH).contains(&count) {
                Ok(())
            } else {
                Err(ProtoError::ServiceBatch { count })
            }
        };
        match self {
            Self::GenerateKeys(count) => batch(*count as usize),
            Self::Rewrap(r) => batch(r.keys.len()),
            Self::WrapData(w) => {
                let len = w.data.as_bytes().len();
                if (1..=MAX_SERVICE_DATA).contains(&len)
                    && len.is_multiple_of(SERVICE_DATA_MULTIPLE)
                {
                    Ok(())
                } else {
                    Err(ProtoError::ServiceData { len })
                }
            }
            Self::UnwrapData(_) => Ok(()),
        }
    }
}

/// Input of `wrapData`.
///
/// ```asn1
/// WrapData ::= SEQUENCE {
///   vp    OCTET STRING (SIZE(32)),  -- the master key the root key is wrapped under
///   root  OCTET STRING,             -- the wrapped root key
///   data  OCTET STRING (SIZE(8..4096)) }  -- the data key, a multiple of 8 bytes
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct WrapData {
    /// The verification pattern of the master key `root` is wrapped under.
    pub vp: Vp,
    /// The wrapped root key.
    pub root: OctetString,
    /// The data key to wrap.
    pub data: SecretOctets,
}

/// Input of `unwrapData`.
///
/// ```asn1
/// UnwrapData ::= SEQUENCE {
///   vp       OCTET STRING (SIZE(32)),
///   root     OCTET STRING,   -- the wrapped root key
///   wrapped  OCTET STRING }  -- the data key wrapped under the root key
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct UnwrapData {
    /// The verification pattern of the master key `root` is wrapped under.
    pub vp: Vp,
    /// The wrapped root key.
    pub root: OctetString,
    /// The data key wrapped under the root key (output of `wrapData`).
    pub wrapped: OctetString,
}

/// Input of `rewrap`.
///
/// ```asn1
/// Rewrap ::= SEQUENCE {
///   from  OCTET STRING (SIZE(32)),  -- VP of the current register
///   to    OCTET STRING (SIZE(32)),  -- VP of the new register, Full Committed
///   keys  SEQUENCE SIZE (1..1024) OF OCTET STRING }  -- root keys wrapped under `from`
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct Rewrap {
    /// The verification pattern of the current register.
    pub from: Vp,
    /// The verification pattern of the new register.
    pub to: Vp,
    /// Root keys wrapped under the current register.
    pub keys: Vec<OctetString>,
}

/// Output of `generateKeys`.
///
/// ```asn1
/// GeneratedKeys ::= SEQUENCE {
///   vp    OCTET STRING (SIZE(32)),     -- the current register's, which wraps them
///   keys  SEQUENCE OF OCTET STRING }   -- each a fresh root key, AES-KWP-wrapped
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct GeneratedKeys {
    /// The verification pattern of the register the keys are wrapped under.
    pub vp: Vp,
    /// The wrapped root keys.
    pub keys: Vec<OctetString>,
}

/// What a successful service operation returned, decoded
/// ([`ServiceRequest::decode_output`]).
///
/// The `output` octets of the response are: the DER of [`GeneratedKeys`] for
/// `generateKeys`; the wrapped data itself for `wrapData`; the data key itself for
/// `unwrapData`; the DER of `SEQUENCE OF OCTET STRING` for `rewrap`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceOutput {
    /// Fresh wrapped root keys and the VP they are wrapped under.
    Generated(GeneratedKeys),
    /// The wrapped data key.
    Wrapped(Vec<u8>),
    /// The data key.
    Unwrapped(SecretOctets),
    /// The root keys rewrapped under the new register, in the order sent.
    Rewrapped(Vec<OctetString>),
}

impl ServiceOutput {
    /// The `output` octets of the response that carries this.
    ///
    /// # Errors
    /// [`ProtoError::Der`] if the output cannot be encoded.
    pub fn to_output(&self) -> Result<Zeroizing<Vec<u8>>, ProtoError> {
        Ok(Zeroizing::new(match self {
            Self::Generated(g) => g.to_der()?,
            Self::Wrapped(w) => w.clone(),
            Self::Unwrapped(d) => d.as_bytes().to_vec(),
            Self::Rewrapped(keys) => keys.to_der()?,
        }))
    }
}

/// Secret bytes carried in an OCTET STRING (a data key): zeroized on drop, and its
/// `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretOctets(Zeroizing<Vec<u8>>);

impl SecretOctets {
    /// Takes ownership of the bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The bytes. Use only to hand them to a cipher or to their owner.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl core::fmt::Debug for SecretOctets {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SecretOctets({} bytes, <redacted>)", self.0.len())
    }
}

impl FixedTag for SecretOctets {
    const TAG: Tag = Tag::OctetString;
}

impl<'a> DecodeValue<'a> for SecretOctets {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        let os = OctetStringRef::decode_value(reader, header)?;
        Ok(Self::new(os.as_bytes().to_vec()))
    }
}

impl EncodeValue for SecretOctets {
    fn value_len(&self) -> der::Result<Length> {
        Length::try_from(self.0.len())
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(&self.0)
    }
}
