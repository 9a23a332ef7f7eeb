//! The fleet CA: its key kept encrypted, the join request a new server sends, and the
//! certificates the CA holder issues for it.
//!
//! The CA key (`ca.key.pem`) is a P-256 key in the format of signature key files
//! (encrypted PKCS#8, PBES2 with scrypt and AES-256-CBC; see `tke-pkcs8`). Only
//! `tke-unitd init` and `tke-unitd ca-sign` open it, with a passphrase; `serve` never reads
//! it. With the CA key and an administrator quorum, a "unit" that is not one could be
//! certified and receive the master key: the key is as sensitive as the master key.
//!
//! A join request (`-----BEGIN TKE UNITD JOIN REQUEST-----`, written by `tke-unitd join
//! --request`) is the DER of
//!
//! ```text
//! JoinRequest ::= SEQUENCE {
//!   version   INTEGER (1),
//!   tlsKey    OCTET STRING,              -- the TLS key: a P-256 point, SEC1 uncompressed
//!   tlsNames  SEQUENCE OF UTF8String,    -- the names the TLS certificate is to carry
//!   units     SEQUENCE OF UnitRequest }
//! UnitRequest ::= SEQUENCE {
//!   instance  UTF8String,                -- the service instance id (UUID)
//!   unit      UTF8String,                -- the unit id (UUID)
//!   type      UTF8String,                -- operational | recovery | failover
//!   deviceKey OCTET STRING }             -- the device key: a P-256 point, SEC1 uncompressed
//! ```
//!
//! The certificates `ca-sign` writes for it are PEM `CERTIFICATE` blocks: the TLS
//! certificate first, then one device certificate per unit, in the request's order. The
//! request carries no proof that its keys are held by the server that sent it: the CA
//! holder signs only a request that came over a path they trust (both commands print its
//! SHA-256 to compare).

use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
};

use der::{asn1::OctetString, Decode as _, Encode as _};
use p256::{
    ecdsa::{signature::Signer as _, DerSignature, Signature, SigningKey},
    PublicKey, SecretKey,
};
use sha2::{Digest as _, Sha256};
use tke_fs::atomic;
use tke_pkcs8::Password;
use tke_proto::{CaCertificate, DeviceCertificate, InstanceId, UnitDescription, UnitId, UnitType};

use crate::{config, error::io_err, tlscert, ServerError};

/// The fleet CA certificate in a server or CA directory.
pub const CA_FILE: &str = "ca.pem";
/// The fleet CA key (encrypted) in the directory where `init` made the CA.
pub const CA_KEY_FILE: &str = "ca.key.pem";
/// The PEM label of a join request.
pub const REQUEST_PEM_LABEL: &str = "TKE UNITD JOIN REQUEST";

/// Reads a passphrase from a file: the first line, without its line ending. The file must
/// not be readable or writable by other users (mode 0600 or stricter).
///
/// # Errors
/// [`ServerError::PassphraseFile`] when the file is open to others or empty;
/// [`ServerError::Io`].
pub fn read_passphrase_file(path: &Path) -> Result<Password, ServerError> {
    let mut file = fs::File::open(path).map_err(io_err("read", path))?;
    let meta = file.metadata().map_err(io_err("read", path))?;
    check_private_mode(path, &meta)?;
    let mut text = zeroize::Zeroizing::new(String::new());
    file.read_to_string(&mut text)
        .map_err(io_err("read", path))?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err(ServerError::PassphraseFile {
            path: path.to_path_buf(),
            what: "is empty: the passphrase is its first line",
        });
    }
    Ok(Password::new(line))
}

