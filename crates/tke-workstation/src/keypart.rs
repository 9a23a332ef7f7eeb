//! Master key part files: one part of a master key, encrypted under its owner's password
//! (the encryption of signature key files), with its description and verification
//! pattern readable without the password.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
};

use der::{
    asn1::{OctetStringRef, Utf8StringRef},
    pem::LineEnding,
    Decode, Encode, Sequence,
};
use tke_pkcs8::{Pkcs8Error, ScryptCost};
use tke_proto::{MasterKey, Vp};
use zeroize::Zeroizing;

use crate::{
    created::{remove_files, safe_stem, CreationRecord, Listing},
    error::io_err,
    FilesDir, KeyFileError, Password, Result,
};

/// The suffix of a master key part file.
pub const PART_SUFFIX: &str = ".mkpart.toml";
/// The suffix of the record of when a master key part was added (decimal Unix time in
/// nanoseconds): KEYNUMs follow it, so adding a part never renumbers the others.
pub const PART_CREATED_SUFFIX: &str = ".mkpart.created";
/// The PEM label of the encrypted part inside a part file. Not `ENCRYPTED PRIVATE KEY`:
/// the content is no private key, and no tool should take it for one.
pub const PART_PEM_LABEL: &str = "TKE ENCRYPTED MASTER KEY PART";

/// The format version that part files carry.
const FORMAT_VERSION: i64 = 1;

/// The creation records of master key parts: `<stem>.mkpart.created` beside
/// `<stem>.mkpart.toml` (not `<stem>.created`, the records of signature keys).
const RECORDS: CreationRecord = CreationRecord {
    file_suffix: PART_SUFFIX,
    record_suffix: PART_CREATED_SUFFIX,
};

/// The first lines of every part file: what it is, for whoever opens it.
const FILE_HEADER: &str = "\
# A TKE master key part: one of the parts whose combination is a master key, encrypted
# with its owner's password (PBES2: scrypt and AES-256-CBC). It may be the only backup of
# that master key: keep this file, and its password. The description and the verification
# pattern (vp) are not secret; the encrypted part binds both.
";

/// A master key part: 32 bytes, never all zero. Zeroized when dropped; its `Debug` shows
/// the verification pattern, never the value, which comes out only through
/// [`KeyPart::expose_secret`].
#[derive(Clone)]
pub struct KeyPart(MasterKey);

impl KeyPart {
    /// The length of a part in bytes.
    pub const LEN: usize = 32;

    /// A fresh random part.
    pub fn random() -> Self {
        loop {
            // All zeros has probability 2^-256; refused all the same.
            if let Ok(part) = Self::new(MasterKey::random()) {
                return part;
            }
        }
    }

    /// A part from its 32 bytes.
    ///
    /// # Errors
    /// [`KeyFileError::KeyPartLength`] for another length; [`KeyFileError::KeyPartZero`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let key = MasterKey::from_slice(bytes)
            .map_err(|_| KeyFileError::KeyPartLength { bytes: bytes.len() })?;
        Self::new(key)
    }

    /// A part from 64 hex digits, upper or lower case; white space anywhere (line
    /// breaks, spaces between groups) is ignored.
    ///
    /// # Errors
    /// [`KeyFileError::KeyPartNotHex`] naming the position of the first character that
    /// is not a hex digit (never the character: the value is secret);
    /// [`KeyFileError::KeyPartDigits`] for another number of digits;
    /// [`KeyFileError::KeyPartZero`].
    pub fn from_hex(text: &str) -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; Self::LEN]);
        let mut digits = 0usize;
        for c in text.chars().filter(|c| !c.is_whitespace()) {
            digits += 1;
            let nibble = c
                .to_digit(16)
                .ok_or(KeyFileError::KeyPartNotHex { position: digits })?;
            if let Some(b) = bytes.get_mut((digits - 1) / 2) {
                // A hex digit is below 16: the cast loses nothing.
                *b = (*b << 4) | nibble as u8;
            }
        }
        if digits != 2 * Self::LEN {
            return Err(KeyFileError::KeyPartDigits { digits });
        }
        Self::from_bytes(bytes.as_slice())
    }

    fn new(key: MasterKey) -> Result<Self> {
        if key.expose_secret().iter().all(|&b| b == 0) {
            return Err(KeyFileError::KeyPartZero);
        }
        Ok(Self(key))
    }

    /// The part's bytes. Use only to combine parts into a master key.
    pub fn expose_secret(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }

    /// Its verification pattern (`docs/protocol.md` §12, as for a master key).
    pub fn vp(&self) -> Vp {
        self.0.vp()
    }
}

