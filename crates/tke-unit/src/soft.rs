//! The soft backend: a unit's secrets in one DER file of its directory (mode 0600), or
//! in memory, computed with the software references of [`tke_proto::transport`] and
//! [`tke_proto::vp`].

use core::fmt;
use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use der::{asn1::OctetStringRef, Decode, Encode, Sequence};
use tke_fs::atomic;
use tke_proto::{
    ecdsa_p256::EcdsaKey,
    p256::{
        ecdsa::{DerSignature, SigningKey},
        PublicKey, SecretKey,
    },
    parts::{self, SealedPart},
    transport::{self, ImporterKey, MkEnvelope},
    DeviceContext, Digest32, MasterKey, Ski, UnitId, Vp,
};
use zeroize::{Zeroize, Zeroizing};

use crate::{
    backend::{Backend, BackendError, KeyHandle, LiveSecrets},
    kwp,
};

/// The name of the soft backend's secrets file in a unit directory.
pub const SECRETS_FILE: &str = "soft-secrets.der";

const FORMAT_VERSION: u8 = 1;

/// The secrets file.
///
/// ```asn1
/// SoftSecrets ::= SEQUENCE {
///   version     INTEGER (1),
///   unitId      OCTET STRING (SIZE(16)),
///   deviceKey   OCTET STRING (SIZE(32)),    -- P-256 private scalar, big-endian
///   masterKeys  SEQUENCE OF StoredSecret,   -- id: KeyHandle (16), secret: AES-256 key (32)
///   importers   SEQUENCE OF StoredSecret }  -- id: key id (32), secret: P-256 scalar (32)
/// ```
#[derive(Sequence)]
struct SecretsFile<'a> {
    version: u8,
    unit_id: UnitId,
    device_key: OctetStringRef<'a>,
    master_keys: Vec<StoredSecret<'a>>,
    importers: Vec<StoredSecret<'a>>,
}

/// One stored secret and its name.
///
/// ```asn1
/// StoredSecret ::= SEQUENCE { id OCTET STRING, secret OCTET STRING (SIZE(32)) }
/// ```
#[derive(Sequence)]
struct StoredSecret<'a> {
    id: OctetStringRef<'a>,
    secret: OctetStringRef<'a>,
}

/// Copies a P-256 scalar out of its key into a zeroizing array.
fn scalar_bytes(mut field: tke_proto::p256::FieldBytes) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(field.as_slice());
    field.as_mut_slice().zeroize();
    out
}

fn importer_key_id(public: &PublicKey) -> Digest32 {
    Digest32::sha256(&transport::point_bytes(public))
}

/// How errors name the secrets of a soft backend in memory.
const MEMORY_PATH: &str = "(soft secrets in memory)";

/// The secrets of a soft backend kept in memory instead of a file, for tests and
/// benchmarks: the same DER as the secrets file, rewritten on every change, so that
/// [`SoftBackend::open_in_memory`] reopens the unit's secrets after its backend was
/// dropped.
///
/// Clones share the secrets (as a clone of a memory [`crate::StateStore`] shares the
/// state); the bytes are zeroized when replaced and when the last clone drops. `Debug`
/// shows only their length. Nothing survives the process.
#[derive(Clone, Default)]
pub struct MemorySecrets(Arc<Mutex<Option<Zeroizing<Vec<u8>>>>>);

impl MemorySecrets {
    /// Holds no secrets yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Option<Zeroizing<Vec<u8>>>) -> T) -> T {
        // Each access replaces the bytes whole: a poisoned lock holds no half-write.
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl fmt::Debug for MemorySecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.with(|b| b.as_ref().map(|b| b.len()));
        f.debug_struct("MemorySecrets")
            .field("bytes", &len)
            .finish()
    }
}

/// Where a soft backend keeps its secrets.
#[derive(Debug)]
enum Place {
    File(PathBuf),
    Memory(MemorySecrets),
}

