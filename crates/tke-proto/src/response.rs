//! Responses: every answer of a unit, queries included, is signed by its device key and
//! bound to the request it answers.

use der::{asn1::OctetString, Decode, Encode, Sequence};
use p256::ecdsa::{DerSignature, VerifyingKey};

use crate::domain::{DeviceContext, DeviceSigError};

use crate::{
    AdminName, ControlPoints, Digest32, ProtoError, RegisterState, Ski, UnitId, UnitType, Vp,
};

/// What a unit signs in reply to a request.
///
/// ```asn1
/// ResponseBody ::= SEQUENCE {
///   unitId       OCTET STRING (SIZE(16)),
///   counter      INTEGER (0..MAX),        -- the unit's counter after the request
///   requestHash  OCTET STRING (SIZE(32)), -- SHA-256 of the whole Request DER
///   returnCode   INTEGER,                 -- 0 = success; else ModuleError codes
///   reasonCode   INTEGER,
///   output       OCTET STRING }           -- command-specific
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct ResponseBody {
    /// The answering unit.
    pub unit_id: UnitId,
    /// The unit's transaction counter after this request.
    pub counter: u64,
    /// SHA-256 of the request's DER.
    pub request_hash: Digest32,
    /// 0 on success, else a module return code (see [`ModuleError`]).
    pub return_code: u32,
    /// Reason code qualifying `return_code`.
    pub reason_code: u32,
    /// Command-specific output.
    pub output: OctetString,
}

impl ResponseBody {
    /// The module error this body reports, if any.
    pub fn error(&self) -> Option<ModuleError> {
        (self.return_code != 0).then_some(ModuleError {
            rc: self.return_code,
            reason: self.reason_code,
        })
    }
}

/// A response body and the device key's signature over its exact bytes.
///
/// ```asn1
/// SignedResponse ::= SEQUENCE {
///   body       OCTET STRING,   -- DER of ResponseBody
///   signature  OCTET STRING }  -- ECDSA-Sig-Value by the unit's device key
///                              -- over "TKE-Protocol-v3 ResponseBody" 00 ‖ body
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct SignedResponse {
    /// DER of [`ResponseBody`].
    pub body: OctetString,
    /// The device key's DER ECDSA signature over `body` in the
    /// [`DeviceContext::Response`] context.
    pub signature: OctetString,
}

impl SignedResponse {
    /// Verifies the signature with the unit's device key (over the body in the
    /// [`DeviceContext::Response`] context), then checks that the body
    /// answers `request_der` from `unit_id`, and returns the body.
    ///
    /// # Errors
    /// [`ProtoError::ResponseSignature`] for a bad signature,
    /// [`ProtoError::ProtocolVersion`] for a signature of an older protocol version,
    /// [`ProtoError::ResponseBinding`]
    /// if the body names another unit or request, [`ProtoError::Der`] for malformed bytes.
    pub fn verify(
        &self,
        device_key: &VerifyingKey,
        unit_id: &UnitId,
        request_der: &[u8],
    ) -> Result<ResponseBody, ProtoError> {
        DeviceContext::Response
            .verify(device_key, self.body.as_bytes(), self.signature.as_bytes())
            .map_err(|e| match e {
                DeviceSigError::OlderVersion(v) => {
                    DeviceContext::Response.older_version(*unit_id, v)
                }
                DeviceSigError::Malformed | DeviceSigError::Invalid => {
                    ProtoError::ResponseSignature { unit: *unit_id }
                }
            })?;
        let body = ResponseBody::from_der(self.body.as_bytes())?;
        if body.unit_id != *unit_id {
            return Err(ProtoError::ResponseBinding {
                unit: *unit_id,
                what: "unit id",
            });
        }
        if body.request_hash != Digest32::sha256(request_der) {
            return Err(ProtoError::ResponseBinding {
                unit: *unit_id,
                what: "request hash",
            });
        }
        Ok(body)
    }

