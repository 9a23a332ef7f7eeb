//! Signature key files: an encrypted PKCS#8 private key and the administrator certificate,
//! side by side in the workstation directory; or, for a key on a PKCS#11 token, a reference
//! file naming it and the certificate.

use std::{
    collections::{BTreeMap, HashMap},
    fs, io,
    path::{Path, PathBuf},
};

use p256::{
    elliptic_curve::ALGORITHM_OID,
    pkcs8::{AssociatedOid, EncodePrivateKey},
    NistP256, SecretKey,
};
use pkcs5::pbes2;
use pkcs8::{
    der::{pem::LineEnding, Decode},
    EncryptedPrivateKeyInfo, PrivateKeyInfo,
};
use tke_proto::{AdminCertificate, AdminName, Ski};
use zeroize::Zeroizing;

use crate::{atomic, error::io_err, FilesDir, KeyFileError, Password, Result};

/// The suffix of a signature key's private key file.
pub const KEY_SUFFIX: &str = ".key.pem";
/// The suffix of a signature key's certificate file.
pub const CERT_SUFFIX: &str = ".crt.pem";
/// The suffix of the reference file of a signature key on a token.
pub const REF_SUFFIX: &str = ".ref.toml";
/// The PEM label of the private key file.
pub const KEY_PEM_LABEL: &str = "ENCRYPTED PRIVATE KEY";

/// scrypt cost written into new key files: log2(N) = 14 (N = 16384). OpenSSL's default
/// memory limit (32 MiB) refuses N = 2^15 with r = 8 and larger.
pub const SCRYPT_LOG_N: u8 = 14;
/// scrypt block size `r` written into new key files.
pub const SCRYPT_R: u32 = 8;
/// scrypt parallelism `p` written into new key files.
pub const SCRYPT_P: u32 = 1;

/// Largest scrypt memory (128 · r · N bytes) accepted when reading a key file, so that an
/// edited file cannot make the reader allocate without bound.
const MAX_SCRYPT_MEMORY: u64 = 256 << 20;
/// Largest scrypt parallelism accepted when reading.
const MAX_SCRYPT_P: u16 = 16;
/// Largest PBKDF2 iteration count accepted when reading.
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// Where a signature key lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SigKeyKind {
    /// An encrypted key file and its certificate file in the workstation directory.
    File,
    /// A key on a PKCS#11 token: the workstation holds a reference file (its PKCS#11 URI,
    /// no secret) and the certificate file.
    Pkcs11,
}

impl SigKeyKind {
    /// Lower-case label for tables and JSON (`file`, `pkcs11`).
    pub fn label(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Pkcs11 => "pkcs11",
        }
    }
}

/// The content of a reference file (`<stem>.ref.toml`):
///
/// ```toml
/// kind = "pkcs11"
/// uri = "pkcs11:token=admins;object=alice;id=%01%02?module-path=/usr/lib/softhsm/libsofthsm2.so"
/// ```
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Reference {
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
    /// For a file key, the encrypted private key file (`<stem>.key.pem`); for a key on a
    /// token, the reference file (`<stem>.ref.toml`).
    pub key_path: PathBuf,
    /// The certificate file (`<stem>.crt.pem`).
    pub cert_path: PathBuf,
    /// For a key on a PKCS#11 token, its PKCS#11 URI (RFC 7512) as the reference file
    /// holds it: module, token and key, never a PIN. `None` for a file key.
    pub token_uri: Option<String>,
}

impl SigKeyEntry {
    fn new(certificate: AdminCertificate, key_path: PathBuf, cert_path: PathBuf) -> Self {
        Self {
            name: certificate.name().clone(),
            ski: certificate.ski(),
            certificate,
            kind: SigKeyKind::File,
            key_path,
            cert_path,
            token_uri: None,
        }
    }

    fn new_token(
        certificate: AdminCertificate,
        ref_path: PathBuf,
        cert_path: PathBuf,
        uri: String,
    ) -> Self {
        Self {
            kind: SigKeyKind::Pkcs11,
            token_uri: Some(uri),
            ..Self::new(certificate, ref_path, cert_path)
        }
    }