/// A unit's secrets in a file (or in memory: [`MemorySecrets`]): the device key, master
/// key objects and importer keys.
///
/// Every change is written atomically (temporary file, fsync, rename) before the method
/// returns. Secrets are zeroized on drop (the key types zeroize themselves) and never
/// shown by `Debug`.
pub struct SoftBackend {
    place: Place,
    unit_id: UnitId,
    /// Signs every answer, so it signs through aws-lc (see `tke_proto::ecdsa_p256`).
    pub(crate) device: EcdsaKey,
    pub(crate) master_keys: BTreeMap<KeyHandle, MasterKey>,
    pub(crate) importers: BTreeMap<Digest32, SecretKey>,
}

impl fmt::Debug for SoftBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let device_public = PublicKey::from(self.device.verifying_key());
        let mks: Vec<_> = self
            .master_keys
            .iter()
            .map(|(h, k)| format!("{h}: vp={}", k.vp()))
            .collect();
        let imps: Vec<_> = self.importers.keys().map(Digest32::to_hex).collect();
        f.debug_struct("SoftBackend")
            .field("place", &self.place)
            .field("unit_id", &self.unit_id.uuid())
            .field(
                "device_key",
                &format_args!(
                    "<redacted> (public key SKI {})",
                    Ski::of_public_key(&device_public)
                ),
            )
            .field("master_keys", &mks)
            .field("importers", &imps)
            .finish()
    }
}

