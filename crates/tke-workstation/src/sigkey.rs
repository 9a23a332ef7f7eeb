//! Signature key files: an encrypted PKCS#8 private key and the administrator certificate,
//! side by side in the workstation directory; or, for a key held on a token (a PKCS#11
//! token or a YubiKey), a reference file naming it and the certificate.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::{Path, PathBuf},
};

use p256::SecretKey;
use tke_pkcs8::{Pkcs8Error, ScryptCost};
use tke_proto::{AdminCertificate, AdminName, Ski};
use zeroize::Zeroizing;

use crate::{
    created::{remove_files, safe_stem, CreationRecord, Listing},
    error::io_err,
    FilesDir, KeyFileError, Password, Result,
};

/// The suffix of a signature key's private key file.
pub const KEY_SUFFIX: &str = ".key.pem";
/// The suffix of a signature key's certificate file.
pub const CERT_SUFFIX: &str = ".crt.pem";
/// The suffix of the reference file of a signature key held on a token (no secret in it).
pub const REF_SUFFIX: &str = ".ref.toml";
/// The suffix of the file that records when a signature key was added (decimal Unix time
/// in nanoseconds): KEYNUMs follow it, so adding a key never renumbers the others.
pub const CREATED_SUFFIX: &str = ".created";

/// The creation records of signature keys: `<stem>.created` beside the certificate.
const RECORDS: CreationRecord = CreationRecord {
    file_suffix: CERT_SUFFIX,
    record_suffix: CREATED_SUFFIX,
};
/// The PEM label of the private key file.
pub const KEY_PEM_LABEL: &str = tke_pkcs8::PEM_LABEL;

/// Where a signature key lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SigKeyKind {
    /// An encrypted key file and its certificate file in the workstation directory.
    File,
    /// A key on a PKCS#11 token: `<stem>.ref.toml` (`kind = "pkcs11"`) holds its PKCS#11
    /// URI (no secret), beside the certificate file; [`SigKeyEntry::token_uri`] is that URI.
    Pkcs11,
    /// A key in a YubiKey PIV slot: `<stem>.ref.toml` (`kind = "yubikey"`) says which,
    /// beside the certificate file.
    YubiKey(YubiKeyRef),
}

impl SigKeyKind {
    /// Lower-case label for tables and JSON (`file`, `pkcs11`, `yubikey`); also the `kind`
    /// of a reference file.
    pub fn label(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Pkcs11 => "pkcs11",
            Self::YubiKey(_) => "yubikey",
        }
    }
}

/// Which YubiKey, and which PIV slot of it, holds a signature key. No secret: the PIN is
/// asked for when the key signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct YubiKeyRef {
    /// The YubiKey's serial number.
    pub serial: u32,
    /// The PIV slot: `0x9a`, `0x9c`, `0x9d`, `0x9e`, or a retired slot `0x82`..=`0x95`.
    pub slot: u8,
}

impl YubiKeyRef {
    /// Whether `slot` is a PIV slot that holds an asymmetric key.
    pub fn is_key_slot(slot: u8) -> bool {
        matches!(slot, 0x9a | 0x9c | 0x9d | 0x9e | 0x82..=0x95)
    }

    /// The reference file's TOML.
    fn to_toml(self) -> String {
        format!(
            "# A TKE signature key held on a YubiKey (PIV). No secret is stored here:\n\
             # the key never leaves the YubiKey, and its PIN is asked for when it signs.\n\
             kind = \"yubikey\"\nserial = {}\nslot = \"{:02x}\"\n",
            self.serial, self.slot
        )
    }
}

/// The content of a PKCS#11 reference file (`<stem>.ref.toml`):
///
/// ```toml
/// kind = "pkcs11"
/// uri = "pkcs11:token=admins;object=alice;id=%01%02?module-path=/usr/lib/softhsm/libsofthsm2.so"
/// ```
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Pkcs11RefToml {
    kind: String,
    uri: String,
}