    /// Reads and decrypts the private key and checks that it is the certificate's key.
    /// Never modifies the files. The returned key is zeroized when dropped.
    ///
    /// # Errors
    /// [`KeyFileError::NotAKeyFile`] for a key on a token (its provider opens it);
    /// [`KeyFileError::WrongPassword`] when decryption fails (wrong password, or altered
    /// encrypted data: with AES-CBC the two look alike); [`KeyFileError::MalformedKeyFile`]
    /// or [`KeyFileError::KeyFileEncoding`] for a truncated, edited or foreign file;
    /// [`KeyFileError::KeyMismatch`] when the key is not the certificate's;
    /// [`KeyFileError::Io`] when the file cannot be read.
    pub fn decrypt(&self, password: &Password) -> Result<SecretKey> {
        if self.kind != SigKeyKind::File {
            return Err(KeyFileError::NotAKeyFile {
                name: self.name.clone(),
                kind: self.kind.label(),
                path: self.key_path.clone(),
            });
        }
        let der = read_key_file(&self.key_path)?;
        let secret = decrypt_key(&self.key_path, &self.name, &der, password)?;
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

/// The signature keys of a directory, in a stable order (by name, then SKI), and the
/// files that could not be read. A bad file never hides the others.
#[derive(Debug, Default)]
pub struct SigKeyListing {
    /// The keys, sorted by name, then SKI. KEYNUM (as the CLI shows it) is index + 1.
    pub entries: Vec<SigKeyEntry>,
    /// One error per file that could not be read or parsed, naming the file.
    pub problems: Vec<KeyFileError>,
}

impl SigKeyListing {
    /// The key with the given KEYNUM (1-based), if any.
    pub fn by_keynum(&self, keynum: usize) -> Option<&SigKeyEntry> {
        keynum.checked_sub(1).and_then(|i| self.entries.get(i))
    }

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
    let mut s: String = name
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with('.') {
        s.replace_range(..1, "_");
    }
    format!("{s}-{}", &ski.to_hex()[..8])
}

impl FilesDir {
    /// Lists the signature keys: every `<stem>.key.pem` / `<stem>.crt.pem` pair (file
    /// keys) and every `<stem>.ref.toml` / `<stem>.crt.pem` pair (keys on PKCS#11 tokens).
    /// Each certificate is parsed and verified, each key file's structure checked (without
    /// decrypting it) and each reference file read; a file that fails is reported in
    /// [`SigKeyListing::problems`]. Hidden files and other files are ignored.
    ///
    /// # Errors
    /// [`KeyFileError::Io`] only when the directory itself cannot be listed.
    pub fn signature_keys(&self) -> Result<SigKeyListing> {
        #[derive(Default)]
        struct Pair {
            key: bool,
            cert: bool,
            reference: bool,
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
            } else if let Some(stem) = file_name.strip_suffix(CERT_SUFFIX) {
                stems.entry(stem.to_owned()).or_default().cert = true;
            } else if let Some(stem) = file_name.strip_suffix(REF_SUFFIX) {
                stems.entry(stem.to_owned()).or_default().reference = true;
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

        listing
            .entries
            .sort_by(|a, b| (&a.name, a.ski, &a.cert_path).cmp(&(&b.name, b.ski, &b.cert_path)));
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
    /// scrypt log2(N) = 14, r = 8, p = 1, AES-256-CBC, random 16-byte salt and IV) and
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
        let key_pem = encrypt_key(name, secret, password)?;
        let cert_pem = cert.to_pem().map_err(|source| KeyFileError::Certificate {
            path: cert_path.clone(),
            source,
        })?;

        create_new(&key_path, key_pem.as_bytes())?;
        if let Err(e) = create_new(&cert_path, cert_pem.as_bytes()) {
            // No key file without its certificate: undo the first write.
            let _ = fs::remove_file(&key_path);
            return Err(e);
        }
        Ok(SigKeyEntry::new(cert.clone(), key_path, cert_path))
    }

    /// Removes both files of a signature key: the key file or, for a key on a token, the
    /// reference file, and the certificate file. A key on a token is left on the token:
    /// nothing here touches a token. A file already gone is not an error.
    ///
    /// # Errors
    /// [`KeyFileError::Io`] when a file cannot be removed.
    pub fn remove_signature_key(&self, entry: &SigKeyEntry) -> Result<()> {
        for path in [&entry.key_path, &entry.cert_path] {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", path)(e)),
            }
        }
        fs::File::open(self.path())
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync", self.path()))
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
        let reference = Reference {
            kind: SigKeyKind::Pkcs11.label().to_owned(),
            uri: uri.to_owned(),
        };
        // Two plain strings always serialize.
        let text = toml::to_string(&reference).unwrap_or_default();
        let cert_pem = cert.to_pem().map_err(|source| KeyFileError::Certificate {
            path: cert_path.clone(),
            source,
        })?;
        create_new(&ref_path, text.as_bytes())?;
        if let Err(e) = create_new(&cert_path, cert_pem.as_bytes()) {
            // No reference without its certificate: undo the first write.
            let _ = fs::remove_file(&ref_path);
            return Err(e);
        }
        Ok(SigKeyEntry::new_token(
            cert.clone(),
            ref_path,
            cert_path,
            uri.to_owned(),
        ))
    }
}

fn create_new(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic::create_private(path, bytes).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            KeyFileError::AlreadyExists {
                path: path.to_path_buf(),
            }
        } else {
            io_err("write", path)(e)
        }
    })
}