impl SoftBackend {
    /// Makes a new device key for `unit_id` and writes the secrets file in `dir`
    /// (which must exist). Refuses to overwrite an existing secrets file.
    ///
    /// # Errors
    /// [`BackendError::Io`] (with kind `AlreadyExists` when the file is there).
    pub fn create(dir: &Path, unit_id: UnitId) -> Result<Self, BackendError> {
        let path = dir.join(SECRETS_FILE);
        if path.exists() {
            return Err(BackendError::Io {
                action: "create",
                path,
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a secrets file already exists",
                ),
            });
        }
        Self::new(Place::File(path), unit_id)
    }

    /// Makes a new device key for `unit_id` and keeps the secrets in `secrets`, which must
    /// hold none yet: a backend that touches no file.
    ///
    /// # Errors
    /// [`BackendError::Io`] with kind `AlreadyExists` when `secrets` holds secrets.
    pub fn create_in_memory(
        secrets: &MemorySecrets,
        unit_id: UnitId,
    ) -> Result<Self, BackendError> {
        if secrets.with(|b| b.is_some()) {
            return Err(BackendError::Io {
                action: "create",
                path: PathBuf::from(MEMORY_PATH),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "secrets already exist"),
            });
        }
        Self::new(Place::Memory(secrets.clone()), unit_id)
    }

    fn new(place: Place, unit_id: UnitId) -> Result<Self, BackendError> {
        let backend = Self {
            place,
            unit_id,
            device: EcdsaKey::random(),
            master_keys: BTreeMap::new(),
            importers: BTreeMap::new(),
        };
        backend.write(&backend.master_keys, &backend.importers)?;
        Ok(backend)
    }

    /// Opens the secrets file in `dir` and checks that it belongs to `unit_id`.
    ///
    /// # Errors
    /// [`BackendError::Io`] if it cannot be read, [`BackendError::Der`] or
    /// [`BackendError::Corrupt`] if it is damaged, [`BackendError::Foreign`] if it names
    /// another unit.
    pub fn open(dir: &Path, unit_id: UnitId) -> Result<Self, BackendError> {
        let path = dir.join(SECRETS_FILE);
        let bytes = Zeroizing::new(fs::read(&path).map_err(|source| BackendError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?);
        Self::decode(&bytes, Place::File(path), unit_id)
    }

    /// Opens the secrets kept in `secrets` and checks that they belong to `unit_id`.
    ///
    /// # Errors
    /// [`BackendError::Io`] with kind `NotFound` when `secrets` holds none (never created,
    /// or discarded), else as [`SoftBackend::open`].
    pub fn open_in_memory(secrets: &MemorySecrets, unit_id: UnitId) -> Result<Self, BackendError> {
        let bytes = secrets
            .with(|b| b.clone())
            .ok_or_else(|| BackendError::Io {
                action: "read",
                path: PathBuf::from(MEMORY_PATH),
                source: io::Error::new(io::ErrorKind::NotFound, "no secrets"),
            })?;
        Self::decode(&bytes, Place::Memory(secrets.clone()), unit_id)
    }

    /// Decodes and checks the secrets of `unit_id` read from `place`.
    fn decode(bytes: &[u8], place: Place, unit_id: UnitId) -> Result<Self, BackendError> {
        let path = place.path().to_owned();
        let file = SecretsFile::from_der(bytes).map_err(|source| BackendError::Der {
            path: path.clone(),
            source,
        })?;
        let corrupt = |what| BackendError::Corrupt {
            path: path.clone(),
            what,
        };
        if file.version != FORMAT_VERSION {
            return Err(corrupt("unknown format version"));
        }
        if file.unit_id != unit_id {
            return Err(BackendError::Foreign {
                path,
                expected: unit_id,
                found: file.unit_id,
            });
        }
        if file.device_key.as_bytes().len() != 32 {
            return Err(corrupt("the device key is not 32 bytes"));
        }
        let device = SigningKey::from_slice(file.device_key.as_bytes())
            .map_err(|_| corrupt("the device key is not a P-256 private key"))
            .and_then(|k| EcdsaKey::new(k).map_err(|_| corrupt("the device key cannot sign")))?;
        let mut master_keys = BTreeMap::new();
        for s in &file.master_keys {
            let handle = KeyHandle(
                s.id.as_bytes()
                    .try_into()
                    .map_err(|_| corrupt("a master key handle is not 16 bytes"))?,
            );
            let key = MasterKey::from_slice(s.secret.as_bytes())
                .map_err(|_| corrupt("a master key is not 32 bytes"))?;
            if master_keys.insert(handle, key).is_some() {
                return Err(corrupt("two master keys have the same handle"));
            }
        }
        let mut importers = BTreeMap::new();
        for s in &file.importers {
            let key_id = Digest32::from_slice(s.id.as_bytes())
                .map_err(|_| corrupt("an importer key id is not 32 bytes"))?;
            if s.secret.as_bytes().len() != 32 {
                return Err(corrupt("an importer key is not 32 bytes"));
            }
            let secret = SecretKey::from_slice(s.secret.as_bytes())
                .map_err(|_| corrupt("an importer key is not a P-256 private key"))?;
            if importer_key_id(&secret.public_key()) != key_id {
                return Err(corrupt("an importer key does not match its key id"));
            }
            if importers.insert(key_id, secret).is_some() {
                return Err(corrupt("two importer keys have the same key id"));
            }
        }
        Ok(Self {
            place,
            unit_id,
            device,
            master_keys,
            importers,
        })
    }

    /// The secrets file; for secrets in memory, how errors name them.
    pub fn path(&self) -> &Path {
        self.place.path()
    }

    /// The importer key `key_id`.
    fn importer(&self, key_id: &Digest32) -> Result<&SecretKey, BackendError> {
        self.importers
            .get(key_id)
            .ok_or(BackendError::UnknownImporter { key_id: *key_id })
    }

    /// The master key `handle` as a key-encryption key.
    fn master_kek(&self, handle: &KeyHandle) -> Result<aes_kw::KekAes256, BackendError> {
        self.master_keys
            .get(handle)
            .map(|k| kwp::kek(k.expose_secret()))
            .ok_or(BackendError::UnknownMasterKey { handle: *handle })
    }

    /// Stores `key` in a new master key object (written before this returns).
    fn store_master_key(&mut self, key: MasterKey) -> Result<(KeyHandle, Vp), BackendError> {
        let vp = key.vp();
        let mut handle = KeyHandle::random();
        while self.master_keys.contains_key(&handle) {
            handle = KeyHandle::random();
        }
        let mut next = self.master_keys.clone();
        next.insert(handle, key);
        self.write(&next, &self.importers)?;
        self.master_keys = next;
        Ok((handle, vp))
    }

    /// Encodes the file with the given sets and writes it atomically.
    fn write(
        &self,
        master_keys: &BTreeMap<KeyHandle, MasterKey>,
        importers: &BTreeMap<Digest32, SecretKey>,
    ) -> Result<(), BackendError> {
        let bytes = self
            .encode(master_keys, importers)
            .map_err(|source| BackendError::Der {
                path: self.path().to_owned(),
                source,
            })?;
        match &self.place {
            Place::File(path) => {
                atomic::write_private(path, &bytes).map_err(|source| BackendError::Io {
                    action: "write",
                    path: path.clone(),
                    source,
                })
            }
            Place::Memory(secrets) => {
                secrets.with(|b| *b = Some(bytes));
                Ok(())
            }
        }
    }

    fn encode(
        &self,
        master_keys: &BTreeMap<KeyHandle, MasterKey>,
        importers: &BTreeMap<Digest32, SecretKey>,
    ) -> der::Result<Zeroizing<Vec<u8>>> {
        let device = scalar_bytes(self.device.signing_key().to_bytes());
        let importer_scalars: Vec<(Digest32, Zeroizing<[u8; 32]>)> = importers
            .iter()
            .map(|(id, k)| (*id, scalar_bytes(k.to_bytes())))
            .collect();
        let file = SecretsFile {
            version: FORMAT_VERSION,
            unit_id: self.unit_id,
            device_key: OctetStringRef::new(device.as_slice())?,
            master_keys: master_keys
                .iter()
                .map(|(h, k)| {
                    Ok(StoredSecret {
                        id: OctetStringRef::new(&h.0)?,
                        secret: OctetStringRef::new(k.expose_secret())?,
                    })
                })
                .collect::<der::Result<_>>()?,
            importers: importer_scalars
                .iter()
                .map(|(id, k)| {
                    Ok(StoredSecret {
                        id: OctetStringRef::new(id.as_bytes())?,
                        secret: OctetStringRef::new(k.as_slice())?,
                    })
                })
                .collect::<der::Result<_>>()?,
        };
        // Encode into a buffer of the exact size, so no reallocation leaves a copy behind.
        let len = usize::try_from(file.encoded_len()?)?;
        let mut out = Zeroizing::new(vec![0u8; len]);
        let written = file.encode_to_slice(&mut out)?.len();
        out.truncate(written);
        Ok(out)
    }
}