/// Checks that a reference names a PKCS#11 URI and holds no PIN.
fn check_token_uri(uri: &str) -> core::result::Result<(), &'static str> {
    let scheme = uri
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("pkcs11:"));
    if !scheme {
        return Err("its uri is not a PKCS#11 URI (pkcs11:...)");
    }
    let query = uri.split_once('?').map_or("", |(_, q)| q);
    if query
        .split('&')
        .any(|a| a == "pin-value" || a.starts_with("pin-value="))
    {
        return Err("its uri holds a PIN (pin-value); PINs are never stored");
    }
    Ok(())
}

/// One signature key of the workstation: the administrator certificate and where its
/// private key is. The private key is read only by [`SigKeyEntry::decrypt`].
///
/// Entries come from [`FilesDir::signature_keys`] and [`FilesDir::write_signature_key`];
/// `name` and `ski` are the certificate's.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SigKeyEntry {
    /// The administrator's name (the certificate's CN).
    pub name: AdminName,
    /// The administrator's SKI (the certificate's subjectKeyIdentifier).
    pub ski: Ski,
    /// The administrator certificate.
    pub certificate: AdminCertificate,
    /// Where the key lives.
    pub kind: SigKeyKind,
    /// The encrypted private key file (`<stem>.key.pem`), or for a key held on a token,
    /// its reference file (`<stem>.ref.toml`).
    pub key_path: PathBuf,
    /// The certificate file (`<stem>.crt.pem`).
    pub cert_path: PathBuf,
    /// For a key on a PKCS#11 token, its PKCS#11 URI (RFC 7512) as the reference file
    /// holds it: module, token and key, never a PIN. `None` for other kinds.
    pub token_uri: Option<String>,
}

impl SigKeyEntry {
    fn new(
        certificate: AdminCertificate,
        kind: SigKeyKind,
        key_path: PathBuf,
        cert_path: PathBuf,
    ) -> Self {
        Self {
            name: certificate.name().clone(),
            ski: certificate.ski(),
            certificate,
            kind,
            key_path,
            cert_path,
            token_uri: None,
        }
    }

    fn new_pkcs11(
        certificate: AdminCertificate,
        ref_path: PathBuf,
        cert_path: PathBuf,
        uri: String,
    ) -> Self {
        Self {
            token_uri: Some(uri),
            ..Self::new(certificate, SigKeyKind::Pkcs11, ref_path, cert_path)
        }
    }

    /// Reads and decrypts the private key and checks that it is the certificate's key.
    /// Never modifies the files. The returned key is zeroized when dropped.
    ///
    /// # Errors
    /// [`KeyFileError::WrongPassword`] when decryption fails (wrong password, or altered
    /// encrypted data: with AES-CBC the two look alike); [`KeyFileError::MalformedKeyFile`]
    /// or [`KeyFileError::KeyFileEncoding`] for a truncated, edited or foreign file;
    /// [`KeyFileError::KeyMismatch`] when the key is not the certificate's;
    /// [`KeyFileError::Io`] when the file cannot be read; for a key that is not in a file,
    /// [`KeyFileError::NotAKeyFile`] (PKCS#11 token) or [`KeyFileError::KeyOnToken`]
    /// (YubiKey): its provider opens it.
    pub fn decrypt(&self, password: &Password) -> Result<SecretKey> {
        match self.kind {
            SigKeyKind::File => {}
            SigKeyKind::Pkcs11 => {
                return Err(KeyFileError::NotAKeyFile {
                    name: self.name.clone(),
                    kind: self.kind.label(),
                    path: self.key_path.clone(),
                })
            }
            SigKeyKind::YubiKey(_) => {
                return Err(KeyFileError::KeyOnToken {
                    name: self.name.clone(),
                    kind: self.kind.label(),
                    path: self.key_path.clone(),
                })
            }
        }
        let pem = read_key_file(&self.key_path, &self.name)?;
        let secret = tke_pkcs8::decrypt(&pem, password)
            .map_err(|e| key_file_error(&self.key_path, &self.name, e))?;
        if secret.public_key() != *self.certificate.public_key() {
            return Err(KeyFileError::KeyMismatch {
                name: self.name.clone(),
                ski: self.ski,
                key_path: self.key_path.clone(),
                cert_path: self.cert_path.clone(),
            });
        }
        Ok(secret)
    }
}