    /// Signs `body` with a signing function (the unit's device key), which is given
    /// [`DeviceContext::Response`] and the body's DER and must sign both (see
    /// [`DeviceContext::signed_bytes`]).
    ///
    /// # Errors
    /// [`ProtoError::Der`] if the body cannot be encoded.
    pub fn sign(
        body: &ResponseBody,
        sign: impl FnOnce(DeviceContext, &[u8]) -> Result<DerSignature, ProtoError>,
    ) -> Result<Self, ProtoError> {
        let bytes = body.to_der()?;
        let sig = sign(DeviceContext::Response, &bytes)?;
        Ok(Self {
            body: OctetString::new(bytes)?,
            signature: OctetString::new(sig.as_bytes())?,
        })
    }
}

/// One installed administrator as reported by a unit.
///
/// ```asn1
/// AdminInfo ::= SEQUENCE { ski OCTET STRING (SIZE(32)), name UTF8String (SIZE(1..30)) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct AdminInfo {
    /// The administrator's SKI.
    pub ski: Ski,
    /// The name from its certificate.
    pub name: AdminName,
}

/// One master key register as reported by a unit.
///
/// ```asn1
/// RegisterStatus ::= SEQUENCE {
///   state  RegisterState,                     -- empty(0) fullUncommitted(1) fullCommitted(2) valid(3)
///   vp     OCTET STRING (SIZE(32)) OPTIONAL } -- present when the register holds a value
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Sequence)]
pub struct RegisterStatus {
    /// The register's state.
    pub state: RegisterState,
    /// Its verification pattern when it holds a value.
    #[asn1(optional = "true")]
    pub vp: Option<Vp>,
}

impl RegisterStatus {
    /// An empty register.
    pub const EMPTY: Self = Self {
        state: RegisterState::Empty,
        vp: None,
    };
}

/// A unit's whole visible state: the answer to a [`crate::Query`].
///
/// ```asn1
/// UnitStatus ::= SEQUENCE {
///   unitId           OCTET STRING (SIZE(16)),
///   unitType         UnitType,               -- operational(0) recovery(1) failover(2)
///   counter          INTEGER (0..MAX),       -- last transaction counter used
///   sigThreshold     INTEGER (0..8),         -- 0 in imprint mode
///   revThreshold     INTEGER (0..8),
///   admins           SEQUENCE OF AdminInfo,  -- at most 8
///   newRegister      RegisterStatus,
///   currentRegister  RegisterStatus,
///   importerPending  BOOLEAN,                -- a single-use importer key is waiting
///   controlPoints    OCTET STRING (SIZE(16)) } -- the control point mask, bit 0 = MSB of byte 0
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct UnitStatus {
    /// The unit.
    pub unit_id: UnitId,
    /// Its type.
    pub unit_type: UnitType,
    /// The last transaction counter used; the next command must carry this plus one.
    pub counter: u64,
    /// Signature threshold (0 in imprint mode).
    pub sig_threshold: u8,
    /// Revocation signature threshold (0 in imprint mode).
    pub rev_threshold: u8,
    /// Installed administrators.
    pub admins: Vec<AdminInfo>,
    /// The new master key register.
    pub new_register: RegisterStatus,
    /// The current master key register.
    pub current_register: RegisterStatus,
    /// Whether an importer key is waiting for an import.
    pub importer_pending: bool,
    /// The unit's control points.
    pub control_points: ControlPoints,
}

impl UnitStatus {
    /// A unit is in imprint mode while its thresholds are 0.
    pub fn imprint_mode(&self) -> bool {
        self.sig_threshold == 0
    }

