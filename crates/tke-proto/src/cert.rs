//! X.509 certificates: administrator certificates (self-signed), the fleet CA and the
//! device certificates it issues to crypto units.
//!
//! Certificates are built field by field and signed through a closure, so that any
//! signer — a key file, a PKCS#11 token, a YubiKey — can make one. All use ECDSA P-256
//! with SHA-256. `openssl x509 -noout -text` reads every one of them.

use der::{
    asn1::{BitString, GeneralizedTime, OctetString, SetOfVec, UtcTime, Utf8StringRef},
    oid::ObjectIdentifier,
    Any, DateTime, Decode, Encode, Sequence, Tag,
};
use p256::{
    ecdsa::{DerSignature, VerifyingKey},
    pkcs8::{DecodePublicKey, EncodePublicKey},
    PublicKey,
};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::{
    attr::AttributeTypeAndValue,
    ext::{
        pkix::{
            AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
        },
        Extension,
    },
    name::{Name, RdnSequence, RelativeDistinguishedName},
    serial_number::SerialNumber,
    time::{Time, Validity},
    Certificate, TbsCertificate, Version,
};

use crate::{AdminName, CertificateError, InstanceId, ProtoError, Ski, UnitId, UnitType};

/// A signing closure: signs the given bytes (ECDSA P-256 over SHA-256) and returns the
/// DER signature, or the signer's own error.
pub type SignFn<'a> = dyn FnOnce(&[u8]) -> Result<DerSignature, crate::BoxError> + 'a;

const OID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const OID_OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_SKI: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const OID_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const OID_AKI: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");

/// The OID of the [`UnitDescription`] extension of device certificates. It lies in a
/// private-enterprise arc that TKE has not registered with IANA; docs/protocol.md §3.2
/// says so, and a registered arc would come with a new protocol version.
pub const OID_UNIT_DESCRIPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.61178.1.1");

/// The organizational unit of administrator certificates, as the vendor's.
pub const ADMIN_OU: &str = "TKE Administration";
/// The organizational unit of crypto-unit device certificates.
pub const DEVICE_OU: &str = "TKE crypto unit";
/// The organizational unit of fleet CA certificates.
pub const CA_OU: &str = "TKE fleet CA";

fn ecdsa_sha256() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: OID_ECDSA_SHA256,
        parameters: None,
    }
}

fn name(cn: &str, ou: &str) -> Result<Name, ProtoError> {
    let atv = |oid, v: &str| -> Result<RelativeDistinguishedName, ProtoError> {
        let value = Any::new(Tag::Utf8String, v.as_bytes())?;
        let mut set = SetOfVec::new();
        set.insert(AttributeTypeAndValue { oid, value })?;
        Ok(RelativeDistinguishedName(set))
    };
    Ok(RdnSequence(vec![atv(OID_OU, ou)?, atv(OID_CN, cn)?]))
}

/// Reads the CN and OU of a name we wrote (UTF8String values, one of each).
fn read_name(n: &Name) -> Result<(String, String), ProtoError> {
    let mut cn = None;
    let mut ou = None;
    for rdn in n.0.iter() {
        for atv in rdn.0.iter() {
            let v = Utf8StringRef::try_from(&atv.value)
                .map(|s| s.as_str().to_owned())
                .or_else(|_| {
                    der::asn1::PrintableStringRef::try_from(&atv.value)
                        .map(|s| s.as_str().to_owned())
                })
                .map_err(|_| ProtoError::from(CertificateError::NameNotString))?;
            if atv.oid == OID_CN {
                cn = Some(v);
            } else if atv.oid == OID_OU {
                ou = Some(v);
            }
        }
    }
    match (cn, ou) {
        (Some(cn), Some(ou)) => Ok((cn, ou)),
        _ => Err(CertificateError::MissingCnOrOu.into()),
    }
}

fn validity() -> Result<Validity, ProtoError> {
    // The vendor's fixed validity: administrator keys do not expire on their own.
    Ok(Validity {
        not_before: Time::UtcTime(UtcTime::from_date_time(DateTime::new(
            2000, 1, 1, 0, 0, 0,
        )?)?),
        not_after: Time::GeneralTime(GeneralizedTime::from_date_time(DateTime::new(
            2100, 12, 31, 23, 59, 59,
        )?)),
    })
}

