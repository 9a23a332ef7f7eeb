#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod error;
mod password;

use std::path::{Path, PathBuf};

use p256::{
    elliptic_curve::ALGORITHM_OID,
    pkcs8::{AssociatedOid, EncodePrivateKey},
    NistP256, SecretKey,
};
use pkcs5::pbes2;
use pkcs8::{
    der::{pem::LineEnding, Decode, Encode},
    EncryptedPrivateKeyInfo, PrivateKeyInfo,
};
use zeroize::Zeroizing;

pub use error::{FileError, Pkcs8Error};
pub use password::Password;

/// The PEM label of an encrypted private key.
pub const PEM_LABEL: &str = "ENCRYPTED PRIVATE KEY";

/// scrypt cost written by [`encrypt`]: log2(N) = 16 (N = 65536). With `r` = 3 one
/// derivation needs 24 MiB: OpenSSL 3.0 caps the scrypt memory of a PBES2 file at 32 MiB
/// (`openssl pkey` has no option to raise it), so N = 2^16 with r = 8 (64 MiB) could not
/// be opened by `openssl` any more. `p` = 4 runs four such lanes one after another: six
/// times the work of the N = 2^14, r = 8, p = 1 that keys had before.
pub const SCRYPT_LOG_N: u8 = 16;
/// scrypt block size `r` written by [`encrypt`].
pub const SCRYPT_R: u32 = 3;
/// scrypt parallelism `p` written by [`encrypt`].
pub const SCRYPT_P: u32 = 4;

/// The scrypt cost of an encrypted key: log2(N), `r` and `p`. New keys get
/// [`ScryptCost::NEW`]; reading accepts any cost within the limits below, so older keys
/// still open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScryptCost {
    /// log2 of the CPU/memory cost N.
    pub log_n: u8,
    /// Block size.
    pub r: u32,
    /// Parallelism: lanes computed one after another here.
    pub p: u32,
}

impl ScryptCost {
    /// What [`encrypt`] writes: [`SCRYPT_LOG_N`], [`SCRYPT_R`], [`SCRYPT_P`].
    pub const NEW: Self = Self {
        log_n: SCRYPT_LOG_N,
        r: SCRYPT_R,
        p: SCRYPT_P,
    };
    /// What keys had before: log2(N) = 14, r = 8, p = 1 (OpenSSL's own default). Such keys
    /// still open; only tests and benches write it.
    pub const V1: Self = Self {
        log_n: 14,
        r: 8,
        p: 1,
    };
}

/// Largest scrypt memory (128 · r · N bytes) accepted when reading, so that an edited key
/// cannot make the reader allocate without bound.
pub const MAX_SCRYPT_MEMORY: u64 = 256 << 20;
/// Largest scrypt cost N accepted when reading.
pub const MAX_SCRYPT_N: u64 = 1 << 20;
/// Largest scrypt parallelism accepted when reading.
pub const MAX_SCRYPT_P: u16 = 16;
/// Largest PBKDF2 iteration count accepted when reading.
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// Encrypts a P-256 private key as PEM `ENCRYPTED PRIVATE KEY`: PBES2, scrypt with
/// [`ScryptCost::NEW`] and a random 16-byte salt, AES-256-CBC with a random IV. The text
/// is zeroized when dropped.
///
/// # Errors
/// The encoder's error (it never holds key bytes).
pub fn encrypt(secret: &SecretKey, password: &Password) -> Result<Zeroizing<String>, pkcs8::Error> {
    encrypt_with_cost(secret, password, ScryptCost::NEW)
}

/// [`encrypt`] at another scrypt cost: for tests and benchmarks that write keys as older
/// versions did. Users' keys are written by [`encrypt`].
///
/// # Errors
/// The encoder's error (it never holds key bytes), or a cost scrypt refuses.
pub fn encrypt_with_cost(
    secret: &SecretKey,
    password: &Password,
    cost: ScryptCost,
) -> Result<Zeroizing<String>, pkcs8::Error> {
    let plain = secret.to_pkcs8_der()?;
    let der = encrypt_der(plain.as_bytes(), password, cost)?;
    Ok(Zeroizing::new(pkcs8::der::pem::encode_string(
        PEM_LABEL,
        LineEnding::LF,
        &der,
    )?))
}