    /// Decodes and checks the invariants a well-behaved unit keeps (so a client can
    /// trust the fields inside): thresholds ≤ 8 and both 0 or both set; at most 8
    /// distinct administrators, at least as many as either threshold; register states
    /// legal for their register; VP present exactly when the register is full.
    ///
    /// # Errors
    /// [`ProtoError::Der`] for malformed bytes, [`ProtoError::InvalidStatus`] for a
    /// broken invariant.
    pub fn decode_checked(bytes: &[u8]) -> Result<Self, ProtoError> {
        let s = Self::from_der(bytes)?;
        let bad = |what| {
            Err(ProtoError::InvalidStatus {
                unit: s.unit_id,
                what,
            })
        };
        if s.sig_threshold > 8 || s.rev_threshold > 8 {
            return bad("threshold above 8");
        }
        if (s.sig_threshold == 0) != (s.rev_threshold == 0) {
            return bad("only one threshold is 0");
        }
        if s.admins.len() > 8 {
            return bad("more than 8 administrators");
        }
        if usize::from(s.sig_threshold.max(s.rev_threshold)) > s.admins.len() {
            return bad("a threshold above the number of administrators");
        }
        for (i, a) in s.admins.iter().enumerate() {
            if s.admins[..i].iter().any(|b| b.ski == a.ski) {
                return bad("the same administrator listed twice");
            }
        }
        if matches!(s.new_register.state, RegisterState::Valid) {
            return bad("new register in state Valid");
        }
        if !matches!(
            s.current_register.state,
            RegisterState::Empty | RegisterState::Valid
        ) {
            return bad("current register neither Empty nor Valid");
        }
        for r in [s.new_register, s.current_register] {
            if (r.state == RegisterState::Empty) != r.vp.is_none() {
                return bad("verification pattern present on an empty register, or missing");
            }
        }
        Ok(s)
    }
}

/// A module error: the vendor's return and reason codes, kept so that users'
/// troubleshooting notes carry over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModuleError {
    /// Return code.
    pub rc: u32,
    /// Reason code (0 when none).
    pub reason: u32,
}

#[allow(missing_docs)]
impl ModuleError {
    pub const INVALID_UNIT: Self = Self::new(3, 0);
    pub const INVALID_IMPORTER: Self = Self::new(3, 102);
    pub const INVALID_DATA: Self = Self::new(32, 0);
    pub const ADMIN_NOT_FOUND: Self = Self::new(32, 32);
    /// Master key parts that are not independent (a part is zero, two are equal, or three
    /// XOR to zero): their key would be known to fewer people than the parts' owners. Not
    /// a vendor code.
    pub const PARTS_NOT_INDEPENDENT: Self = Self::new(32, 2);
    pub const UNEXPECTED_ARGUMENTS: Self = Self::new(33, 0);
    pub const RANDOM_FORBIDDEN: Self = Self::new(80, 52);
    pub const EXPORT_FORBIDDEN: Self = Self::new(80, 131);
    /// Loading a master key from parts is not permitted on this unit (a recovery unit).
    pub const LOAD_FORBIDDEN: Self = Self::new(80, 80);
    pub const NOT_FOUND: Self = Self::new(96, 0);
    pub const VP_MISMATCH: Self = Self::new(101, 48);
    pub const REGISTER_STATE: Self = Self::new(102, 0);
    pub const SAME_VALUE: Self = Self::new(102, 1);
    pub const INVALID_COUNTER: Self = Self::new(163, 0);
    pub const IMPRINT_MODE: Self = Self::new(179, 0);
    pub const INVALID_SIGNATURE: Self = Self::new(192, 0);
    pub const MALFORMED_SIGNATURE: Self = Self::new(193, 0);
    pub const NOT_ENOUGH_SIGNATURES: Self = Self::new(208, 0);
    pub const SIG_THRESHOLD_ABOVE_ADMINS: Self = Self::new(209, 57);
    pub const REV_THRESHOLD_ABOVE_ADMINS: Self = Self::new(209, 58);
    pub const REMOVAL_BELOW_THRESHOLD: Self = Self::new(209, 66);
    pub const ADMIN_EXISTS: Self = Self::new(256, 38);
    /// An installed administrator's name looks the same as the new one's
    /// ([`crate::AdminName::looks_like`]). Not a vendor code.
    pub const ADMIN_NAME_LOOKALIKE: Self = Self::new(256, 40);
    pub const UNAUTHORIZED_SIGNER: Self = Self::new(257, 0);
    pub const TOO_MANY_ADMINS: Self = Self::new(261, 39);
    pub const INTERNAL: Self = Self::new(500, 0);
    /// A service request names a verification pattern that neither the current register
    /// (Valid) nor the new register (Full Committed) has. Not a vendor code.
    pub const SERVICE_NO_REGISTER: Self = Self::new(96, 48);
    /// A wrapped root key is malformed, or was not wrapped under the master key its
    /// verification pattern names. Not a vendor code.
    pub const SERVICE_WRAPPED_KEY: Self = Self::new(32, 48);
    /// Wrapped data is malformed, or was not wrapped under the root key given. Not a
    /// vendor code.
    pub const SERVICE_WRAPPED_DATA: Self = Self::new(32, 49);
    /// A service batch names no key or more than [`crate::MAX_SERVICE_BATCH`]. Not a
    /// vendor code.
    pub const SERVICE_BATCH: Self = Self::new(33, 48);
    /// A data key to wrap is not 8 to [`crate::MAX_SERVICE_DATA`] bytes, a multiple of 8.
    /// Not a vendor code.
    pub const SERVICE_DATA: Self = Self::new(33, 49);
    /// `generateKeys` needs a Valid current register. Not a vendor code.
    pub const SERVICE_NO_CURRENT: Self = Self::new(102, 48);
    /// `rewrap` needs the current register Valid with the `from` verification pattern and
    /// the new register Full Committed with the `to` one. Not a vendor code.
    pub const SERVICE_REWRAP_STATE: Self = Self::new(102, 49);