fn spki(key: &PublicKey) -> Result<SubjectPublicKeyInfoOwned, ProtoError> {
    let doc = key
        .to_public_key_der()
        .map_err(|_| ProtoError::from(CertificateError::PublicKeyEncoding))?;
    Ok(SubjectPublicKeyInfoOwned::from_der(doc.as_bytes())?)
}

fn ski_ext(ski: &Ski) -> Result<Extension, ProtoError> {
    Ok(Extension {
        extn_id: OID_SKI,
        critical: false,
        extn_value: OctetString::new(
            SubjectKeyIdentifier(OctetString::new(ski.0.to_vec())?).to_der()?,
        )?,
    })
}

/// The authorityKeyIdentifier of a certificate issued by the key whose key identifier
/// is `issuer_key_id` (RFC 5280 §4.2.1.1: required in every certificate that is not
/// self-signed; verifiers match it against the issuer's subjectKeyIdentifier).
fn aki_ext(issuer_key_id: &[u8]) -> Result<Extension, ProtoError> {
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(OctetString::new(issuer_key_id.to_vec())?),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    Ok(Extension {
        extn_id: OID_AKI,
        critical: false,
        extn_value: OctetString::new(aki.to_der()?)?,
    })
}

fn random_serial() -> Result<SerialNumber, ProtoError> {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    b[0] = (b[0] & 0x7f) | 0x01; // positive, no leading zero byte needed
    Ok(SerialNumber::new(&b)?)
}

struct Template<'a> {
    subject: Name,
    issuer: Name,
    key: &'a PublicKey,
    extensions: Vec<Extension>,
}

fn build(t: Template<'_>, sign: Box<SignFn<'_>>) -> Result<Vec<u8>, ProtoError> {
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: random_serial()?,
        signature: ecdsa_sha256(),
        issuer: t.issuer,
        validity: validity()?,
        subject: t.subject,
        subject_public_key_info: spki(t.key)?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(t.extensions),
    };
    let tbs_der = tbs.to_der()?;
    let sig = sign(&tbs_der).map_err(|source| ProtoError::Signing { source })?;
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: ecdsa_sha256(),
        signature: BitString::from_bytes(sig.as_bytes())?,
    };
    Ok(cert.to_der()?)
}

/// Parses a certificate strictly and checks its signature with `issuer_key`
/// (its own key when `None`). Returns the certificate and its public key.
fn parse_and_verify(
    der_bytes: &[u8],
    issuer_key: Option<&VerifyingKey>,
) -> Result<(Certificate, PublicKey), ProtoError> {
    let cert = Certificate::from_der(der_bytes)?;
    let tbs = &cert.tbs_certificate;
    if tbs.version != Version::V3 {
        return Err(CertificateError::NotV3.into());
    }
    if cert.signature_algorithm.oid != OID_ECDSA_SHA256 || tbs.signature.oid != OID_ECDSA_SHA256 {
        return Err(CertificateError::NotEcdsaSha256.into());
    }
    let key = PublicKey::from_public_key_der(&tbs.subject_public_key_info.to_der()?)
        .map_err(|_| ProtoError::from(CertificateError::NotP256Key))?;
    let own = VerifyingKey::from(&key);
    let verifier = issuer_key.unwrap_or(&own);
    let sig_bytes = cert
        .signature
        .as_bytes()
        .ok_or(ProtoError::from(CertificateError::SignatureUnusedBits))?;
    let sig = DerSignature::from_bytes(sig_bytes)
        .map_err(|_| ProtoError::from(CertificateError::SignatureEncoding))?;
    crate::ecdsa_p256::verify(verifier, &tbs.to_der()?, &sig)
        .map_err(|_| ProtoError::from(CertificateError::BadSignature))?;
    Ok((cert, key))
}

/// PEM `CERTIFICATE` block of a DER certificate.
fn cert_pem(der_bytes: &[u8]) -> Result<String, ProtoError> {
    Ok(der::pem::encode_string(
        "CERTIFICATE",
        der::pem::LineEnding::LF,
        der_bytes,
    )?)
}

/// The DER inside a PEM `CERTIFICATE` block.
fn cert_der(pem: &str) -> Result<Vec<u8>, ProtoError> {
    let (label, der) = der::pem::decode_vec(pem.as_bytes())?;
    if label != "CERTIFICATE" {
        return Err(CertificateError::NotPemCertificate.into());
    }
    Ok(der)
}

