//! Master key transport between two units.
//!
//! 1. The target unit makes a single-use P-256 *importer key* and certifies it with its
//!    device key ([`CertifiedImporter`]).
//! 2. The source unit (a recovery unit) checks the target's device certificate against
//!    its fleet CA and the importer's certification, makes an ephemeral P-256 key,
//!    computes `Z = ECDH(ephemeral, importer)` (the x-coordinate, 32 bytes), derives the
//!    key-encryption key
//!
//!    ```text
//!    ctx = SHA-256("TKE master key transport v1" ‖ sourceUnitId ‖ targetUnitId
//!                  ‖ ephemeralPoint(65) ‖ importerPoint(65))
//!    KEK = AES-256-ECB_Z(ctx[0..16]) ‖ AES-256-ECB_Z(ctx[16..32])
//!    ```
//!
//!    wraps the 32-byte master key with AES key wrap with padding (RFC 5649) under the
//!    KEK, and signs the [`MkEnvelope`] with its device key ([`SignedEnvelope`]).
//! 3. The target checks the envelope's signature and the source's device certificate,
//!    recomputes the KEK with the importer's private key, unwraps, checks the VP, and
//!    destroys the importer key.
//!
//! Every step exists as a PKCS#11 mechanism (`CKM_ECDH1_DERIVE` with `CKD_NULL` into an
//! AES-256 key, `CKM_AES_ECB_ENCRYPT_DATA`, and RFC 5649 key wrap — `CKM_AES_KEY_WRAP_KWP`
//! in PKCS#11 3.x, offered as `CKM_AES_KEY_WRAP_PAD` by SoftHSM2; use whichever computes
//! RFC 5649 on the token, proven with the known-answer vectors of the tests), so a unit whose
//! secrets live in a token computes the same values without the key leaving it. The
//! functions here are the software reference that the soft backend uses.