/// The signature keys of a directory, in the order they were added (their
/// `<stem>.created` records, else their certificate files' modification times), then by
/// name and SKI; and the files that could not be read.
pub type SigKeyListing = Listing<SigKeyEntry>;

impl SigKeyListing {
    /// The KEYNUM (1-based) of the key with this SKI, if listed.
    pub fn keynum_of(&self, ski: &Ski) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.ski == *ski)
            .map(|i| i + 1)
    }

    /// The key with this SKI, if listed. SKIs are unique in a listing.
    pub fn by_ski(&self, ski: &Ski) -> Option<&SigKeyEntry> {
        self.entries.iter().find(|e| e.ski == *ski)
    }

    /// The keys of the administrator named `name` (an administrator may have several).
    pub fn by_name<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a SigKeyEntry> + 'a {
        self.entries.iter().filter(move |e| e.name.as_str() == name)
    }
}

/// The file name stem of a signature key: the administrator name with every character
/// other than ASCII letters, digits, `-`, `_` and `.` replaced by `_` (and no leading
/// `.`), then `-` and the first 8 hex digits of the SKI.
pub fn file_stem(name: &AdminName, ski: &Ski) -> String {
    format!("{}-{}", safe_stem(name.as_str()), &ski.to_hex()[..8])
}

impl FilesDir {
    /// Lists the signature keys: every `<stem>.key.pem` / `<stem>.crt.pem` pair (file
    /// keys), and every `<stem>.ref.toml` / `<stem>.crt.pem` pair (a key held on a PKCS#11
    /// token or a YubiKey, by the reference file's `kind`). Each certificate is parsed and
    /// verified, each key file's structure checked (without decrypting it) and each
    /// reference file parsed; a file that fails is reported in
    /// [`SigKeyListing::problems`]. Hidden files and other files are ignored.
    ///
    /// # Errors
    /// [`KeyFileError::Io`] only when the directory itself cannot be listed.
    pub fn signature_keys(&self) -> Result<SigKeyListing> {
        #[derive(Default)]
        struct Pair {
            key: bool,
            reference: bool,
            cert: bool,
        }
        let mut stems: BTreeMap<String, Pair> = BTreeMap::new();
        for dirent in fs::read_dir(self.path()).map_err(io_err("list", self.path()))? {
            let dirent = dirent.map_err(io_err("list", self.path()))?;
            let file_name = dirent.file_name();
            // Names that are not UTF-8 are never ours.
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if file_name.starts_with('.') {
                continue;
            }
            if let Some(stem) = file_name.strip_suffix(KEY_SUFFIX) {
                stems.entry(stem.to_owned()).or_default().key = true;
            } else if let Some(stem) = file_name.strip_suffix(REF_SUFFIX) {
                stems.entry(stem.to_owned()).or_default().reference = true;
            } else if let Some(stem) = file_name.strip_suffix(CERT_SUFFIX) {
                stems.entry(stem.to_owned()).or_default().cert = true;
            }
        }

        let mut listing = SigKeyListing::default();
        for (stem, pair) in stems {
            let key_path = self.path().join(format!("{stem}{KEY_SUFFIX}"));
            let cert_path = self.path().join(format!("{stem}{CERT_SUFFIX}"));
            let ref_path = self.path().join(format!("{stem}{REF_SUFFIX}"));
            let loaded = match (pair.key, pair.reference, pair.cert) {
                (true, true, _) => Err(KeyFileError::KeyAndReference { key_path, ref_path }),
                (true, false, true) => load_entry(key_path, cert_path),
                (false, true, true) => load_reference(ref_path, cert_path),
                (true, false, false) => Err(KeyFileError::MissingCertificate {
                    key_path,
                    cert_path,
                }),
                (false, true, false) => Err(KeyFileError::MissingCertificate {
                    key_path: ref_path,
                    cert_path,
                }),
                (false, false, _) => Err(KeyFileError::MissingKey {
                    cert_path,
                    key_path,
                }),
            };
            match loaded {
                Ok(entry) => listing.entries.push(entry),
                Err(problem) => listing.problems.push(problem),
            }
        }

        // Creation order, so that adding a key never renumbers the others.
        listing.entries.sort_by_cached_key(|e| {
            (
                RECORDS.created_at(&e.cert_path),
                e.name.clone(),
                e.ski,
                e.cert_path.clone(),
            )
        });
        let mut first_of: HashMap<Ski, PathBuf> = HashMap::new();
        let mut problems = Vec::new();
        listing.entries.retain(|e| match first_of.get(&e.ski) {
            Some(first) => {
                problems.push(KeyFileError::DuplicateKey {
                    ski: e.ski,
                    path: e.cert_path.clone(),
                    first: first.clone(),
                });
                false
            }
            None => {
                first_of.insert(e.ski, e.cert_path.clone());
                true
            }
        });
        listing.problems.extend(problems);
        Ok(listing)
    }

