//! The TLS server certificate: issued by the fleet CA, so that a client that pins the CA
//! (the same file it uses to check device certificates) authenticates the server too.
//!
//! X.509 v3, ECDSA P-256 / SHA-256; subject `OU = TKE crypto unit server, CN = <first
//! name>`; issuer = the CA certificate's subject byte for byte; subjectAltName with every
//! name (DNS names and IP addresses) the server answers to; extendedKeyUsage serverAuth;
//! keyUsage digitalSignature; basicConstraints CA:FALSE; subject and authority key
//! identifiers. Valid from one hour before it is made for ten years.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime},
};

use der::{
    asn1::{BitString, Ia5String, OctetString, SetOfVec},
    oid::ObjectIdentifier,
    Any, Decode, Encode, Tag,
};
use p256::{
    ecdsa::{signature::Signer as _, DerSignature, SigningKey},
    pkcs8::EncodePublicKey,
    PublicKey,
};
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use tke_proto::CaCertificate;
use x509_cert::{
    attr::AttributeTypeAndValue,
    ext::{
        pkix::{
            name::GeneralName, AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage,
            KeyUsage, KeyUsages, SubjectAltName, SubjectKeyIdentifier,
        },
        Extension,
    },
    name::{RdnSequence, RelativeDistinguishedName},
    serial_number::SerialNumber,
    time::{Time, Validity},
    Certificate, TbsCertificate, Version,
};

const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const OID_OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
const OID_SKI: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const OID_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const OID_SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const OID_AKI: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
const OID_EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const OID_KP_SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");

/// The OU of TLS server certificates.
pub const SERVER_OU: &str = "TKE crypto unit server";

/// Why a TLS certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsCertError {
    /// A name is neither an IP address nor a DNS name.
    #[error("{name:?} is neither an IP address nor a DNS name (letters, digits, '-' and '.')")]
    BadName {
        /// The name given.
        name: String,
    },
    /// No name was given.
    #[error("the TLS certificate needs at least one name")]
    NoName,
    /// Encoding failed.
    #[error("cannot encode the TLS certificate")]
    Der(#[from] der::Error),
    /// The CA certificate could not be read.
    #[error("cannot read the fleet CA certificate")]
    Ca(#[source] der::Error),
}

fn general_name(name: &str) -> Result<GeneralName, TlsCertError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(GeneralName::from(ip));
    }
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !ok {
        return Err(TlsCertError::BadName {
            name: name.to_owned(),
        });
    }
    Ok(GeneralName::DnsName(Ia5String::new(
        &name.to_ascii_lowercase(),
    )?))
}

fn ext(oid: ObjectIdentifier, critical: bool, der: Vec<u8>) -> Result<Extension, TlsCertError> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(der)?,
    })
}

/// Checks the names a TLS certificate is to carry, as [`issue`] does: for a server that
/// asks the CA holder for its certificate, so that a bad name fails there and then.
///
/// # Errors
/// [`TlsCertError::NoName`], [`TlsCertError::BadName`].
pub fn check_names(names: &[String]) -> Result<(), TlsCertError> {
    if names.is_empty() {
        return Err(TlsCertError::NoName);
    }
    names.iter().try_for_each(|n| general_name(n).map(drop))
}

/// Issues a TLS server certificate for `server_key`, naming `names` (the first one is
/// also the CN), signed by the fleet CA key. Returns its DER.
///
/// # Errors
/// [`TlsCertError`] for a bad name or an encoding failure.
pub fn issue(
    ca: &CaCertificate,
    ca_key: &SigningKey,
    server_key: &PublicKey,
    names: &[String],
) -> Result<Vec<u8>, TlsCertError> {
    let first = names.first().ok_or(TlsCertError::NoName)?;
    let sans = names
        .iter()
        .map(|n| general_name(n))
        .collect::<Result<Vec<_>, _>>()?;
    let ca_cert = Certificate::from_der(ca.der()).map_err(TlsCertError::Ca)?;
    let issuer = ca_cert.tbs_certificate.subject.clone();
    let ca_point = ca_cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec();
    let issuer_key_id = ca_cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == OID_SKI)
        .and_then(|e| SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()).ok())
        .map(|s| s.0.as_bytes().to_vec())
        .unwrap_or_else(|| Sha256::digest(&ca_point).to_vec());

    let spki_der = server_key
        .to_public_key_der()
        .map_err(|_| TlsCertError::Der(der::ErrorKind::Failed.into()))?;
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes())?;
    let point = spki.subject_public_key.raw_bytes().to_vec();

    let atv = |oid, v: &str| -> Result<RelativeDistinguishedName, TlsCertError> {
        let mut set = SetOfVec::new();
        set.insert(AttributeTypeAndValue {
            oid,
            value: Any::new(Tag::Utf8String, v.as_bytes())?,
        })?;
        Ok(RelativeDistinguishedName(set))
    };
    let subject = RdnSequence(vec![atv(OID_OU, SERVER_OU)?, atv(OID_CN, first)?]);

    let mut serial = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut serial);
    serial[0] = (serial[0] & 0x7f) | 0x01;
    let now = SystemTime::now();
    let validity = Validity {
        not_before: Time::try_from(now - Duration::from_secs(3600))?,
        not_after: Time::try_from(now + Duration::from_secs(10 * 365 * 24 * 3600))?,
    };
    let extensions = vec![
        ext(
            OID_BASIC_CONSTRAINTS,
            true,
            BasicConstraints {
                ca: false,
                path_len_constraint: None,
            }
            .to_der()?,
        )?,
        ext(
            OID_KEY_USAGE,
            true,
            KeyUsage(KeyUsages::DigitalSignature.into()).to_der()?,
        )?,
        ext(
            OID_EKU,
            false,
            ExtendedKeyUsage(vec![OID_KP_SERVER_AUTH]).to_der()?,
        )?,
        ext(OID_SAN, false, SubjectAltName(sans).to_der()?)?,
        ext(
            OID_SKI,
            false,
            SubjectKeyIdentifier(OctetString::new(Sha256::digest(&point).to_vec())?).to_der()?,
        )?,
        ext(
            OID_AKI,
            false,
            AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(issuer_key_id)?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            }
            .to_der()?,
        )?,
    ];
    let alg = AlgorithmIdentifierOwned {
        oid: OID_ECDSA_SHA256,
        parameters: None,
    };
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial)?,
        signature: alg.clone(),
        issuer,
        validity,
        subject,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let sig: p256::ecdsa::Signature = ca_key.sign(&tbs.to_der()?);
    let sig: DerSignature = sig.to_der();
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(sig.as_bytes())?,
    };
    Ok(cert.to_der()?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(general_name("127.0.0.1").is_ok());
        assert!(general_name("::1").is_ok());
        assert!(general_name("unitd-1.example").is_ok());
        for bad in ["", "a b", "-x", "x..y", "ünï"] {
            assert!(general_name(bad).is_err(), "{bad:?}");
        }
    }
}