fn extension(cert: &Certificate, oid: ObjectIdentifier) -> Option<&Extension> {
    cert.tbs_certificate
        .extensions
        .as_ref()
        .and_then(|exts| exts.iter().find(|e| e.extn_id == oid))
}

fn check_ski(cert: &Certificate, key: &PublicKey) -> Result<Ski, ProtoError> {
    let ski = Ski::of_public_key(key);
    let ext = extension(cert, OID_SKI).ok_or(ProtoError::from(
        CertificateError::MissingSubjectKeyIdentifier,
    ))?;
    let stored = SubjectKeyIdentifier::from_der(ext.extn_value.as_bytes())?;
    if stored.0.as_bytes() != ski.0 {
        return Err(CertificateError::SubjectKeyIdentifierMismatch.into());
    }
    Ok(ski)
}

/// An administrator certificate: X.509 v3, self-signed, subject = issuer =
/// `OU=TKE Administration, CN=<name>`, SubjectKeyIdentifier = the administrator's [`Ski`].
#[derive(Clone, PartialEq, Eq)]
pub struct AdminCertificate {
    der: Vec<u8>,
    name: AdminName,
    ski: Ski,
    public_key: PublicKey,
}

impl core::fmt::Debug for AdminCertificate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AdminCertificate")
            .field("name", &self.name)
            .field("ski", &self.ski)
            .finish_non_exhaustive()
    }
}

impl AdminCertificate {
    /// Builds and self-signs an administrator certificate for `public_key`.
    ///
    /// # Errors
    /// [`ProtoError::Signing`] when `sign` fails, [`ProtoError::Der`] on encoding errors.
    pub fn build(
        name: &AdminName,
        public_key: &PublicKey,
        sign: Box<SignFn<'_>>,
    ) -> Result<Self, ProtoError> {
        let ski = Ski::of_public_key(public_key);
        let n = self::name(name.as_str(), ADMIN_OU)?;
        let der = build(
            Template {
                subject: n.clone(),
                issuer: n,
                key: public_key,
                extensions: vec![ski_ext(&ski)?],
            },
            sign,
        )?;
        Self::from_der(&der)
    }

    /// Parses and checks an administrator certificate: strict DER, v3, P-256 key, a valid
    /// self-signature, issuer = subject, OU `TKE Administration`, a valid name, and an
    /// SKI extension equal to SHA-256 of the key.
    ///
    /// # Errors
    /// [`ProtoError::Certificate`] with the [`CertificateError`] of the check that failed,
    /// or [`ProtoError::Der`].
    pub fn from_der(der_bytes: &[u8]) -> Result<Self, ProtoError> {
        let (cert, key) = parse_and_verify(der_bytes, None)?;
        let tbs = &cert.tbs_certificate;
        if tbs.issuer != tbs.subject {
            return Err(CertificateError::IssuerNotSubject.into());
        }
        let (cn, ou) = read_name(&tbs.subject)?;
        if ou != ADMIN_OU {
            return Err(CertificateError::NotAdministrator.into());
        }
        let name = AdminName::new(&cn)?;
        let ski = check_ski(&cert, &key)?;
        Ok(Self {
            der: der_bytes.to_vec(),
            name,
            ski,
            public_key: key,
        })
    }

    /// Parses a PEM `CERTIFICATE` block.
    ///
    /// # Errors
    /// As [`Self::from_der`], plus [`ProtoError::Der`] for bad PEM.
    pub fn from_pem(pem: &str) -> Result<Self, ProtoError> {
        Self::from_der(&cert_der(pem)?)
    }

    /// PEM encoding.
    ///
    /// # Errors
    /// [`ProtoError::Der`] (not expected for a certificate we parsed).
    pub fn to_pem(&self) -> Result<String, ProtoError> {
        cert_pem(&self.der)
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
    /// The administrator's name.
    pub fn name(&self) -> &AdminName {
        &self.name
    }
    /// The administrator's SKI.
    pub fn ski(&self) -> Ski {
        self.ski
    }
    /// The administrator's public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }
    /// The key to verify the administrator's signatures with.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey::from(&self.public_key)
    }
}

/// The certificate of a fleet's CA: self-signed, `OU=TKE fleet CA, CN=<fleet name>`,
/// basicConstraints CA. It anchors the device certificates of every unit of the fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaCertificate {
    der: Vec<u8>,
    name: String,
    public_key: PublicKey,
}