impl fmt::Debug for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPart(vp={}, value=<redacted>)", self.vp())
    }
}

/// The description of a master key part, by which commands name it: 1 to 64 characters,
/// printable, with the rules of administrator names ([`tke_proto::label_problem`]: no
/// white space at either end, no control or invisible format characters, no white space
/// but the ASCII space). Unique on a workstation, look-alikes included
/// ([`PartDescription::looks_like`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartDescription(String);

impl PartDescription {
    /// The longest description.
    pub const MAX_CHARS: usize = 64;

    /// Validates a description.
    ///
    /// # Errors
    /// [`KeyFileError::PartDescription`] saying what is wrong with it.
    pub fn new(description: &str) -> Result<Self> {
        match description_problem(description) {
            None => Ok(Self(description.to_owned())),
            Some(problem) => Err(KeyFileError::PartDescription {
                description: description.chars().take(70).collect(),
                chars: description.chars().count(),
                problem,
            }),
        }
    }

    /// The description.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether two descriptions look the same, as administrator names do
    /// ([`tke_proto::AdminName::looks_like`]): `part 1`, `Part 1` and `part l` do.
    pub fn looks_like(&self, other: &PartDescription) -> bool {
        tke_proto::labels_look_alike(&self.0, &other.0)
    }
}

impl fmt::Debug for PartDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PartDescription({:?})", self.0)
    }
}

impl fmt::Display for PartDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::str::FromStr for PartDescription {
    type Err = KeyFileError;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

fn description_problem(description: &str) -> Option<&'static str> {
    if description.is_empty() {
        Some("it is empty")
    } else if description.chars().count() > PartDescription::MAX_CHARS {
        Some("it is longer than 64 characters")
    } else {
        tke_proto::label_problem(description)
    }
}

/// The encrypted content of a part file (DER), which binds the description to the value:
///
/// ```asn1
/// KeyPartInfo ::= SEQUENCE {
///     version      INTEGER (1),
///     description  UTF8String (SIZE (1..64)),   -- as the file shows it
///     part         OCTET STRING (SIZE (32))     -- the part's value
/// }
/// ```
#[derive(Sequence)]
struct KeyPartInfo<'a> {
    version: u8,
    description: Utf8StringRef<'a>,
    part: OctetStringRef<'a>,
}

/// The fields of a part file (TOML).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PartToml {
    version: i64,
    description: String,
    vp: String,
    encrypted: String,
}

/// One master key part file of the workstation: its description and verification
/// pattern, read without its password. [`KeyPartEntry::open`] decrypts the part.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyPartEntry {
    /// The description the file shows.
    pub description: PartDescription,
    /// The verification pattern the file shows.
    pub vp: Vp,
    /// The part file (`<stem>.mkpart.toml`).
    pub path: PathBuf,
}