impl Backend for SoftBackend {
    fn kind(&self) -> &'static str {
        "soft"
    }

    fn device_public_key(&self) -> PublicKey {
        PublicKey::from(self.device.verifying_key())
    }

    fn sign(&self, context: DeviceContext, message: &[u8]) -> Result<DerSignature, BackendError> {
        self.device
            .sign(&context.signed_bytes(message))
            .map_err(|e| BackendError::Crypto(tke_proto::ProtoError::Signing { source: e.into() }))
    }

    fn generate_master_key(&mut self) -> Result<(KeyHandle, Vp), BackendError> {
        self.store_master_key(MasterKey::random())
    }

    fn master_key_vp(&self, handle: &KeyHandle) -> Result<Vp, BackendError> {
        self.master_keys
            .get(handle)
            .map(MasterKey::vp)
            .ok_or(BackendError::UnknownMasterKey { handle: *handle })
    }

    fn generate_root_keys(
        &self,
        handle: &KeyHandle,
        count: usize,
    ) -> Result<Vec<Vec<u8>>, BackendError> {
        let kek = self.master_kek(handle)?;
        (0..count).map(|_| kwp::generate_root(&kek)).collect()
    }

    fn wrap_data(
        &self,
        handle: &KeyHandle,
        root: &[u8],
        data: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        let root = kwp::unwrap_root(&self.master_kek(handle)?, handle, 0, root)?;
        kwp::wrap_data(&root, data)
    }

    fn unwrap_data(
        &self,
        handle: &KeyHandle,
        root: &[u8],
        wrapped: &[u8],
    ) -> Result<tke_proto::SecretOctets, BackendError> {
        let root = kwp::unwrap_root(&self.master_kek(handle)?, handle, 0, root)?;
        kwp::unwrap_data(&root, wrapped)
    }

    fn rewrap_root_keys(
        &self,
        from: &KeyHandle,
        to: &KeyHandle,
        keys: &[&[u8]],
    ) -> Result<Vec<Vec<u8>>, BackendError> {
        let (old, new) = (self.master_kek(from)?, self.master_kek(to)?);
        keys.iter()
            .enumerate()
            .map(|(i, k)| kwp::wrap_root(&new, &*kwp::unwrap_root(&old, from, i, k)?))
            .collect()
    }

    fn generate_importer(&mut self) -> Result<PublicKey, BackendError> {
        let (secret, public) = tke_proto::ecdh_p256::generate().map_err(|_| {
            BackendError::Crypto(tke_proto::TransportError::ImporterGeneration.into())
        })?;
        let mut next = self.importers.clone();
        next.insert(importer_key_id(&public), secret);
        self.write(&self.master_keys, &next)?;
        self.importers = next;
        Ok(public)
    }

    fn has_importer(&self, key_id: &Digest32) -> Result<bool, BackendError> {
        Ok(self.importers.contains_key(key_id))
    }

    fn seal(
        &self,
        handle: &KeyHandle,
        source: UnitId,
        importer: &ImporterKey,
    ) -> Result<MkEnvelope, BackendError> {
        let key = self
            .master_keys
            .get(handle)
            .ok_or(BackendError::UnknownMasterKey { handle: *handle })?;
        transport::soft_seal(key, source, importer).map_err(BackendError::Crypto)
    }

    fn import(
        &mut self,
        importer: &Digest32,
        envelope: &MkEnvelope,
    ) -> Result<(KeyHandle, Vp), BackendError> {
        let secret = self.importer(importer)?;
        if !crate::machine::envelope_shape_ok(envelope) {
            return Err(BackendError::Rejected(
                tke_proto::TransportError::EnvelopeShape.into(),
            ));
        }
        let key = transport::soft_open(envelope, secret).map_err(BackendError::Rejected)?;
        self.store_master_key(key)
    }

    fn import_parts(
        &mut self,
        importer: &Digest32,
        target: UnitId,
        sealed: &[SealedPart],
    ) -> Result<(KeyHandle, Vp), BackendError> {
        let secret = self.importer(importer)?;
        // Sizes are checked by the unit first; the reference refuses others anyway.
        let key = crate::backend::open_and_combine(sealed, |k, part| {
            parts::soft_open_part(part, target, k, secret).map_err(BackendError::Rejected)
        })?;
        self.store_master_key(key)
    }

    fn retain(&mut self, live: &LiveSecrets) -> Result<(), BackendError> {
        let master_keys: BTreeMap<_, _> = self
            .master_keys
            .iter()
            .filter(|(h, _)| live.master_keys.contains(h))
            .map(|(h, k)| (*h, k.clone()))
            .collect();
        let importers: BTreeMap<_, _> = self
            .importers
            .iter()
            .filter(|(id, _)| live.importer.as_ref() == Some(*id))
            .map(|(id, k)| (*id, k.clone()))
            .collect();
        if master_keys.len() == self.master_keys.len() && importers.len() == self.importers.len() {
            return Ok(());
        }
        self.write(&master_keys, &importers)?;
        self.master_keys = master_keys;
        self.importers = importers;
        Ok(())
    }

    /// Secrets in memory go here (a file goes with its directory's files).
    fn discard(&mut self) -> Result<(), BackendError> {
        if let Place::Memory(secrets) = &self.place {
            secrets.with(|b| *b = None);
        }
        Ok(())
    }
}