/// Encrypts `plain`, the DER of a secret that is not a P-256 key (a master key part),
/// as the DER of an `EncryptedPrivateKeyInfo` with the encryption of [`encrypt`]: PBES2,
/// scrypt at `cost` with a random 16-byte salt, AES-256-CBC with a random IV. The
/// caller chooses the PEM label, so that no tool takes the result for a private key.
///
/// # Errors
/// The encoder's error (it never holds secret bytes), or a cost scrypt refuses.
pub fn encrypt_der(
    plain: &[u8],
    password: &Password,
    cost: ScryptCost,
) -> Result<Vec<u8>, pkcs8::Error> {
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut iv);
    let scrypt = pkcs5::scrypt::Params::new(cost.log_n, cost.r, cost.p, 32)
        .map_err(|_| pkcs8::Error::ParametersMalformed)?;
    let params = pbes2::Parameters::scrypt_aes256cbc(scrypt, &salt, &iv)
        .map_err(pkcs8::Error::EncryptedPrivateKey)?;
    // Encrypted in place: the buffer holds ciphertext only when it is returned.
    let encrypted = params
        .encrypt(password.expose_secret().as_bytes(), plain)
        .map_err(pkcs8::Error::EncryptedPrivateKey)?;
    let info = EncryptedPrivateKeyInfo {
        encryption_algorithm: params.into(),
        encrypted_data: &encrypted,
    };
    Ok(info.to_der()?)
}

/// Checks the structure of an encrypted private key without decrypting it: a PEM
/// `ENCRYPTED PRIVATE KEY` block whose `EncryptedPrivateKeyInfo` uses PBES2 with AES-CBC,
/// scrypt or PBKDF2 within the limits ([`MAX_SCRYPT_MEMORY`], [`MAX_SCRYPT_N`],
/// [`MAX_SCRYPT_P`], [`MAX_PBKDF2_ITERATIONS`]) and whole AES blocks.
///
/// # Errors
/// [`Pkcs8Error::Encoding`] or [`Pkcs8Error::Malformed`].
pub fn check(pem: &[u8]) -> Result<(), Pkcs8Error> {
    check_der(&decode_pem(pem)?)
}

/// [`check`] for the DER of an `EncryptedPrivateKeyInfo` (what [`encrypt_der`] writes).
///
/// # Errors
/// [`Pkcs8Error::Encoding`] or [`Pkcs8Error::Malformed`].
pub fn check_der(der: &[u8]) -> Result<(), Pkcs8Error> {
    parse_encrypted(der).map(drop)
}

/// Decrypts an encrypted P-256 private key (see [`encrypt`]; keys written by `openssl
/// pkcs8 -topk8 -v2 aes-256-cbc [-scrypt]` too: PBES2, scrypt or PBKDF2-HMAC-SHA-2,
/// AES-CBC), after the checks of [`check`]. The returned key is zeroized when dropped.
///
/// # Errors
/// [`Pkcs8Error::WrongPassword`] when decryption fails (a wrong password, or altered
/// encrypted data: with AES-CBC the two look alike); [`Pkcs8Error::Encoding`] or
/// [`Pkcs8Error::Malformed`] for a truncated, edited, unencrypted or foreign key.
pub fn decrypt(pem: &[u8], password: &Password) -> Result<SecretKey, Pkcs8Error> {
    let plain = decrypt_der(&decode_pem(pem)?, password)?;
    // With a wrong password the plaintext is noise that is not DER.
    let info = PrivateKeyInfo::from_der(&plain).map_err(|_| Pkcs8Error::WrongPassword)?;
    if info
        .algorithm
        .assert_oids(ALGORITHM_OID, NistP256::OID)
        .is_err()
    {
        return Err(malformed("the key is not an EC key on curve P-256"));
    }
    SecretKey::try_from(info)
        .map_err(|_| malformed("the decrypted key is not a valid P-256 private key"))
}