fn read_certificate(cert_path: &Path) -> Result<AdminCertificate> {
    let bytes = fs::read(cert_path).map_err(io_err("read", cert_path))?;
    AdminCertificate::from_pem(&String::from_utf8_lossy(&bytes)).map_err(|source| {
        KeyFileError::Certificate {
            path: cert_path.to_path_buf(),
            source,
        }
    })
}

fn load_reference(ref_path: PathBuf, cert_path: PathBuf) -> Result<SigKeyEntry> {
    let certificate = read_certificate(&cert_path)?;
    let bytes = fs::read(&ref_path).map_err(io_err("read", &ref_path))?;
    let malformed_ref = |problem| KeyFileError::MalformedReference {
        path: ref_path.clone(),
        problem,
    };
    let text = core::str::from_utf8(&bytes).map_err(|_| malformed_ref("it is not UTF-8 text"))?;
    let reference: Reference =
        toml::from_str(text).map_err(|source| KeyFileError::ReferenceToml {
            path: ref_path.clone(),
            source,
        })?;
    if reference.kind != SigKeyKind::Pkcs11.label() {
        return Err(malformed_ref("its kind is not \"pkcs11\""));
    }
    check_token_uri(&reference.uri).map_err(malformed_ref)?;
    Ok(SigKeyEntry::new_token(
        certificate,
        ref_path,
        cert_path,
        reference.uri,
    ))
}

fn load_entry(key_path: PathBuf, cert_path: PathBuf) -> Result<SigKeyEntry> {
    let certificate = read_certificate(&cert_path)?;
    // Check the key file's structure now, so that `sigkeys` shows a damaged key file
    // before anyone types a password for it.
    read_key_file(&key_path)?;
    Ok(SigKeyEntry::new(certificate, key_path, cert_path))
}

fn encrypt_key(
    name: &AdminName,
    secret: &SecretKey,
    password: &Password,
) -> Result<Zeroizing<String>> {
    let err = |source| KeyFileError::Encrypt {
        name: name.clone(),
        source,
    };
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut iv);
    let scrypt = pkcs5::scrypt::Params::new(SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P, 32)
        .map_err(|_| err(pkcs8::Error::ParametersMalformed))?;
    let params = pbes2::Parameters::scrypt_aes256cbc(scrypt, &salt, &iv)
        .map_err(|e| err(pkcs8::Error::EncryptedPrivateKey(e)))?;
    let plain = secret.to_pkcs8_der().map_err(err)?;
    let info = PrivateKeyInfo::try_from(plain.as_bytes()).map_err(err)?;
    let encrypted = info
        .encrypt_with_params(params, password.expose_secret().as_bytes())
        .map_err(err)?;
    encrypted
        .to_pem(KEY_PEM_LABEL, LineEnding::LF)
        .map_err(|e| err(e.into()))
}

/// Reads a key file and checks its structure without decrypting it. Returns the DER of
/// its `EncryptedPrivateKeyInfo`.
fn read_key_file(path: &Path) -> Result<Vec<u8>> {
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    let (label, der) =
        pkcs8::der::pem::decode_vec(&bytes).map_err(|e| KeyFileError::KeyFileEncoding {
            path: path.to_path_buf(),
            what: "not a complete PEM block",
            source: e.into(),
        })?;
    if label != KEY_PEM_LABEL {
        return Err(malformed(
            path,
            if label == "PRIVATE KEY" || label == "EC PRIVATE KEY" {
                "the private key is not encrypted; TKE keeps only password-protected keys"
            } else {
                "the PEM block is not an ENCRYPTED PRIVATE KEY"
            },
        ));
    }
    parse_encrypted(path, &der)?;
    Ok(der)
}