    /// Saves a signature key: `<stem>.key.pem` (the key as encrypted PKCS#8: PBES2,
    /// scrypt [`ScryptCost::NEW`], AES-256-CBC, random 16-byte salt and IV) and
    /// `<stem>.crt.pem` (the certificate), both 0600, each written atomically. Existing
    /// files are never overwritten. See [`file_stem`].
    ///
    /// # Errors
    /// [`KeyFileError::EmptyPassword`]; [`KeyFileError::WrongCertificate`] when `cert` is
    /// not for `secret` or names another administrator; [`KeyFileError::AlreadyExists`];
    /// [`KeyFileError::Encrypt`]; [`KeyFileError::Io`]. On error no file is left behind.
    pub fn write_signature_key(
        &self,
        name: &AdminName,
        secret: &SecretKey,
        cert: &AdminCertificate,
        password: &Password,
    ) -> Result<SigKeyEntry> {
        self.write_signature_key_with_cost(name, secret, cert, password, ScryptCost::NEW)
    }

    /// [`FilesDir::write_signature_key`] with another scrypt cost: for tests and benches
    /// that write older files or many files. Whatever writes keys for users calls
    /// [`FilesDir::write_signature_key`].
    ///
    /// # Errors
    /// As [`FilesDir::write_signature_key`]; [`KeyFileError::Encrypt`] also when `cost`
    /// is not a valid scrypt cost.
    pub fn write_signature_key_with_cost(
        &self,
        name: &AdminName,
        secret: &SecretKey,
        cert: &AdminCertificate,
        password: &Password,
        cost: ScryptCost,
    ) -> Result<SigKeyEntry> {
        if password.is_empty() {
            return Err(KeyFileError::EmptyPassword { name: name.clone() });
        }
        if *cert.public_key() != secret.public_key() {
            return Err(KeyFileError::WrongCertificate {
                name: name.clone(),
                problem: "is for another key",
            });
        }
        if cert.name() != name {
            return Err(KeyFileError::WrongCertificate {
                name: name.clone(),
                problem: "names another administrator",
            });
        }
        let stem = file_stem(name, &cert.ski());
        let key_path = self.path().join(format!("{stem}{KEY_SUFFIX}"));
        let cert_path = self.path().join(format!("{stem}{CERT_SUFFIX}"));
        for path in [&key_path, &cert_path] {
            if fs::symlink_metadata(path).is_ok() {
                return Err(KeyFileError::AlreadyExists { path: path.clone() });
            }
        }
        let key_pem = encrypt_key(name, secret, password, cost)?;
        write_with_certificate(&key_path, key_pem.as_bytes(), cert, &cert_path)?;
        Ok(SigKeyEntry::new(
            cert.clone(),
            SigKeyKind::File,
            key_path,
            cert_path,
        ))
    }