/// Decrypts the DER of an `EncryptedPrivateKeyInfo` (what [`encrypt_der`] writes, or
/// the inside of any key [`decrypt`] opens), after the checks of [`check`], and returns
/// the plaintext, zeroized when dropped. The caller parses it: a wrong password that
/// happens to leave a valid CBC padding gives noise, which its parser refuses.
///
/// # Errors
/// [`Pkcs8Error::WrongPassword`] when decryption fails (a wrong password, or altered
/// encrypted data: with AES-CBC the two look alike); [`Pkcs8Error::Encoding`] or
/// [`Pkcs8Error::Malformed`] for a truncated, edited or foreign structure.
pub fn decrypt_der(der: &[u8], password: &Password) -> Result<Zeroizing<Vec<u8>>, Pkcs8Error> {
    let (info, params) = parse_encrypted(der)?;
    let mut buf = Zeroizing::new(info.encrypted_data.to_vec());
    let len = match params.decrypt_in_place(password.expose_secret().as_bytes(), &mut buf) {
        Ok(plain) => plain.len(),
        // A bad CBC padding: pkcs5 0.7 reports it as `EncryptFailed`.
        Err(pkcs5::Error::DecryptFailed | pkcs5::Error::EncryptFailed) => {
            return Err(Pkcs8Error::WrongPassword)
        }
        Err(_) => {
            return Err(malformed(
                "its encryption parameters are invalid or unsupported (supported: scrypt, or \
                 PBKDF2 with HMAC-SHA-224/256/384/512)",
            ))
        }
    };
    buf.truncate(len);
    Ok(buf)
}

/// Reads and decrypts an encrypted P-256 private key file (see [`decrypt`]). Never
/// modifies the file. The returned key is zeroized when dropped.
///
/// # Errors
/// [`FileError::WrongPassword`] when decryption fails (wrong password, or altered
/// encrypted data); [`FileError::Malformed`] for a truncated, edited, unencrypted or
/// foreign file; [`FileError::Read`].
pub fn decrypt_file(path: &Path, password: &Password) -> Result<SecretKey, FileError> {
    let path_buf = || PathBuf::from(path);
    let pem = Zeroizing::new(std::fs::read(path).map_err(|source| FileError::Read {
        path: path_buf(),
        source,
    })?);
    decrypt(&pem, password).map_err(|e| match e {
        Pkcs8Error::WrongPassword => FileError::WrongPassword { path: path_buf() },
        source => FileError::Malformed {
            path: path_buf(),
            source,
        },
    })
}

/// Decodes the PEM block of an encrypted private key. Returns the DER of its
/// `EncryptedPrivateKeyInfo`.
fn decode_pem(pem: &[u8]) -> Result<Vec<u8>, Pkcs8Error> {
    let (label, der) = pkcs8::der::pem::decode_vec(pem).map_err(|e| Pkcs8Error::Encoding {
        what: "not a complete PEM block",
        source: e.into(),
    })?;
    if label != PEM_LABEL {
        return Err(malformed(
            if label == "PRIVATE KEY" || label == "EC PRIVATE KEY" {
                "the private key is not encrypted; TKE keeps only password-protected keys"
            } else {
                "the PEM block is not an ENCRYPTED PRIVATE KEY"
            },
        ));
    }
    Ok(der)
}