use aes::cipher::{BlockEncrypt, KeyInit};
use der::{asn1::OctetString, Decode, Encode, Sequence};
use p256::{ecdsa::DerSignature, elliptic_curve::sec1::ToEncodedPoint, PublicKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{
    cert::{CaCertificate, DeviceCertificate},
    domain::{DeviceContext, DeviceSigError},
    vp, BoxError, Digest32, InstanceId, MasterKey, ProtoError, Register, TransportError, UnitId,
    Vp,
};

/// Label that starts the KDF context.
pub const KDF_LABEL: &[u8] = b"TKE master key transport v1";

/// A 65-byte SEC1 uncompressed P-256 point, checked to be on the curve.
pub fn point_bytes(key: &PublicKey) -> [u8; 65] {
    let mut out = [0u8; 65];
    out.copy_from_slice(key.to_encoded_point(false).as_bytes());
    out
}

/// Parses a 65-byte SEC1 uncompressed point.
///
/// # Errors
/// [`ProtoError::PublicKey`] if the bytes are not a P-256 point.
pub fn parse_point(bytes: &[u8], what: &'static str) -> Result<PublicKey, ProtoError> {
    if bytes.len() != 65 || bytes[0] != 4 {
        return Err(ProtoError::PublicKey { what });
    }
    PublicKey::from_sec1_bytes(bytes).map_err(|_| ProtoError::PublicKey { what })
}

/// A single-use importer key of a target unit.
///
/// ```asn1
/// ImporterKey ::= SEQUENCE {
///   unitId     OCTET STRING (SIZE(16)),  -- the unit holding the private key
///   keyId      OCTET STRING (SIZE(32)),  -- SHA-256 of the point: names this key
///   publicKey  OCTET STRING (SIZE(65)) } -- SEC1 uncompressed P-256 point
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct ImporterKey {
    /// The target unit.
    pub unit_id: UnitId,
    /// SHA-256 of `public_key`.
    pub key_id: Digest32,
    /// The importer's public point.
    pub public_key: OctetString,
}

impl ImporterKey {
    /// Describes the importer key `key` of `unit_id`.
    ///
    /// # Errors
    /// [`ProtoError::Der`] (not expected).
    pub fn new(unit_id: UnitId, key: &PublicKey) -> Result<Self, ProtoError> {
        let point = point_bytes(key);
        Ok(Self {
            unit_id,
            key_id: Digest32::sha256(&point),
            public_key: OctetString::new(point.to_vec())?,
        })
    }

    /// The importer's public key, checked against `key_id`.
    ///
    /// # Errors
    /// [`ProtoError::PublicKey`] or [`ProtoError::Transport`] if the id does not match.
    pub fn key(&self) -> Result<PublicKey, ProtoError> {
        let key = parse_point(self.public_key.as_bytes(), "importer key")?;
        if Digest32::sha256(self.public_key.as_bytes()) != self.key_id {
            return Err(TransportError::ImporterKeyIdMismatch.into());
        }
        Ok(key)
    }
}

/// An importer key signed by the target unit's device key.
///
/// ```asn1
/// CertifiedImporter ::= SEQUENCE {
///   importer   OCTET STRING,   -- DER of ImporterKey
///   signature  OCTET STRING }  -- ECDSA-Sig-Value by the target's device key
///                              -- over "TKE-Protocol-v3 ImporterKey" 00 ‖ importer
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct CertifiedImporter {
    /// DER of [`ImporterKey`].
    pub importer: OctetString,
    /// The target device key's signature over `importer` in the
    /// [`DeviceContext::Importer`] context.
    pub signature: OctetString,
}

impl CertifiedImporter {
    /// Certifies `importer` with a device signing function, which is given
    /// [`DeviceContext::Importer`] and the importer key's DER and must sign both (see
    /// [`DeviceContext::signed_bytes`]).
    ///
    /// # Errors
    /// [`ProtoError::Signing`] or [`ProtoError::Der`].
    pub fn sign(
        importer: &ImporterKey,
        sign: impl FnOnce(DeviceContext, &[u8]) -> Result<DerSignature, BoxError>,
    ) -> Result<Self, ProtoError> {
        let bytes = importer.to_der()?;
        let sig = sign(DeviceContext::Importer, &bytes)
            .map_err(|source| ProtoError::Signing { source })?;
        Ok(Self {
            importer: OctetString::new(bytes)?,
            signature: OctetString::new(sig.as_bytes())?,
        })
    }

    /// Checks the certification with the target's device certificate and returns the
    /// importer key description.
    ///
    /// # Errors
    /// [`ProtoError::Transport`] if the signature or the unit id does not match,
    /// [`ProtoError::ProtocolVersion`] for a signature of an older protocol version.
    pub fn verify(&self, target: &DeviceCertificate) -> Result<ImporterKey, ProtoError> {
        verify_sig(
            DeviceContext::Importer,
            target,
            &self.importer,
            &self.signature,
            TransportError::ImporterNotCertified,
        )?;
        let importer = ImporterKey::from_der(self.importer.as_bytes())?;
        if importer.unit_id != target.unit_id() {
            return Err(TransportError::ImporterOfAnotherUnit.into());
        }
        importer.key()?;
        Ok(importer)
    }
}

/// Checks `signer`'s device signature over `msg` in `context`; `refused` says why
/// otherwise.
fn verify_sig(
    context: DeviceContext,
    signer: &DeviceCertificate,
    msg: &OctetString,
    sig: &OctetString,
    refused: TransportError,
) -> Result<(), ProtoError> {
    context
        .verify(&signer.verifying_key(), msg.as_bytes(), sig.as_bytes())
        .map_err(|e| match e {
            DeviceSigError::OlderVersion(v) => context.older_version(signer.unit_id(), v),
            DeviceSigError::Malformed | DeviceSigError::Invalid => refused.into(),
        })
}

/// Input of `exportMk`: which register to export and to whom.
///
/// ```asn1
/// ExportRequest ::= SEQUENCE {
///   register           Register,           -- current(0) new(1)
///   targetCertificate  OCTET STRING,       -- DER of the target's device certificate
///   importer           CertifiedImporter,
///   targetInstance     [0] IMPLICIT OCTET STRING (SIZE(16)) OPTIONAL }
///                      -- the target's service instance, when it is not the source's
/// ```
///
/// `targetInstance` is the source quorum's consent to a master key leaving its service
/// instance (`docs/protocol.md` §11.3): absent, the target must belong to the source's own
/// instance, as before it existed; present, it must be the instance the target's device
/// certificate names.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct ExportRequest {
    /// The register to export.
    pub register: Register,
    /// DER of the target unit's device certificate.
    pub target_certificate: OctetString,
    /// The target's certified importer key.
    pub importer: CertifiedImporter,
    /// The target's service instance, named when it differs from the source's.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub target_instance: Option<InstanceId>,
}