    /// Records a signature key held on a YubiKey: `<stem>.ref.toml` (`kind = "yubikey"`,
    /// the serial number and the slot; no secret) and `<stem>.crt.pem` (the certificate),
    /// both 0600, each written atomically. Existing files are never overwritten. The
    /// caller has checked that the key in the slot is the certificate's.
    ///
    /// # Errors
    /// [`KeyFileError::WrongCertificate`] when `cert` names another administrator;
    /// [`KeyFileError::BadSlot`]; [`KeyFileError::AlreadyExists`]; [`KeyFileError::Io`].
    /// On error no file is left behind.
    pub fn write_yubikey_reference(
        &self,
        name: &AdminName,
        cert: &AdminCertificate,
        reference: YubiKeyRef,
    ) -> Result<SigKeyEntry> {
        if cert.name() != name {
            return Err(KeyFileError::WrongCertificate {
                name: name.clone(),
                problem: "names another administrator",
            });
        }
        if !YubiKeyRef::is_key_slot(reference.slot) {
            return Err(KeyFileError::BadSlot {
                slot: reference.slot,
            });
        }
        let stem = file_stem(name, &cert.ski());
        let key_path = self.path().join(format!("{stem}{KEY_SUFFIX}"));
        let ref_path = self.path().join(format!("{stem}{REF_SUFFIX}"));
        let cert_path = self.path().join(format!("{stem}{CERT_SUFFIX}"));
        for path in [&key_path, &ref_path, &cert_path] {
            if fs::symlink_metadata(path).is_ok() {
                return Err(KeyFileError::AlreadyExists { path: path.clone() });
            }
        }
        write_with_certificate(&ref_path, reference.to_toml().as_bytes(), cert, &cert_path)?;
        Ok(SigKeyEntry::new(
            cert.clone(),
            SigKeyKind::YubiKey(reference),
            ref_path,
            cert_path,
        ))
    }

    /// Removes the files of a signature key (for a key on a token: its reference and
    /// certificate files; the key itself stays on the token), and its `<stem>.created`
    /// record. A file already gone is not an error.
    ///
    /// # Errors
    /// [`KeyFileError::Io`] when a file cannot be removed.
    pub fn remove_signature_key(&self, entry: &SigKeyEntry) -> Result<()> {
        let record = RECORDS.path(&entry.cert_path);
        remove_files(self.path(), &[&entry.key_path, &entry.cert_path, &record])
    }
}

impl FilesDir {
    /// Records a signature key held on a PKCS#11 token: `<stem>.ref.toml` (`kind =
    /// "pkcs11"`, `uri = "<uri>"`: no secret) and `<stem>.crt.pem` (the certificate), both
    /// 0600, each written atomically. Existing files are never overwritten. See
    /// [`file_stem`].
    ///
    /// # Errors
    /// [`KeyFileError::InvalidTokenUri`] when `uri` is not a PKCS#11 URI or holds a PIN
    /// (`pin-value`); [`KeyFileError::AlreadyExists`]; [`KeyFileError::Io`]. On error no
    /// file is left behind.
    pub fn write_token_reference(&self, cert: &AdminCertificate, uri: &str) -> Result<SigKeyEntry> {
        let name = cert.name();
        check_token_uri(uri).map_err(|problem| KeyFileError::InvalidTokenUri {
            name: name.clone(),
            problem,
        })?;
        let stem = file_stem(name, &cert.ski());
        let key_path = self.path().join(format!("{stem}{KEY_SUFFIX}"));
        let ref_path = self.path().join(format!("{stem}{REF_SUFFIX}"));
        let cert_path = self.path().join(format!("{stem}{CERT_SUFFIX}"));
        for path in [&key_path, &ref_path, &cert_path] {
            if fs::symlink_metadata(path).is_ok() {
                return Err(KeyFileError::AlreadyExists { path: path.clone() });
            }
        }
        let reference = Pkcs11RefToml {
            kind: SigKeyKind::Pkcs11.label().to_owned(),
            uri: uri.to_owned(),
        };
        // Two plain strings always serialize.
        let text = toml::to_string(&reference).unwrap_or_default();
        write_with_certificate(&ref_path, text.as_bytes(), cert, &cert_path)?;
        Ok(SigKeyEntry::new_pkcs11(
            cert.clone(),
            ref_path,
            cert_path,
            uri.to_owned(),
        ))
    }
}