impl Place {
    fn path(&self) -> &Path {
        match self {
            Self::File(path) => path,
            Self::Memory(_) => Path::new(MEMORY_PATH),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_file() {
        let d = tempfile::tempdir().unwrap();
        let id = UnitId::random();
        let mut b = SoftBackend::create(d.path(), id).unwrap();
        let (h, vp) = b.generate_master_key().unwrap();
        let imp = b.generate_importer().unwrap();
        let b2 = SoftBackend::open(d.path(), id).unwrap();
        assert_eq!(b2.master_key_vp(&h).unwrap(), vp);
        assert!(b2.has_importer(&importer_key_id(&imp)).unwrap());
        assert_eq!(b2.device_public_key(), b.device_public_key());
        // Another unit's id is refused.
        assert!(matches!(
            SoftBackend::open(d.path(), UnitId::random()),
            Err(BackendError::Foreign { .. })
        ));
        // An existing file is never overwritten.
        assert!(SoftBackend::create(d.path(), id).is_err());
    }

    #[test]
    fn round_trips_through_memory_and_discard_empties_it() {
        let memory = MemorySecrets::new();
        let id = UnitId::random();
        let kind = |r: Result<SoftBackend, BackendError>| match r {
            Err(BackendError::Io { source, .. }) => source.kind(),
            other => panic!("an I/O error expected: {other:?}"),
        };
        assert_eq!(
            kind(SoftBackend::open_in_memory(&memory, id)),
            io::ErrorKind::NotFound
        );
        let mut b = SoftBackend::create_in_memory(&memory, id).unwrap();
        let (h, vp) = b.generate_master_key().unwrap();
        let imp = b.generate_importer().unwrap();
        let b2 = SoftBackend::open_in_memory(&memory, id).unwrap();
        assert_eq!(b2.master_key_vp(&h).unwrap(), vp);
        assert!(b2.has_importer(&importer_key_id(&imp)).unwrap());
        assert_eq!(b2.device_public_key(), b.device_public_key());
        assert!(matches!(
            SoftBackend::open_in_memory(&memory, UnitId::random()),
            Err(BackendError::Foreign { .. })
        ));
        // Secrets in memory are never overwritten either.
        assert_eq!(
            kind(SoftBackend::create_in_memory(&memory, id)),
            io::ErrorKind::AlreadyExists
        );
        b.discard().unwrap();
        assert_eq!(
            kind(SoftBackend::open_in_memory(&memory, id)),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn retain_destroys_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let id = UnitId::random();
        let mut b = SoftBackend::create(d.path(), id).unwrap();
        let (h1, _) = b.generate_master_key().unwrap();
        let (h2, _) = b.generate_master_key().unwrap();
        b.generate_importer().unwrap();
        b.retain(&LiveSecrets {
            master_keys: vec![h2],
            importer: None,
        })
        .unwrap();
        let b2 = SoftBackend::open(d.path(), id).unwrap();
        assert!(b2.master_key_vp(&h1).is_err());
        assert!(b2.master_key_vp(&h2).is_ok());
        assert!(b2.importers.is_empty());
        b.zeroize().unwrap();
        assert!(SoftBackend::open(d.path(), id)
            .unwrap()
            .master_keys
            .is_empty());
    }

    #[test]
    fn corrupt_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        let id = UnitId::random();
        SoftBackend::create(d.path(), id).unwrap();
        fs::write(d.path().join(SECRETS_FILE), b"\x30\x03\x02\x01").unwrap();
        let e = SoftBackend::open(d.path(), id).unwrap_err();
        assert!(e.to_string().contains(SECRETS_FILE), "{e}");
    }

    #[test]
    fn short_wrapped_key_is_refused_without_panic() {
        let d = tempfile::tempdir().unwrap();
        let id = UnitId::random();
        let mut b = SoftBackend::create(d.path(), id).unwrap();
        let importer = b.generate_importer().unwrap();
        let key_id = importer_key_id(&importer);
        let envelope = MkEnvelope {
            source_unit_id: UnitId::random(),
            target_unit_id: id,
            importer_key_id: key_id,
            ephemeral_public_key: der::asn1::OctetString::new(
                transport::point_bytes(&importer).to_vec(),
            )
            .unwrap(),
            // The RFC 5649 prefix and a zero length: aes-kw 0.2.1 underflows on it.
            wrapped_key: der::asn1::OctetString::new(vec![0xA6, 0x59, 0x59, 0xA6, 0, 0, 0, 0])
                .unwrap(),
            vp: Vp([0; 32]),
        };
        assert!(matches!(
            b.import(&key_id, &envelope),
            Err(BackendError::Rejected(_))
        ));
    }
}