/// A wrapped master key on its way from a source unit to a target unit.
///
/// ```asn1
/// MkEnvelope ::= SEQUENCE {
///   sourceUnitId        OCTET STRING (SIZE(16)),
///   targetUnitId        OCTET STRING (SIZE(16)),
///   importerKeyId       OCTET STRING (SIZE(32)),
///   ephemeralPublicKey  OCTET STRING (SIZE(65)),
///   wrappedKey          OCTET STRING (SIZE(40)),  -- AES-KWP(KEK, master key)
///   vp                  OCTET STRING (SIZE(32)) } -- VP of the wrapped key
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct MkEnvelope {
    /// The exporting unit.
    pub source_unit_id: UnitId,
    /// The unit that may import it.
    pub target_unit_id: UnitId,
    /// The importer key it is wrapped to.
    pub importer_key_id: Digest32,
    /// The source's ephemeral ECDH point.
    pub ephemeral_public_key: OctetString,
    /// The wrapped master key.
    pub wrapped_key: OctetString,
    /// The master key's VP.
    pub vp: Vp,
}

/// An envelope signed by the source unit's device key, with that unit's certificate.
///
/// ```asn1
/// SignedEnvelope ::= SEQUENCE {
///   envelope           OCTET STRING,   -- DER of MkEnvelope
///   signature          OCTET STRING,   -- ECDSA-Sig-Value by the source's device key
///                                      -- over "TKE-Protocol-v3 MkEnvelope" 00 ‖ envelope
///   sourceCertificate  OCTET STRING,   -- DER of the source's device certificate
///   sourceInstance     [0] IMPLICIT OCTET STRING (SIZE(16)) OPTIONAL }
///                      -- importMk only: the source's service instance, when it is not
///                      -- the target's
/// ```
///
/// `sourceInstance` is outside the source's signature: the client adds it to the input of
/// `importMk`, whose signers (the target's administrators) consent with it to a master
/// key from another service instance (`docs/protocol.md` §11.3). A unit never puts it in
/// the output of an export. Absent, the source must belong to the target's own instance,
/// as before it existed.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct SignedEnvelope {
    /// DER of [`MkEnvelope`].
    pub envelope: OctetString,
    /// The source device key's signature over `envelope` in the
    /// [`DeviceContext::Envelope`] context.
    pub signature: OctetString,
    /// DER of the source unit's device certificate.
    pub source_certificate: OctetString,
    /// In `importMk`'s input, the source's service instance when it differs from the
    /// target's.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub source_instance: Option<InstanceId>,
}

impl SignedEnvelope {
    /// Signs an envelope with the source unit's device key: the signing function is
    /// given [`DeviceContext::Envelope`] and the envelope's DER and must sign both (see
    /// [`DeviceContext::signed_bytes`]).
    ///
    /// # Errors
    /// [`ProtoError::Signing`] or [`ProtoError::Der`].
    pub fn sign(
        envelope: &MkEnvelope,
        source_certificate: &DeviceCertificate,
        sign: impl FnOnce(DeviceContext, &[u8]) -> Result<DerSignature, BoxError>,
    ) -> Result<Self, ProtoError> {
        let bytes = envelope.to_der()?;
        let sig = sign(DeviceContext::Envelope, &bytes)
            .map_err(|source| ProtoError::Signing { source })?;
        Ok(Self {
            envelope: OctetString::new(bytes)?,
            signature: OctetString::new(sig.as_bytes())?,
            source_certificate: OctetString::new(source_certificate.der().to_vec())?,
            source_instance: None,
        })
    }