/// Writes a key's first file (`first`: the key file or a token reference), then its
/// certificate and creation record, all as new files; on failure removes what it wrote,
/// so that no key file or reference is left without its certificate.
fn write_with_certificate(
    first: &Path,
    bytes: &[u8],
    cert: &AdminCertificate,
    cert_path: &Path,
) -> Result<()> {
    let cert_pem = cert.to_pem().map_err(|source| KeyFileError::Certificate {
        path: cert_path.to_path_buf(),
        source,
    })?;
    RECORDS.write_new(
        &[(first, bytes), (cert_path, cert_pem.as_bytes())],
        cert_path,
    )
}

fn load_entry(key_path: PathBuf, cert_path: PathBuf) -> Result<SigKeyEntry> {
    let certificate = load_certificate(&cert_path)?;
    // Check the key file's structure now, so that `sigkeys` shows a damaged key file
    // before anyone types a password for it.
    read_key_file(&key_path, certificate.name())?;
    Ok(SigKeyEntry::new(
        certificate,
        SigKeyKind::File,
        key_path,
        cert_path,
    ))
}

fn load_certificate(cert_path: &Path) -> Result<AdminCertificate> {
    let bytes = fs::read(cert_path).map_err(io_err("read", cert_path))?;
    AdminCertificate::from_pem(&String::from_utf8_lossy(&bytes)).map_err(|source| {
        KeyFileError::Certificate {
            path: cert_path.to_path_buf(),
            source,
        }
    })
}

/// The fields of a YubiKey reference file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct YubiKeyRefToml {
    #[allow(dead_code)]
    kind: String,
    serial: u32,
    slot: String,
}

/// Parses a reference file, dispatched on its `kind`: the key's kind and, for a PKCS#11
/// key, its URI.
fn parse_reference_with_uri(path: &Path, text: &str) -> Result<(SigKeyKind, Option<String>)> {
    let bad = |problem| KeyFileError::MalformedReference {
        path: path.to_path_buf(),
        problem,
    };
    let table: toml::Table =
        toml::from_str(text).map_err(|source| KeyFileError::ReferenceToml {
            path: path.to_path_buf(),
            source,
        })?;
    match table.get("kind").and_then(toml::Value::as_str) {
        Some("yubikey") if table.contains_key("uri") => {
            return Err(bad(
                "its kind is not \"pkcs11\", yet it has a `uri` (a PKCS#11 key's field)",
            ))
        }
        Some("yubikey") => {}
        Some("pkcs11") if table.contains_key("serial") || table.contains_key("slot") => {
            return Err(bad(
                "its kind is not \"yubikey\", yet it has a `serial` or `slot` (a YubiKey key's fields)",
            ))
        }
        Some("pkcs11") => {
            let r: Pkcs11RefToml =
                table
                    .try_into()
                    .map_err(|source| KeyFileError::ReferenceToml {
                        path: path.to_path_buf(),
                        source,
                    })?;
            check_token_uri(&r.uri).map_err(bad)?;
            return Ok((SigKeyKind::Pkcs11, Some(r.uri)));
        }
        Some(other) => {
            return Err(KeyFileError::UnknownReferenceKind {
                path: path.to_path_buf(),
                kind: other.to_owned(),
            })
        }
        None => return Err(bad("it has no `kind = \"...\"` line")),
    }
    let r: YubiKeyRefToml = table
        .try_into()
        .map_err(|source| KeyFileError::ReferenceToml {
            path: path.to_path_buf(),
            source,
        })?;
    let slot = match u8::from_str_radix(&r.slot, 16) {
        Ok(s) if r.slot.len() == 2 && YubiKeyRef::is_key_slot(s) => s,
        _ => {
            return Err(bad(
                "its slot is not a PIV key slot (9a, 9c, 9d, 9e, or 82 to 95, in hex)",
            ))
        }
    };
    let kind = SigKeyKind::YubiKey(YubiKeyRef {
        serial: r.serial,
        slot,
    });
    Ok((kind, None))
}