impl CaCertificate {
    /// Builds a self-signed CA certificate.
    ///
    /// # Errors
    /// [`ProtoError::Signing`] when `sign` fails, [`ProtoError::Der`] on encoding errors.
    pub fn build(
        name: &str,
        public_key: &PublicKey,
        sign: Box<SignFn<'_>>,
    ) -> Result<Self, ProtoError> {
        let n = self::name(name, CA_OU)?;
        let ski = Ski::of_public_key(public_key);
        let der = build(
            Template {
                subject: n.clone(),
                issuer: n,
                key: public_key,
                extensions: vec![
                    Extension {
                        extn_id: OID_BASIC_CONSTRAINTS,
                        critical: true,
                        extn_value: OctetString::new(
                            BasicConstraints {
                                ca: true,
                                path_len_constraint: Some(0),
                            }
                            .to_der()?,
                        )?,
                    },
                    Extension {
                        extn_id: OID_KEY_USAGE,
                        critical: true,
                        extn_value: OctetString::new(
                            KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign).to_der()?,
                        )?,
                    },
                    ski_ext(&ski)?,
                ],
            },
            sign,
        )?;
        Self::from_der(&der)
    }

    /// Parses a CA certificate and checks its self-signature and OU.
    ///
    /// # Errors
    /// [`ProtoError::Certificate`] or [`ProtoError::Der`].
    pub fn from_der(der_bytes: &[u8]) -> Result<Self, ProtoError> {
        let (cert, key) = parse_and_verify(der_bytes, None)?;
        let (cn, ou) = read_name(&cert.tbs_certificate.subject)?;
        if ou != CA_OU || cert.tbs_certificate.issuer != cert.tbs_certificate.subject {
            return Err(CertificateError::NotFleetCa.into());
        }
        Ok(Self {
            der: der_bytes.to_vec(),
            name: cn,
            public_key: key,
        })
    }

    /// Parses a PEM `CERTIFICATE` block.
    ///
    /// # Errors
    /// As [`Self::from_der`].
    pub fn from_pem(pem: &str) -> Result<Self, ProtoError> {
        Self::from_der(&cert_der(pem)?)
    }

    /// PEM encoding.
    ///
    /// # Errors
    /// [`ProtoError::Der`] (not expected).
    pub fn to_pem(&self) -> Result<String, ProtoError> {
        cert_pem(&self.der)
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
    /// The fleet name (the CN).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The CA's verifying key.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey::from(&self.public_key)
    }

    /// The CA's subject name and key identifier as its certificate states them: what a
    /// certificate it issues must carry as issuer and authorityKeyIdentifier. The key
    /// identifier is the subjectKeyIdentifier extension when there is one (ours always
    /// have it: SHA-256 of the point), else SHA-256 of the point.
    fn issuer_fields(&self) -> Result<(Name, Vec<u8>), ProtoError> {
        let cert = Certificate::from_der(&self.der)?;
        let key_id = match extension(&cert, OID_SKI) {
            Some(ext) => SubjectKeyIdentifier::from_der(ext.extn_value.as_bytes())?
                .0
                .as_bytes()
                .to_vec(),
            None => Ski::of_public_key(&self.public_key).0.to_vec(),
        };
        Ok((cert.tbs_certificate.subject, key_id))
    }
}

/// What a device certificate says about its unit besides its id: the unit type and the
/// service instance the unit belongs to. Units check them before they export or import a
/// master key, and clients check them against what a unit reports of itself.
///
/// It is the value of the critical extension [`OID_UNIT_DESCRIPTION`]:
///
/// ```text
/// UnitDescription ::= SEQUENCE {
///     unitType    UnitType,                  -- ENUMERATED operational(0) recovery(1) failover(2)
///     instanceId  OCTET STRING (SIZE (16))   -- the service instance id (a UUID)
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Sequence)]
pub struct UnitDescription {
    /// The unit's type.
    pub unit_type: UnitType,
    /// The service instance the unit belongs to.
    pub instance_id: InstanceId,
}

fn unit_description_ext(d: &UnitDescription) -> Result<Extension, ProtoError> {
    Ok(Extension {
        extn_id: OID_UNIT_DESCRIPTION,
        // Critical: a verifier that does not know what the type and instance mean must not
        // take the certificate as a unit's.
        critical: true,
        extn_value: OctetString::new(d.to_der()?)?,
    })
}