    /// Checks the source certificate against the fleet CA and the envelope's signature,
    /// and returns the envelope and the source certificate.
    ///
    /// # Errors
    /// [`ProtoError::Certificate`] or [`ProtoError::Transport`];
    /// [`ProtoError::ProtocolVersion`] for a signature of an older protocol version.
    pub fn verify(
        &self,
        ca: &CaCertificate,
    ) -> Result<(MkEnvelope, DeviceCertificate), ProtoError> {
        let source = DeviceCertificate::verify(self.source_certificate.as_bytes(), ca)?;
        verify_sig(
            DeviceContext::Envelope,
            &source,
            &self.envelope,
            &self.signature,
            TransportError::EnvelopeNotSigned,
        )?;
        let env = MkEnvelope::from_der(self.envelope.as_bytes())?;
        if env.source_unit_id != source.unit_id() {
            return Err(TransportError::EnvelopeOfAnotherSource.into());
        }
        Ok((env, source))
    }
}

/// The KDF context hash, binding both units and both public keys.
pub fn kdf_context(
    source: &UnitId,
    target: &UnitId,
    ephemeral: &[u8; 65],
    importer: &[u8; 65],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(KDF_LABEL);
    h.update(source.0);
    h.update(target.0);
    h.update(ephemeral);
    h.update(importer);
    h.finalize().into()
}

/// A key-encryption key. Zeroized on drop; its `Debug` never shows it.
pub struct Kek(Zeroizing<[u8; 32]>);

impl Kek {
    /// The key bytes, to hand to [`wrap`] or [`unwrap`].
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl core::fmt::Debug for Kek {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Kek(<redacted>)")
    }
}

/// `KEK = AES-256-ECB_Z(ctx)`: two AES blocks of the context under the shared secret.
pub fn derive_kek(z: &[u8; 32], context: &[u8; 32]) -> Kek {
    let cipher = aes::Aes256::new(z.into());
    let mut out = Zeroizing::new(*context);
    for block in out.chunks_exact_mut(16) {
        cipher.encrypt_block(block.into());
    }
    Kek(out)
}

/// Wraps a master key under a KEK (RFC 5649, 40 bytes out).
///
/// # Errors
/// [`ProtoError::Transport`] (not expected for a 32-byte key).
pub fn wrap(kek: &[u8; 32], mk: &MasterKey) -> Result<Vec<u8>, ProtoError> {
    wrap_value(kek, mk.expose_secret())
}

/// Wraps a 32-byte value under a KEK (RFC 5649, 40 bytes out).
pub(crate) fn wrap_value(kek: &[u8; 32], value: &[u8; 32]) -> Result<Vec<u8>, ProtoError> {
    aes_kw::KekAes256::from(*kek)
        .wrap_with_padding_vec(value)
        .map_err(|_| ProtoError::from(TransportError::WrapFailed))
}

/// Unwraps a master key (RFC 5649) and checks it is 32 bytes.
///
/// # Errors
/// [`ProtoError::Transport`] when the integrity check fails or the length is wrong.
pub fn unwrap(kek: &[u8; 32], wrapped: &[u8]) -> Result<MasterKey, ProtoError> {
    MasterKey::from_slice(unwrap_value(kek, wrapped)?.as_slice())
}