impl KeyPartEntry {
    /// Reads and decrypts the part, and checks that it is the part this entry shows: the
    /// description encrypted with the value must be the entry's, and the value must have
    /// the entry's verification pattern. Never modifies the file. The part is zeroized
    /// when dropped.
    ///
    /// # Errors
    /// [`KeyFileError::PartWrongPassword`] when decryption fails (a wrong password, or
    /// altered encrypted data: with AES-CBC the two look alike);
    /// [`KeyFileError::PartAltered`] when the file's description or verification pattern
    /// is not that of the encrypted part (an edited file, or the encrypted data of another
    /// part file); [`KeyFileError::PartToml`], [`KeyFileError::MalformedPartFile`],
    /// [`KeyFileError::PartFileEncoding`] and the like for a damaged file;
    /// [`KeyFileError::Io`].
    pub fn open(&self, password: &Password) -> Result<KeyPart> {
        let file = read_part_file(&self.path)?;
        let plain = tke_pkcs8::decrypt_der(&file.encrypted, password)
            .map_err(|e| part_file_error(&self.path, self.description.as_str(), e))?;
        let wrong_password = || KeyFileError::PartWrongPassword {
            description: self.description.to_string(),
            path: self.path.clone(),
        };
        // With a wrong password that leaves a valid padding, the plaintext is noise.
        let info = KeyPartInfo::from_der(&plain).map_err(|_| wrong_password())?;
        let altered = |problem| KeyFileError::PartAltered {
            path: self.path.clone(),
            description: self.description.to_string(),
            problem,
        };
        if i64::from(info.version) != FORMAT_VERSION {
            return Err(KeyFileError::MalformedPartFile {
                path: self.path.clone(),
                problem: "its encrypted content has an unknown version",
            });
        }
        let part = KeyPart::from_bytes(info.part.as_bytes()).map_err(|_| {
            KeyFileError::MalformedPartFile {
                path: self.path.clone(),
                problem: "its encrypted content is not a 32-byte part that is not all zeros",
            }
        })?;
        if info.description.as_str() != self.description.as_str()
            || file.description != self.description
        {
            return Err(altered(
                "its description is not the one encrypted with the part",
            ));
        }
        if part.vp() != self.vp || file.vp != self.vp {
            return Err(altered(
                "the decrypted part does not have the verification pattern the file shows",
            ));
        }
        Ok(part)
    }
}

/// The master key parts of a directory, in the order they were added (their
/// `<stem>.mkpart.created` records, else their files' modification times), then by
/// description and file; and the files that could not be read.
pub type KeyPartListing = Listing<KeyPartEntry>;