/// Reads the unit description of a device certificate: exactly one, critical, strict DER.
fn read_unit_description(cert: &Certificate) -> Result<UnitDescription, ProtoError> {
    let mut found = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == OID_UNIT_DESCRIPTION);
    let ext = found
        .next()
        .ok_or(ProtoError::from(CertificateError::MissingUnitDescription))?;
    if found.next().is_some() {
        return Err(CertificateError::DuplicateUnitDescription.into());
    }
    if !ext.critical {
        return Err(CertificateError::UnitDescriptionNotCritical.into());
    }
    Ok(UnitDescription::from_der(ext.extn_value.as_bytes())?)
}

/// A crypto unit's device certificate, issued by its fleet CA:
/// `OU=TKE crypto unit, CN=<unit uuid>`, issuer = the CA certificate's subject (byte for
/// byte), SubjectKeyIdentifier = SHA-256 of the device point, AuthorityKeyIdentifier =
/// the CA's key identifier, and the critical [`UnitDescription`] extension (the unit's
/// type and service instance). Its key signs every response of the unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCertificate {
    der: Vec<u8>,
    unit_id: UnitId,
    description: UnitDescription,
    public_key: PublicKey,
}

impl DeviceCertificate {
    /// Issues a device certificate for `unit_id`, described by `description`, and its
    /// device public key, signed by the CA through `sign`.
    ///
    /// # Errors
    /// [`ProtoError::Signing`], [`ProtoError::Der`], or [`ProtoError::Certificate`] if the
    /// result does not verify under `ca`.
    pub fn issue(
        ca: &CaCertificate,
        unit_id: &UnitId,
        description: &UnitDescription,
        device_key: &PublicKey,
        sign: Box<SignFn<'_>>,
    ) -> Result<Self, ProtoError> {
        let ski = Ski::of_public_key(device_key);
        // Name the issuer exactly as the CA certificate names itself (its subject, byte
        // for byte, and its key identifier), so that any X.509 verifier builds the chain
        // even for a CA certificate made by another tool.
        let (issuer, issuer_key_id) = ca.issuer_fields()?;
        let der = build(
            Template {
                subject: self::name(&unit_id.uuid(), DEVICE_OU)?,
                issuer,
                key: device_key,
                extensions: vec![
                    ski_ext(&ski)?,
                    aki_ext(&issuer_key_id)?,
                    unit_description_ext(description)?,
                ],
            },
            sign,
        )?;
        Self::verify(&der, ca)
    }

    /// Parses a device certificate and checks that `ca` issued it and that it carries a
    /// unit description.
    ///
    /// # Errors
    /// [`ProtoError::Certificate`] (including [`CertificateError::NotIssuedByFleetCa`] and
    /// [`CertificateError::MissingUnitDescription`]) or [`ProtoError::Der`].
    pub fn verify(der_bytes: &[u8], ca: &CaCertificate) -> Result<Self, ProtoError> {
        let (cert, key) =
            parse_and_verify(der_bytes, Some(&ca.verifying_key())).map_err(|e| match e {
                ProtoError::Certificate(CertificateError::BadSignature) => {
                    CertificateError::NotIssuedByFleetCa.into()
                }
                other => other,
            })?;
        let (cn, ou) = read_name(&cert.tbs_certificate.subject)?;
        let (ca_subject, _) = ca.issuer_fields()?;
        if ou != DEVICE_OU || cert.tbs_certificate.issuer != ca_subject {
            return Err(CertificateError::NotDeviceOfFleet.into());
        }
        let unit_id = UnitId::from_uuid(&cn)?;
        check_ski(&cert, &key)?;
        let description = read_unit_description(&cert)?;
        Ok(Self {
            der: der_bytes.to_vec(),
            unit_id,
            description,
            public_key: key,
        })
    }

    /// PEM encoding.
    ///
    /// # Errors
    /// [`ProtoError::Der`] (not expected).
    pub fn to_pem(&self) -> Result<String, ProtoError> {
        cert_pem(&self.der)
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
    /// The unit the certificate names.
    pub fn unit_id(&self) -> UnitId {
        self.unit_id
    }
    /// The unit type and service instance the certificate states.
    pub fn description(&self) -> UnitDescription {
        self.description
    }
    /// The unit type the certificate states.
    pub fn unit_type(&self) -> UnitType {
        self.description.unit_type
    }
    /// The service instance the certificate states.
    pub fn instance_id(&self) -> InstanceId {
        self.description.instance_id
    }
    /// The device key.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey::from(&self.public_key)
    }
}