/// Unwraps a 32-byte value (RFC 5649).
pub(crate) fn unwrap_value(
    kek: &[u8; 32],
    wrapped: &[u8],
) -> Result<Zeroizing<[u8; 32]>, ProtoError> {
    // A 32-byte key wraps to exactly 40 bytes. Checking first also keeps odd lengths away
    // from aes-kw 0.2, which panics on some short inputs.
    if wrapped.len() != 40 {
        return Err(TransportError::WrappedKeyLength.into());
    }
    let v = Zeroizing::new(
        aes_kw::KekAes256::from(*kek)
            .unwrap_with_padding_vec(wrapped)
            .map_err(|_| ProtoError::from(TransportError::WrappedKeyIntegrity))?,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    if v.len() != 32 {
        return Err(TransportError::UnwrappedKeyLength.into());
    }
    out.copy_from_slice(&v);
    Ok(out)
}

/// What a KDF context is computed from: the ephemeral point *E* and the importer point
/// *I*, both 65 bytes. Each construction (master key, part) binds its own values too.
pub(crate) type ContextOf<'a> =
    dyn FnOnce(&[u8; 65], &[u8; 65]) -> Result<[u8; 32], ProtoError> + 'a;

/// The sealing side shared by master keys and parts: a fresh ephemeral key, ECDH with
/// `importer`, the KEK of `context(E, I)`, the RFC 5649 wrap of `value`. Returns *E* and
/// the wrapped value.
pub(crate) fn seal_value(
    value: &[u8; 32],
    importer: &PublicKey,
    context: Box<ContextOf<'_>>,
) -> Result<([u8; 65], Vec<u8>), ProtoError> {
    let (eph_public, z) = crate::ecdh_p256::agree_ephemeral(importer)
        .map_err(|_| ProtoError::from(TransportError::KeyAgreement))?;
    let eph_point = point_bytes(&eph_public);
    let ctx = context(&eph_point, &point_bytes(importer))?;
    let kek = derive_kek(&z, &ctx);
    Ok((eph_point, wrap_value(kek.expose_secret(), value)?))
}

/// The opening side shared by master keys and parts: ECDH of the importer secret with the
/// ephemeral point, the KEK of `context(E, I)` (which may refuse, for instance another
/// importer), the RFC 5649 unwrap, and the VP check of the value.
pub(crate) fn open_value(
    importer_secret: &p256::SecretKey,
    ephemeral: &[u8],
    wrapped: &[u8],
    expected_vp: &Vp,
    context: Box<ContextOf<'_>>,
) -> Result<Zeroizing<[u8; 32]>, ProtoError> {
    let eph = parse_point(ephemeral, "ephemeral key")?;
    let (importer_pub, z) = crate::ecdh_p256::agree(importer_secret, &eph)
        .map_err(|_| ProtoError::from(TransportError::KeyAgreement))?;
    let ctx = context(&point_bytes(&eph), &point_bytes(&importer_pub))?;
    let kek = derive_kek(&z, &ctx);
    let value = unwrap_value(kek.expose_secret(), wrapped)?;
    if vp::of_value(&value) != *expected_vp {
        return Err(TransportError::VpMismatch.into());
    }
    Ok(value)
}

/// The software reference of the export side: makes an ephemeral key, derives the KEK
/// for `importer`, wraps `mk` and returns the envelope (unsigned).
///
/// # Errors
/// [`ProtoError::Transport`] or [`ProtoError::PublicKey`].
pub fn soft_seal(
    mk: &MasterKey,
    source: UnitId,
    importer: &ImporterKey,
) -> Result<MkEnvelope, ProtoError> {
    let importer_key = importer.key()?;
    let target = importer.unit_id;
    let (eph_point, wrapped) = seal_value(
        mk.expose_secret(),
        &importer_key,
        Box::new(|e, i| Ok(kdf_context(&source, &target, e, i))),
    )?;
    Ok(MkEnvelope {
        source_unit_id: source,
        target_unit_id: target,
        importer_key_id: importer.key_id,
        ephemeral_public_key: OctetString::new(eph_point.to_vec())?,
        wrapped_key: OctetString::new(wrapped)?,
        vp: vp::of(mk),
    })
}

/// The software reference of the import side: recomputes the KEK with the importer's
/// secret, unwraps, and checks the VP.
///
/// # Errors
/// [`ProtoError::Transport`] if the envelope is not for this importer, does not unwrap,
/// or its VP does not match.
pub fn soft_open(
    envelope: &MkEnvelope,
    importer_secret: &p256::SecretKey,
) -> Result<MasterKey, ProtoError> {
    let value = open_value(
        importer_secret,
        envelope.ephemeral_public_key.as_bytes(),
        envelope.wrapped_key.as_bytes(),
        &envelope.vp,
        Box::new(|e, i| {
            if Digest32::sha256(i) != envelope.importer_key_id {
                return Err(TransportError::OtherImporter.into());
            }
            Ok(kdf_context(
                &envelope.source_unit_id,
                &envelope.target_unit_id,
                e,
                i,
            ))
        }),
    )?;
    MasterKey::from_slice(value.as_slice())
}