#[cfg(unix)]
fn check_private_mode(path: &Path, meta: &fs::Metadata) -> Result<(), ServerError> {
    use std::os::unix::fs::PermissionsExt as _;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(ServerError::PassphraseFile {
            path: path.to_path_buf(),
            what: "can be read or written by other users: it must have mode 0600",
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_mode(_: &Path, _: &fs::Metadata) -> Result<(), ServerError> {
    Ok(())
}

/// A signing function for `tke-proto`'s certificate builders, with the CA key.
pub(crate) fn signer(key: &SigningKey) -> Box<tke_proto::cert::SignFn<'static>> {
    let key = key.clone();
    Box::new(
        move |m: &[u8]| -> Result<DerSignature, tke_proto::BoxError> {
            let s: Signature = key.try_sign(m)?;
            Ok(s.to_der())
        },
    )
}

/// Makes a new fleet CA named `name`: writes `dir/ca.key.pem`, encrypted with `passphrase`.
/// The caller writes the certificate.
///
/// # Errors
/// [`ServerError::Certificate`], [`ServerError::BadFile`], [`ServerError::Io`].
pub(crate) fn create(
    dir: &Path,
    name: &str,
    passphrase: &Password,
) -> Result<(CaCertificate, SigningKey), ServerError> {
    let secret = SecretKey::random(&mut rand_core::OsRng);
    let key = SigningKey::from(&secret);
    let ca = CaCertificate::build(name, &secret.public_key(), signer(&key)).map_err(|source| {
        ServerError::Certificate {
            path: dir.join(CA_FILE),
            source,
        }
    })?;
    let key_path = dir.join(CA_KEY_FILE);
    let pem = tke_pkcs8::encrypt(&secret, passphrase).map_err(|_| ServerError::BadFile {
        path: key_path.clone(),
        what: "cannot encrypt the fleet CA key",
    })?;
    atomic::create_private(&key_path, pem.as_bytes()).map_err(io_err("write", &key_path))?;
    Ok((ca, key))
}

/// Reads a fleet CA certificate (`ca.pem`).
///
/// # Errors
/// [`ServerError::Io`], [`ServerError::Certificate`].
pub fn read_certificate(path: &Path) -> Result<CaCertificate, ServerError> {
    let pem = fs::read_to_string(path).map_err(io_err("read", path))?;
    CaCertificate::from_pem(&pem).map_err(|source| ServerError::Certificate {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads the fleet CA of `dir` (`ca.pem` and the encrypted `ca.key.pem`), checking that
/// the key belongs to the certificate.
///
/// # Errors
/// [`ServerError::CaKey`] when the key cannot be decrypted (a wrong passphrase among
/// others); [`ServerError::BadFile`] when it is not the certificate's key;
/// [`ServerError::Io`], [`ServerError::Certificate`].
pub fn load(dir: &Path, passphrase: &Password) -> Result<(CaCertificate, SigningKey), ServerError> {
    let ca = read_certificate(&dir.join(CA_FILE))?;
    let key_path = dir.join(CA_KEY_FILE);
    let secret =
        tke_pkcs8::decrypt_file(&key_path, passphrase).map_err(|source| ServerError::CaKey {
            path: key_path.clone(),
            source: Box::new(source),
        })?;
    let key = SigningKey::from(&secret);
    if *key.verifying_key() != ca.verifying_key() {
        return Err(ServerError::BadFile {
            path: key_path,
            what: "this key does not belong to the CA certificate beside it",
        });
    }
    Ok((ca, key))
}

#[derive(der::Sequence)]
struct RequestDer {
    version: u8,
    tls_key: OctetString,
    tls_names: Vec<String>,
    units: Vec<UnitRequestDer>,
}

#[derive(der::Sequence)]
struct UnitRequestDer {
    instance: String,
    unit: String,
    unit_type: String,
    device_key: OctetString,
}

/// One unit of a join request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitRequest {
    /// Its service instance.
    pub instance: String,
    /// Its id.
    pub id: UnitId,
    /// Its type.
    pub unit_type: UnitType,
    /// Its device key, to be certified.
    pub device_key: PublicKey,
}

/// What a joining server asks the CA holder to certify (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    /// The server's TLS key.
    pub tls_key: PublicKey,
    /// The names its TLS certificate is to carry.
    pub tls_names: Vec<String>,
    /// Its units.
    pub units: Vec<UnitRequest>,
}

fn point(key: &PublicKey) -> Result<OctetString, der::Error> {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    OctetString::new(key.to_encoded_point(false).as_bytes())
}

impl JoinRequest {
    /// The PEM text of the request.
    ///
    /// # Errors
    /// [`der::Error`] (not expected).
    pub fn to_pem(&self) -> Result<String, der::Error> {
        let units = self
            .units
            .iter()
            .map(|u| {
                Ok(UnitRequestDer {
                    instance: u.instance.clone(),
                    unit: u.id.uuid(),
                    unit_type: config::type_name(u.unit_type).to_owned(),
                    device_key: point(&u.device_key)?,
                })
            })
            .collect::<Result<Vec<_>, der::Error>>()?;
        let der = RequestDer {
            version: 1,
            tls_key: point(&self.tls_key)?,
            tls_names: self.tls_names.clone(),
            units,
        }
        .to_der()?;
        der::pem::encode_string(REQUEST_PEM_LABEL, der::pem::LineEnding::LF, &der)
            .map_err(der::Error::from)
    }

    /// Reads a request file, strictly.
    ///
    /// # Errors
    /// [`ServerError::BadFile`] naming what is wrong; [`ServerError::Io`].
    pub fn read(path: &Path) -> Result<Self, ServerError> {
        let bytes = fs::read(path).map_err(io_err("read", path))?;
        let bad = |what| ServerError::BadFile {
            path: path.to_path_buf(),
            what,
        };
        let (label, der) = der::pem::decode_vec(&bytes)
            .map_err(|_| bad("not a PEM join request (tke-unitd join --request writes one)"))?;
        if label != REQUEST_PEM_LABEL {
            return Err(bad("the PEM block is not a TKE UNITD JOIN REQUEST"));
        }
        let r = RequestDer::from_der(&der).map_err(|_| bad("its DER is not a join request"))?;
        if r.version != 1 {
            return Err(bad("its version is not 1"));
        }
        let key = |o: &OctetString| {
            PublicKey::from_sec1_bytes(o.as_bytes()).map_err(|_| bad("a key is not a P-256 point"))
        };
        let mut units = Vec::new();
        for u in &r.units {
            if !config::is_uuid(&u.instance) {
                return Err(bad("an instance id is not a lower-case UUID"));
            }
            let id = UnitId::from_uuid(&u.unit)
                .ok()
                .filter(|_| config::is_uuid(&u.unit))
                .ok_or_else(|| bad("a unit id is not a lower-case UUID"))?;
            if units.iter().any(|x: &UnitRequest| x.id == id) {
                return Err(bad("a unit is listed twice"));
            }
            units.push(UnitRequest {
                instance: u.instance.clone(),
                id,
                unit_type: config::parse_type(&u.unit_type)
                    .ok_or_else(|| bad("a unit type is unknown"))?,
                device_key: key(&u.device_key)?,
            });
        }
        if units.is_empty() {
            return Err(bad("it asks for no crypto unit"));
        }
        Ok(Self {
            tls_key: key(&r.tls_key)?,
            tls_names: r.tls_names,
            units,
        })
    }
}

/// The SHA-256 of a file, in hex: what operators compare to know that the request the CA
/// holder signs is the one the joining server wrote.
///
/// # Errors
/// [`ServerError::Io`].
pub fn file_sha256(path: &Path) -> Result<String, ServerError> {
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

/// What [`sign_request`] certified.
#[derive(Clone, Debug)]
pub struct SignReport {
    /// The request signed.
    pub request: JoinRequest,
    /// The request file's SHA-256 (hex).
    pub request_sha256: String,
    /// The certificates file written.
    pub out: PathBuf,
}

/// `tke-unitd ca-sign`: issues, with the fleet CA of `ca_dir`, the TLS certificate and
/// the device certificates a join request asks for, and writes them to `out` (created;
/// never overwritten).
///
/// # Errors
/// As [`load`] and [`JoinRequest::read`]; [`ServerError::Layout`] for a TLS name that is
/// not one; [`ServerError::Certificate`]; [`ServerError::Io`] (an existing `out` among
/// them). Nothing is written then.
pub fn sign_request(
    ca_dir: &Path,
    passphrase: &Password,
    request: &Path,
    out: &Path,
) -> Result<SignReport, ServerError> {
    let req = JoinRequest::read(request)?;
    let request_sha256 = file_sha256(request)?;
    let (ca, key) = load(ca_dir, passphrase)?;
    let tls = tlscert::issue(&ca, &key, &req.tls_key, &req.tls_names).map_err(|e| match e {
        tlscert::TlsCertError::BadName { .. } | tlscert::TlsCertError::NoName => {
            ServerError::BadFile {
                path: request.to_path_buf(),
                what: "a TLS name is neither an IP address nor a DNS name",
            }
        }
        _ => ServerError::BadFile {
            path: out.to_path_buf(),
            what: "cannot encode the TLS certificate",
        },
    })?;
    let mut text = pem_cert(&tls);
    for u in &req.units {
        let description = UnitDescription {
            unit_type: u.unit_type,
            instance_id: InstanceId::from_uuid(&u.instance).map_err(|_| ServerError::BadFile {
                path: request.to_path_buf(),
                what: "an instance id is not a lower-case UUID",
            })?,
        };
        let cert = DeviceCertificate::issue(&ca, &u.id, &description, &u.device_key, signer(&key))
            .map_err(|source| ServerError::Certificate {
                path: out.to_path_buf(),
                source,
            })?;
        text.push_str(&pem_cert(cert.der()));
    }
    atomic::create_private(out, text.as_bytes()).map_err(io_err("write", out))?;
    Ok(SignReport {
        request: req,
        request_sha256,
        out: out.to_path_buf(),
    })
}

/// A certificate's PEM text.
pub(crate) fn pem_cert(der_bytes: &[u8]) -> String {
    // A CERTIFICATE label and base64 lines: `der` does the encoding.
    der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der_bytes).unwrap_or_default()
}

/// The DER of each PEM `CERTIFICATE` block of `text`, in order.
pub(crate) fn pem_certs(text: &str) -> Option<Vec<Vec<u8>>> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let tail = &rest[start..];
        let end = tail.find(END)? + END.len();
        let (label, der) = der::pem::decode_vec(&tail.as_bytes()[..end]).ok()?;
        if label != "CERTIFICATE" {
            return None;
        }
        out.push(der);
        rest = &tail[end..];
    }
    Some(out)
}

/// Checks that `der_bytes` is a certificate for `key` that the fleet CA signed.
pub(crate) fn check_tls_certificate(der_bytes: &[u8], ca: &CaCertificate, key: &PublicKey) -> bool {
    use p256::{ecdsa::signature::Verifier as _, elliptic_curve::sec1::ToEncodedPoint as _};
    let Ok(cert) = x509_cert::Certificate::from_der(der_bytes) else {
        return false;
    };
    let Ok(tbs) = cert.tbs_certificate.to_der() else {
        return false;
    };
    let Ok(sig) = Signature::from_der(cert.signature.raw_bytes()) else {
        return false;
    };
    cert.tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        == key.to_encoded_point(false).as_bytes()
        && ca.verifying_key().verify(&tbs, &sig).is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key() -> PublicKey {
        SecretKey::random(&mut rand_core::OsRng).public_key()
    }

    #[test]
    fn a_join_request_round_trips_and_is_read_strictly() {
        let d = tempfile::tempdir().unwrap();
        let req = JoinRequest {
            tls_key: key(),
            tls_names: vec!["127.0.0.1".into(), "unitd.example".into()],
            units: vec![UnitRequest {
                instance: UnitId::random().uuid(),
                id: UnitId::random(),
                unit_type: UnitType::Recovery,
                device_key: key(),
            }],
        };
        let path = d.path().join("b.req");
        let pem = req.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN TKE UNITD JOIN REQUEST-----\n"));
        fs::write(&path, &pem).unwrap();
        assert_eq!(JoinRequest::read(&path).unwrap(), req);

        for (text, what) in [
            (
                pem.replace("JOIN REQUEST", "CERTIFICATE"),
                "not a TKE UNITD JOIN REQUEST",
            ),
            (pem[..pem.len() / 2].to_owned(), "not a PEM join request"),
        ] {
            fs::write(&path, text).unwrap();
            let err = JoinRequest::read(&path).unwrap_err().to_string();
            assert!(err.contains(what) && err.contains("b.req"), "{err}");
        }
        let empty = JoinRequest {
            units: Vec::new(),
            ..req
        };
        fs::write(&path, empty.to_pem().unwrap()).unwrap();
        let err = JoinRequest::read(&path).unwrap_err().to_string();
        assert!(err.contains("no crypto unit"), "{err}");
    }

    #[test]
    fn a_passphrase_file_must_be_private_and_not_empty() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("pass");
        fs::write(&path, "secret phrase\nignored\n").unwrap();
        for mode in [0o644, 0o604, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = read_passphrase_file(&path).unwrap_err();
            assert!(
                matches!(err, ServerError::PassphraseFile { .. }),
                "{mode:o}: {err}"
            );
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_passphrase_file(&path).unwrap().expose_secret(),
            "secret phrase"
        );
        fs::write(&path, "\n").unwrap();
        let err = read_passphrase_file(&path).unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
    }

    #[test]
    fn the_ca_key_opens_with_its_passphrase_only() {
        let d = tempfile::tempdir().unwrap();
        let (ca, _) = create(d.path(), "unitd-test", &Password::new("right")).unwrap();
        fs::write(d.path().join(CA_FILE), ca.to_pem().unwrap()).unwrap();
        let (again, key) = load(d.path(), &Password::new("right")).unwrap();
        assert_eq!(again.der(), ca.der());
        assert_eq!(*key.verifying_key(), ca.verifying_key());
        let err = load(d.path(), &Password::new("wrong")).unwrap_err();
        assert!(
            matches!(&err, ServerError::CaKey { source, .. }
                if matches!(**source, tke_pkcs8::FileError::WrongPassword { .. })),
            "{err}"
        );
    }
}