impl KeyPartListing {
    /// The KEYNUM (1-based) of the part in this file, if listed.
    pub fn keynum_of(&self, path: &Path) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.path == path)
            .map(|i| i + 1)
    }

    /// Checks that a new part may have `description`: no part listed has it, or one that
    /// looks the same ([`PartDescription::looks_like`]).
    ///
    /// # Errors
    /// [`KeyFileError::PartDescriptionTaken`] naming the part that has it.
    pub fn check_new_description(&self, description: &PartDescription) -> Result<()> {
        match self
            .entries
            .iter()
            .find(|e| e.description.looks_like(description))
        {
            Some(taken) => Err(KeyFileError::PartDescriptionTaken {
                description: description.to_string(),
                existing: taken.description.to_string(),
                path: taken.path.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The part described exactly as `description`.
    ///
    /// # Errors
    /// [`KeyFileError::UnknownPart`] (with the descriptions there are);
    /// [`KeyFileError::AmbiguousPart`] when several files have it (copied in from several
    /// workstations).
    pub fn find(&self, description: &str) -> Result<&KeyPartEntry> {
        let mut found = self
            .entries
            .iter()
            .filter(|e| e.description.as_str() == description);
        match (found.next(), found.next()) {
            (Some(entry), None) => Ok(entry),
            (None, _) => Err(KeyFileError::UnknownPart {
                description: description.to_owned(),
                known: self
                    .entries
                    .iter()
                    .map(|e| e.description.to_string())
                    .collect(),
            }),
            (Some(_), Some(_)) => Err(KeyFileError::AmbiguousPart {
                description: description.to_owned(),
                paths: self
                    .entries
                    .iter()
                    .filter(|e| e.description.as_str() == description)
                    .map(|e| e.path.clone())
                    .collect(),
            }),
        }
    }
}

impl FilesDir {
    /// Lists the master key parts: every `<stem>.mkpart.toml`, parsed strictly, its
    /// description and verification pattern checked and its encrypted part's structure
    /// checked without decrypting it; a file that fails is reported in
    /// [`KeyPartListing::problems`]. Other files are ignored. Needs no password.
    ///
    /// # Errors
    /// [`KeyFileError::Io`] only when the directory itself cannot be listed.
    pub fn key_parts(&self) -> Result<KeyPartListing> {
        let mut listing = KeyPartListing::default();
        for dirent in fs::read_dir(self.path()).map_err(io_err("list", self.path()))? {
            let dirent = dirent.map_err(io_err("list", self.path()))?;
            let name = dirent.file_name();
            // Names that are not UTF-8 are never ours.
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') || !name.ends_with(PART_SUFFIX) {
                continue;
            }
            let path = self.path().join(name);
            match read_part_file(&path) {
                Ok(file) => listing.entries.push(KeyPartEntry {
                    description: file.description,
                    vp: file.vp,
                    path,
                }),
                Err(problem) => listing.problems.push(problem),
            }
        }
        // Creation order, so that adding a part never renumbers the others.
        listing.entries.sort_by_cached_key(|e| {
            (
                RECORDS.created_at(&e.path),
                e.description.clone(),
                e.path.clone(),
            )
        });
        Ok(listing)
    }

    /// Saves a master key part: `<stem>.mkpart.toml`, 0600, written atomically and never
    /// over an existing file, with the description and verification pattern in the clear
    /// and the part encrypted with `password` ([`ScryptCost::NEW`], as signature key
    /// files); and its creation record. The stem is the description made safe for a file
    /// name, then `-` and 8 random hex digits, so that the files of several workstations
    /// copied into one directory never overwrite one another.
    ///
    /// # Errors
    /// [`KeyFileError::PartEmptyPassword`]; [`KeyFileError::PartDescriptionTaken`] when a
    /// part of this workstation has the description or one that looks the same;
    /// [`KeyFileError::PartEncrypt`]; [`KeyFileError::Io`] (also when the directory
    /// cannot be listed). On error no file is left behind.
    pub fn write_key_part(
        &self,
        description: &PartDescription,
        part: &KeyPart,
        password: &Password,
    ) -> Result<KeyPartEntry> {
        self.write_key_part_with_cost(description, part, password, ScryptCost::NEW)
    }

    /// [`FilesDir::write_key_part`] with another scrypt cost: for tests that write many
    /// parts. Whatever writes parts for users calls [`FilesDir::write_key_part`].
    ///
    /// # Errors
    /// As [`FilesDir::write_key_part`]; [`KeyFileError::PartEncrypt`] also when `cost` is
    /// not a valid scrypt cost.
    pub fn write_key_part_with_cost(
        &self,
        description: &PartDescription,
        part: &KeyPart,
        password: &Password,
        cost: ScryptCost,
    ) -> Result<KeyPartEntry> {
        if password.is_empty() {
            return Err(KeyFileError::PartEmptyPassword {
                description: description.to_string(),
            });
        }
        self.key_parts()?.check_new_description(description)?;
        let encrypt_error = |source| KeyFileError::PartEncrypt {
            description: description.to_string(),
            source,
        };
        let plain = encode_info(description, part).map_err(|e| encrypt_error(e.into()))?;
        let der = tke_pkcs8::encrypt_der(&plain, password, cost).map_err(encrypt_error)?;
        let pem = der::pem::encode_string(PART_PEM_LABEL, LineEnding::LF, &der)
            .map_err(|e| encrypt_error(der::Error::from(e).into()))?;
        let vp = part.vp();
        let text = format!(
            "{FILE_HEADER}version = {FORMAT_VERSION}\ndescription = {}\nvp = \"{}\"\nencrypted = \"\"\"\n{pem}\"\"\"\n",
            toml::Value::String(description.to_string()),
            vp.to_hex()
        );
        let mut id = [0u8; 4];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
        let stem = format!(
            "{}-{}",
            safe_stem(description.as_str()),
            id.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let path = self.path().join(format!("{stem}{PART_SUFFIX}"));
        RECORDS.write_new(&[(&path, text.as_bytes())], &path)?;
        Ok(KeyPartEntry {
            description: description.clone(),
            vp,
            path,
        })
    }

    /// Removes a master key part file and its creation record. A file already gone is
    /// not an error.
    ///
    /// # Errors
    /// [`KeyFileError::Io`] when a file cannot be removed.
    pub fn remove_key_part(&self, entry: &KeyPartEntry) -> Result<()> {
        let record = RECORDS.path(&entry.path);
        remove_files(self.path(), &[&entry.path, &record])
    }
}

/// The DER of a part's [`KeyPartInfo`], in a buffer zeroized when dropped.
fn encode_info(description: &PartDescription, part: &KeyPart) -> der::Result<Zeroizing<Vec<u8>>> {
    let info = KeyPartInfo {
        version: 1,
        description: Utf8StringRef::new(description.as_str())?,
        part: OctetStringRef::new(part.expose_secret())?,
    };
    // The capacity is reserved first: a growing vector would leave copies behind.
    let len = usize::try_from(info.encoded_len()?)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(len));
    info.encode_to_vec(&mut buf)?;
    Ok(buf)
}

/// What a part file shows, checked: its description, its verification pattern, and the
/// DER of its encrypted part (structure checked, not decrypted).
struct PartFile {
    description: PartDescription,
    vp: Vp,
    encrypted: Vec<u8>,
}

fn read_part_file(path: &Path) -> Result<PartFile> {
    let malformed = |problem| KeyFileError::MalformedPartFile {
        path: path.to_path_buf(),
        problem,
    };
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    let text = core::str::from_utf8(&bytes).map_err(|_| malformed("it is not UTF-8 text"))?;
    let toml: PartToml = toml::from_str(text).map_err(|e| KeyFileError::PartToml {
        path: path.to_path_buf(),
        source: Box::new(e),
    })?;
    if toml.version != FORMAT_VERSION {
        return Err(KeyFileError::PartFileVersion {
            path: path.to_path_buf(),
            version: toml.version,
        });
    }
    let description = match description_problem(&toml.description) {
        None => PartDescription(toml.description),
        Some(problem) => {
            return Err(KeyFileError::PartFileDescription {
                path: path.to_path_buf(),
                problem,
            })
        }
    };
    let vp = Vp::from_hex(&toml.vp)
        .map_err(|_| malformed("its vp is not a verification pattern of 64 hex digits"))?;
    let (label, encrypted) = der::pem::decode_vec(toml.encrypted.as_bytes()).map_err(|e| {
        KeyFileError::PartFileEncoding {
            path: path.to_path_buf(),
            what: "its encrypted part is not a complete PEM block",
            source: e.into(),
        }
    })?;
    if label != PART_PEM_LABEL {
        return Err(malformed(
            "its encrypted part is not a TKE ENCRYPTED MASTER KEY PART PEM block",
        ));
    }
    tke_pkcs8::check_der(&encrypted).map_err(|e| part_file_error(path, description.as_str(), e))?;
    Ok(PartFile {
        description,
        vp,
        encrypted,
    })
}

/// The error of the part file `path` (described as `description`) for what the
/// encryption format found.
fn part_file_error(path: &Path, description: &str, e: Pkcs8Error) -> KeyFileError {
    let path = path.to_path_buf();
    match e {
        Pkcs8Error::WrongPassword => KeyFileError::PartWrongPassword {
            description: description.to_owned(),
            path,
        },
        Pkcs8Error::Encoding { what, source } => {
            KeyFileError::PartFileEncoding { path, what, source }
        }
        Pkcs8Error::Malformed { problem } => KeyFileError::MalformedPartFile { path, problem },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DER of [`KeyPartInfo`] is the documented structure, byte for byte.
    #[test]
    fn key_part_info_golden_vector() {
        let part = KeyPart::from_bytes(&[0x11; 32]).unwrap();
        let der = encode_info(&PartDescription::new("a").unwrap(), &part).unwrap();
        let expected = [
            &[0x30, 0x28, 0x02, 0x01, 0x01, 0x0c, 0x01, b'a', 0x04, 0x20][..],
            &[0x11; 32],
        ]
        .concat();
        assert_eq!(der.as_slice(), expected);
        let back = KeyPartInfo::from_der(&der).unwrap();
        assert_eq!(back.description.as_str(), "a");
        assert_eq!(back.part.as_bytes(), &[0x11; 32]);
        // Trailing bytes are refused (strict decoding).
        let mut longer = der.to_vec();
        longer.push(0);
        assert!(KeyPartInfo::from_der(&longer).is_err());
    }

    #[test]
    fn hex_values_parse_with_white_space_and_say_what_is_wrong() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let part = KeyPart::from_hex(hex).unwrap();
        assert_eq!(part.expose_secret()[..4], [0x00, 0x11, 0x22, 0x33]);
        assert_eq!(part.expose_secret()[31], 0xff);
        let spaced = format!("  {} \n {}\n", &hex[..32], &hex[32..]);
        assert_eq!(
            KeyPart::from_hex(&spaced).unwrap().expose_secret(),
            part.expose_secret()
        );
        for (text, want) in [
            (&hex[..62], KeyFileError::KeyPartDigits { digits: 62 }),
            (&hex[..63], KeyFileError::KeyPartDigits { digits: 63 }),
            ("", KeyFileError::KeyPartDigits { digits: 0 }),
        ] {
            let got = KeyPart::from_hex(text).unwrap_err();
            assert_eq!(format!("{got:?}"), format!("{want:?}"));
        }
        let long = format!("{hex}00");
        assert!(matches!(
            KeyPart::from_hex(&long),
            Err(KeyFileError::KeyPartDigits { digits: 66 })
        ));
        let bad = format!("0 1g{}", &hex[3..]);
        assert!(matches!(
            KeyPart::from_hex(&bad),
            Err(KeyFileError::KeyPartNotHex { position: 3 })
        ));
        assert!(matches!(
            KeyPart::from_hex(&"0".repeat(64)),
            Err(KeyFileError::KeyPartZero)
        ));
        assert!(matches!(
            KeyPart::from_bytes(&[1; 31]),
            Err(KeyFileError::KeyPartLength { bytes: 31 })
        ));
    }

    #[test]
    fn descriptions_follow_the_label_rules() {
        assert!(PartDescription::new("alice's part, 2024").is_ok());
        assert!(PartDescription::new(&"x".repeat(64)).is_ok());
        for (text, problem) in [
            ("", "it is empty"),
            (&"x".repeat(65)[..], "longer than 64"),
            (" a", "white space"),
            ("a\tb", "control"),
            ("a\u{200b}b", "invisible"),
        ] {
            let err = PartDescription::new(text).unwrap_err();
            assert!(
                matches!(err, KeyFileError::PartDescription { .. }),
                "{err:?}"
            );
            assert!(err.to_string().contains(problem), "{err}");
        }
        let a = PartDescription::new("part 1").unwrap();
        assert!(a.looks_like(&PartDescription::new("Part l").unwrap()));
        assert!(!a.looks_like(&PartDescription::new("part 2").unwrap()));
    }
}