    /// A module error from its codes.
    pub const fn new(rc: u32, reason: u32) -> Self {
        Self { rc, reason }
    }

    /// The error text for this (rc, reason), falling back to the text for the rc alone.
    pub fn text(&self) -> &'static str {
        match (self.rc, self.reason) {
            (3, 102) => "Invalid importer key certificate for export.",
            (3, _) => "Invalid crypto unit: the command is addressed to another unit.",
            (32, 2) => {
                "The master key parts are not independent: a part is zero, two parts are equal, or they combine to zero."
            }
            (32, 32) => "Administrator not found.",
            (32, 48) => {
                "A wrapped root key is malformed or was not wrapped under the master key its verification pattern names."
            }
            (32, 49) => "The wrapped data is malformed or was not wrapped under this root key.",
            (32, _) => "Invalid data.",
            (33, 48) => "A key-service batch must name 1 to 1024 keys.",
            (33, 49) => "A data key to wrap must be 8 to 4096 bytes, a multiple of 8.",
            (33, _) => "Arguments missing or unexpected.",
            (80, 52) => "Random master key generation is not permitted on this crypto unit.",
            (80, 80) => "Loading master key parts is not permitted on this crypto unit.",
            (80, 131) => "Master key export is not permitted on this crypto unit.",
            (80, _) => "The crypto unit's attributes forbid this command.",
            (96, 48) => {
                "No master key register has this verification pattern (the current register Valid, or the new register Full Committed)."
            }
            (96, _) => "Key or certificate not found.",
            (101, 48) => {
                "The verification pattern of the key being committed or activated does not match."
            }
            (102, 1) => "The new master key value equals the current value.",
            (102, 48) => "Generating root keys needs a Valid current master key register.",
            (102, 49) => {
                "Rewrapping needs the current register Valid with the source verification pattern and the new register Full Committed with the target one."
            }
            (102, _) => "The master key register is not in the state this command needs.",
            (163, _) => "Invalid transaction counter.",
            (179, _) => "Operation not allowed in imprint mode.",
            (192, _) => "Invalid signature.",
            (193, _) => "Malformed signature.",
            (208, _) => "Not enough signatures.",
            (209, 57) => "The signature threshold is larger than the number of administrators.",
            (209, 58) => "The revocation threshold is larger than the number of administrators.",
            (209, 66) => {
                "Removing this administrator would leave fewer administrators than a threshold."
            }
            (209, _) => "Inconsistent attribute settings.",
            (256, 40) => {
                "An administrator whose name looks the same as this one's is already installed."
            }
            (256, _) => "The administrator already exists.",
            (257, _) => "An unauthorized administrator signed the command.",
            (261, _) => "The maximum supported number of administrators already exists.",
            _ => "Internal error in the crypto unit.",
        }
    }
}

impl core::fmt::Display for ModuleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Return code: {}, Reason code: {}, Error message: {}",
            self.rc,
            self.reason,
            self.text()
        )
    }
}