/// Parses an `EncryptedPrivateKeyInfo` strictly and checks that it uses PBES2 with AES-CBC,
/// KDF parameters within limits, and whole AES blocks. Returns it and its PBES2 parameters.
fn parse_encrypted(
    der: &[u8],
) -> Result<(EncryptedPrivateKeyInfo<'_>, pbes2::Parameters<'_>), Pkcs8Error> {
    let info = EncryptedPrivateKeyInfo::from_der(der).map_err(|source| Pkcs8Error::Encoding {
        what: "not a valid EncryptedPrivateKeyInfo",
        source,
    })?;
    let params = match info.encryption_algorithm {
        pkcs5::EncryptionScheme::Pbes2(ref params) => params.clone(),
        _ => {
            return Err(malformed(
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
        return Err(malformed("its cipher is not AES-CBC"));
    }
    match params.kdf {
        pbes2::Kdf::Scrypt(s) => {
            // Saturating: an edited N must be refused, not overflow.
            let memory = (128 * u64::from(s.block_size)).saturating_mul(s.cost_parameter);
            if s.cost_parameter > MAX_SCRYPT_N
                || memory > MAX_SCRYPT_MEMORY
                || s.parallelization > MAX_SCRYPT_P
            {
                return Err(malformed(
                    "its scrypt parameters exceed the limits (at most 256 MiB of memory, N <= 2^20, p <= 16)",
                ));
            }
        }
        pbes2::Kdf::Pbkdf2(p) => {
            if p.iteration_count > MAX_PBKDF2_ITERATIONS {
                return Err(malformed(
                    "its PBKDF2 iteration count exceeds the limit of 10,000,000",
                ));
            }
        }
        _ => {
            return Err(malformed(
                "its key derivation function is not scrypt or PBKDF2",
            ))
        }
    }
    if info.encrypted_data.is_empty() || info.encrypted_data.len() % 16 != 0 {
        return Err(malformed(
            "the encrypted data is not a whole number of AES blocks (the file was cut short or edited)",
        ));
    }
    Ok((info, params))
}

fn malformed(problem: &'static str) -> Pkcs8Error {
    Pkcs8Error::Malformed { problem }
}

#[cfg(test)]
mod tests {
    use pkcs8::der::{pem, Encode};

    use super::*;

    const PW: &str = "Tr0ub4dor&3-test";

    fn pw() -> Password {
        Password::new(PW)
    }

    /// A new key and its encrypted PEM under [`PW`].
    fn encrypted() -> (SecretKey, Zeroizing<String>) {
        let secret = SecretKey::random(&mut rand_core::OsRng);
        let pem = encrypt(&secret, &pw()).unwrap();
        (secret, pem)
    }

    /// Decodes `pem`, lets `edit` change its `EncryptedPrivateKeyInfo`, and encodes it
    /// again as PEM.
    fn edit_info(pem: &str, edit: impl FnOnce(&mut EncryptedPrivateKeyInfo<'_>)) -> String {
        let (_, der) = pem::decode_vec(pem.as_bytes()).unwrap();
        let mut info = EncryptedPrivateKeyInfo::from_der(&der).unwrap();
        edit(&mut info);
        pem::encode_string(PEM_LABEL, LineEnding::LF, &info.to_der().unwrap()).unwrap()
    }

    /// `pem` with its scrypt parameters changed by `edit` (the data is not re-encrypted:
    /// the limits are checked before any key derivation).
    fn with_scrypt(pem: &str, edit: impl FnOnce(&mut pbes2::ScryptParams<'_>)) -> String {
        edit_info(pem, |info| {
            let pkcs5::EncryptionScheme::Pbes2(params) = &mut info.encryption_algorithm else {
                panic!("not PBES2");
            };
            let pbes2::Kdf::Scrypt(s) = &mut params.kdf else {
                panic!("not scrypt");
            };
            edit(s);
        })
    }

    #[test]
    fn round_trip_with_the_documented_parameters() {
        let (secret, pem) = encrypted();
        assert!(
            pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"),
            "{}",
            *pem
        );
        check(pem.as_bytes()).unwrap();
        let back = decrypt(pem.as_bytes(), &pw()).unwrap();
        assert_eq!(back.to_bytes(), secret.to_bytes());

        let (_, der) = pem::decode_vec(pem.as_bytes()).unwrap();
        let (_, params) = parse_encrypted(&der).unwrap();
        let pbes2::Kdf::Scrypt(s) = params.kdf else {
            panic!("not scrypt: {:?}", params.kdf);
        };
        assert_eq!(
            (
                s.cost_parameter,
                u32::from(s.block_size),
                u32::from(s.parallelization)
            ),
            (1 << SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)
        );
        assert_eq!(s.salt.len(), 16);
        assert!(matches!(
            params.encryption,
            pbes2::EncryptionScheme::Aes256Cbc { .. }
        ));
        // A fresh salt and IV each time: the same key and password never give the same text.
        assert_ne!(*encrypt(&secret, &pw()).unwrap(), *pem);
    }

    #[test]
    fn any_der_secret_round_trips_under_the_same_encryption() {
        // An OCTET STRING, as a key part's structure holds; a cheap cost keeps it fast.
        let plain = [0x04, 0x03, 0xa1, 0xb2, 0xc3];
        let cost = ScryptCost {
            log_n: 10,
            r: 8,
            p: 1,
        };
        let der = encrypt_der(&plain, &pw(), cost).unwrap();
        check_der(&der).unwrap();
        assert_eq!(decrypt_der(&der, &pw()).unwrap().as_slice(), plain);
        let (info, params) = parse_encrypted(&der).unwrap();
        assert!(!info.encrypted_data.windows(plain.len()).any(|w| w == plain));
        assert!(matches!(
            params.encryption,
            pbes2::EncryptionScheme::Aes256Cbc { .. }
        ));
        // A wrong password fails the CBC padding, or (rarely) leaves noise that the
        // caller's parser refuses: never the plaintext.
        match decrypt_der(&der, &Password::new("not-the-password")) {
            Err(e) => assert!(matches!(e, Pkcs8Error::WrongPassword), "{e:?}"),
            Ok(noise) => assert_ne!(noise.as_slice(), plain),
        }
        // A cut structure is malformed, not a wrong password.
        let err = check_der(&der[..der.len() - 1]).unwrap_err();
        assert!(matches!(err, Pkcs8Error::Encoding { .. }), "{err:?}");
    }

    #[test]
    fn a_wrong_password_is_its_own_kind_and_shows_no_secret() {
        let (secret, pem) = encrypted();
        let err = decrypt(pem.as_bytes(), &Password::new("not-the-password")).unwrap_err();
        assert!(matches!(err, Pkcs8Error::WrongPassword), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("wrong password") && msg.contains("altered"),
            "{msg}"
        );
        let hex: String = secret
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        for text in [msg, format!("{err:?}")] {
            assert!(
                !text.contains("not-the-password") && !text.contains(&hex),
                "{text}"
            );
        }
        // The right password still works.
        decrypt(pem.as_bytes(), &pw()).unwrap();
    }

    #[test]
    fn one_edited_ciphertext_byte_reads_as_a_wrong_password() {
        let (_, pem) = encrypted();
        let (_, mut der) = pem::decode_vec(pem.as_bytes()).unwrap();
        // Flip a bit in the last byte: the last CBC block decrypts to noise.
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let edited = pem::encode_string(PEM_LABEL, LineEnding::LF, &der).unwrap();
        check(edited.as_bytes()).unwrap();
        let err = decrypt(edited.as_bytes(), &pw()).unwrap_err();
        assert!(matches!(err, Pkcs8Error::WrongPassword), "{err:?}");
    }

    #[test]
    fn truncated_or_edited_text_is_malformed_and_says_what_is_wrong() {
        let (_, pem) = encrypted();
        let half = &pem.as_bytes()[..pem.len() / 2];
        let mut bad_char = pem.as_bytes().to_vec();
        bad_char["-----BEGIN ENCRYPTED PRIVATE KEY-----\n".len() + 10] = b'*';
        for edited in [half, &bad_char[..]] {
            let err = decrypt(edited, &pw()).unwrap_err();
            assert!(
                matches!(
                    err,
                    Pkcs8Error::Encoding {
                        what: "not a complete PEM block",
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(matches!(check(edited), Err(Pkcs8Error::Encoding { .. })));
        }

        // A well-formed structure whose encrypted data lost its last 5 bytes.
        let cut = edit_info(&pem, |info| {
            info.encrypted_data = &info.encrypted_data[..info.encrypted_data.len() - 5];
        });
        let err = decrypt(cut.as_bytes(), &pw()).unwrap_err();
        assert!(matches!(err, Pkcs8Error::Malformed { .. }), "{err:?}");
        assert!(
            err.to_string().contains("whole number of AES blocks"),
            "{err}"
        );

        // DER that is not an EncryptedPrivateKeyInfo.
        let junk = pem::encode_string(PEM_LABEL, LineEnding::LF, &[0x30, 0x03, 1, 2, 3]).unwrap();
        let err = check(junk.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                Pkcs8Error::Encoding {
                    what: "not a valid EncryptedPrivateKeyInfo",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn unencrypted_and_foreign_pem_are_refused() {
        let secret = SecretKey::random(&mut rand_core::OsRng);
        let plain = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
        let err = decrypt(plain.as_bytes(), &pw()).unwrap_err();
        assert!(matches!(err, Pkcs8Error::Malformed { .. }), "{err:?}");
        assert!(err.to_string().contains("not encrypted"), "{err}");

        let cert = pem::encode_string("CERTIFICATE", LineEnding::LF, &[0x30, 0x00]).unwrap();
        let err = check(cert.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("not an ENCRYPTED PRIVATE KEY"),
            "{err}"
        );
    }

    #[test]
    fn a_kdf_cost_over_the_limits_is_refused_before_any_derivation() {
        let (_, pem) = encrypted();
        type Edit = fn(&mut pbes2::ScryptParams<'_>);
        let over: [(&str, Edit); 4] = [
            // 2^21 · 128 · 1 = 256 MiB, but N itself is over 2^20.
            ("N", |s| {
                s.cost_parameter = 1 << 21;
                s.block_size = 1;
            }),
            // 2^20 · 128 · 8 = 1 GiB.
            ("memory", |s| s.cost_parameter = 1 << 20),
            ("p", |s| s.parallelization = MAX_SCRYPT_P + 1),
            // So large that 128 · r · N does not fit in 64 bits.
            ("overflow", |s| {
                s.cost_parameter = u64::MAX;
                s.block_size = u16::MAX;
            }),
        ];
        for (what, edit) in over {
            let edited = with_scrypt(&pem, edit);
            for err in [
                check(edited.as_bytes()).unwrap_err(),
                decrypt(edited.as_bytes(), &pw()).unwrap_err(),
            ] {
                assert!(
                    matches!(err, Pkcs8Error::Malformed { .. }),
                    "{what}: {err:?}"
                );
                assert!(
                    err.to_string().contains("exceed the limits"),
                    "{what}: {err}"
                );
            }
        }
        // At the limits exactly, the structure is accepted (decryption then fails: the
        // data was encrypted with other parameters; here N = 2^11 keeps the test fast).
        let at = with_scrypt(&pem, |s| {
            s.cost_parameter = 1 << 11;
            s.parallelization = MAX_SCRYPT_P;
        });
        check(at.as_bytes()).unwrap();
        assert!(matches!(
            decrypt(at.as_bytes(), &pw()),
            Err(Pkcs8Error::WrongPassword)
        ));
    }

    #[test]
    fn a_key_file_is_named_in_its_errors() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("ca.key.pem");
        let (secret, pem) = encrypted();
        std::fs::write(&path, pem.as_bytes()).unwrap();
        let back = decrypt_file(&path, &pw()).unwrap();
        assert_eq!(back.public_key(), secret.public_key());

        let err = decrypt_file(&path, &Password::new("wrong")).unwrap_err();
        assert!(
            matches!(&err, FileError::WrongPassword { path: p } if *p == path),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "wrong password for the key file {}, or its encrypted data was altered \
                 (with AES-CBC encryption the two look alike)",
                path.display()
            )
        );

        std::fs::write(&path, &pem.as_bytes()[..40]).unwrap();
        let err = decrypt_file(&path, &pw()).unwrap_err();
        assert!(
            matches!(&err, FileError::Malformed { path: p, source: Pkcs8Error::Encoding { .. } } if *p == path),
            "{err}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );

        let missing = d.path().join("missing.key.pem");
        let err = decrypt_file(&missing, &pw()).unwrap_err();
        assert!(
            matches!(&err, FileError::Read { path: p, .. } if *p == missing),
            "{err}"
        );
    }
}