/// Parses an `EncryptedPrivateKeyInfo` strictly and checks that it uses PBES2 with AES-CBC,
/// KDF parameters within limits, and whole AES blocks. Returns it and its PBES2 parameters.
fn parse_encrypted<'a>(
    path: &Path,
    der: &'a [u8],
) -> Result<(EncryptedPrivateKeyInfo<'a>, pbes2::Parameters<'a>)> {
    let info =
        EncryptedPrivateKeyInfo::from_der(der).map_err(|source| KeyFileError::KeyFileEncoding {
            path: path.to_path_buf(),
            what: "not a valid EncryptedPrivateKeyInfo",
            source,
        })?;
    let params = match info.encryption_algorithm {
        pkcs5::EncryptionScheme::Pbes2(ref params) => params.clone(),
        _ => {
            return Err(malformed(
                path,
                "it does not use PBES2 encryption; only PBES2 (scrypt or PBKDF2, with AES-CBC) is supported",
            ))
        }
    };
    if !matches!(
        params.encryption,
        pbes2::EncryptionScheme::Aes128Cbc { .. }
            | pbes2::EncryptionScheme::Aes192Cbc { .. }
            | pbes2::EncryptionScheme::Aes256Cbc { .. }
    ) {
        return Err(malformed(path, "its cipher is not AES-CBC"));
    }
    match params.kdf {
        pbes2::Kdf::Scrypt(s) => {
            let memory = 128 * u64::from(s.block_size) * s.cost_parameter;
            if s.cost_parameter > 1 << 20
                || memory > MAX_SCRYPT_MEMORY
                || s.parallelization > MAX_SCRYPT_P
            {
                return Err(malformed(
                    path,
                    "its scrypt parameters exceed the limits (at most 256 MiB of memory, N <= 2^20, p <= 16)",
                ));
            }
        }
        pbes2::Kdf::Pbkdf2(p) => {
            if p.iteration_count > MAX_PBKDF2_ITERATIONS {
                return Err(malformed(
                    path,
                    "its PBKDF2 iteration count exceeds the limit of 10,000,000",
                ));
            }
        }
        _ => {
            return Err(malformed(
                path,
                "its key derivation function is not scrypt or PBKDF2",
            ))
        }
    }
    if info.encrypted_data.is_empty() || info.encrypted_data.len() % 16 != 0 {
        return Err(malformed(
            path,
            "the encrypted data is not a whole number of AES blocks (the file was cut short or edited)",
        ));
    }
    Ok((info, params))
}

fn decrypt_key(
    path: &Path,
    name: &AdminName,
    der: &[u8],
    password: &Password,
) -> Result<SecretKey> {
    let (info, params) = parse_encrypted(path, der)?;
    let wrong_password = || KeyFileError::WrongPassword {
        name: name.clone(),
        path: path.to_path_buf(),
    };
    let mut buf = Zeroizing::new(info.encrypted_data.to_vec());
    let plain = match params.decrypt_in_place(password.expose_secret().as_bytes(), &mut buf) {
        Ok(plain) => plain,
        // A bad CBC padding: pkcs5 0.7 reports it as `EncryptFailed`.
        Err(pkcs5::Error::DecryptFailed | pkcs5::Error::EncryptFailed) => {
            return Err(wrong_password())
        }
        Err(_) => {
            return Err(malformed(
                path,
                "its encryption parameters are invalid or unsupported (supported: scrypt, or \
                 PBKDF2 with HMAC-SHA-224/256/384/512)",
            ))
        }
    };
    // With a wrong password the plaintext is noise that is not DER.
    let info = PrivateKeyInfo::from_der(plain).map_err(|_| wrong_password())?;
    if info
        .algorithm
        .assert_oids(ALGORITHM_OID, NistP256::OID)
        .is_err()
    {
        return Err(malformed(path, "the key is not an EC key on curve P-256"));
    }
    SecretKey::try_from(info)
        .map_err(|_| malformed(path, "the decrypted key is not a valid P-256 private key"))
}

fn malformed(path: &Path, problem: &'static str) -> KeyFileError {
    KeyFileError::MalformedKeyFile {
        path: path.to_path_buf(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