fn load_reference(ref_path: PathBuf, cert_path: PathBuf) -> Result<SigKeyEntry> {
    let certificate = load_certificate(&cert_path)?;
    let bytes = fs::read(&ref_path).map_err(io_err("read", &ref_path))?;
    let text = core::str::from_utf8(&bytes).map_err(|_| KeyFileError::MalformedReference {
        path: ref_path.clone(),
        problem: "it is not UTF-8 text",
    })?;
    let (kind, token_uri) = parse_reference_with_uri(&ref_path, text)?;
    Ok(SigKeyEntry {
        token_uri,
        ..SigKeyEntry::new(certificate, kind, ref_path, cert_path)
    })
}

fn encrypt_key(
    name: &AdminName,
    secret: &SecretKey,
    password: &Password,
    cost: ScryptCost,
) -> Result<Zeroizing<String>> {
    tke_pkcs8::encrypt_with_cost(secret, password, cost).map_err(|source| KeyFileError::Encrypt {
        name: name.clone(),
        source,
    })
}

/// Reads the key file of administrator `name` and checks its structure without
/// decrypting it. Returns its text.
fn read_key_file(path: &Path, name: &AdminName) -> Result<Zeroizing<Vec<u8>>> {
    let pem = Zeroizing::new(fs::read(path).map_err(io_err("read", path))?);
    tke_pkcs8::check(&pem).map_err(|e| key_file_error(path, name, e))?;
    Ok(pem)
}

/// The error of the key file `path` of administrator `name` for what the format found.
fn key_file_error(path: &Path, name: &AdminName, e: Pkcs8Error) -> KeyFileError {
    let path = path.to_path_buf();
    match e {
        Pkcs8Error::WrongPassword => KeyFileError::WrongPassword {
            name: name.clone(),
            path,
        },
        Pkcs8Error::Encoding { what, source } => {
            KeyFileError::KeyFileEncoding { path, what, source }
        }
        Pkcs8Error::Malformed { problem } => KeyFileError::MalformedKeyFile { path, problem },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_reference(path: &Path, text: &str) -> Result<SigKeyKind> {
        parse_reference_with_uri(path, text).map(|(kind, _)| kind)
    }

    #[test]
    fn reference_files_parse_strictly() {
        let p = Path::new("x.ref.toml");
        let r = YubiKeyRef {
            serial: 12345678,
            slot: 0x9c,
        };
        assert_eq!(
            parse_reference(p, &r.to_toml()).unwrap(),
            SigKeyKind::YubiKey(r)
        );
        let retired = "kind = \"yubikey\"\nserial = 1\nslot = \"95\"\n";
        assert!(parse_reference(p, retired).is_ok());
        for (text, what) in [
            (
                "kind = \"yubikey\"\nserial = 1\nslot = \"9b\"\n",
                "PIV key slot",
            ),
            (
                "kind = \"yubikey\"\nserial = 1\nslot = \"9C0\"\n",
                "PIV key slot",
            ),
            ("kind = \"yubikey\"\nserial = -1\nslot = \"9c\"\n", "serial"),
            ("kind = \"yubikey\"\nslot = \"9c\"\n", "serial"),
            (
                "kind = \"yubikey\"\nserial = 1\nslot = \"9c\"\npin = \"1\"\n",
                "pin",
            ),
            ("serial = 1\nslot = \"9c\"\n", "no `kind"),
            ("kind = \"pkcs11\"\n", "pkcs11"),
            ("kind = ", "TOML parse error"),
        ] {
            let err = parse_reference(p, text).unwrap_err();
            // The file is named by this layer, the parser's finding is its source.
            let err = tke_proto::ErrorChain(&err).to_string();
            assert!(err.contains("x.ref.toml"), "{err}");
            assert!(err.contains(what), "{what:?} not in: {err}");
        }
    }

    #[test]
    fn file_stem_is_sanitized() {
        let ski = Ski([0xab; 32]);
        assert_eq!(
            file_stem(&AdminName::new("alice").unwrap(), &ski),
            "alice-abababab"
        );
        assert_eq!(
            file_stem(&AdminName::new("../Bob Smith/é").unwrap(), &ski),
            "_._Bob_Smith__-abababab"
        );
        assert_eq!(
            file_stem(&AdminName::new(".hidden").unwrap(), &ski),
            "_hidden-abababab"
        );
    }
}
