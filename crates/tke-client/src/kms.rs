//! The key-management service over a [`Client`]'s units: [`ClientUnits`] gives
//! [`tke_kms::LocalKms`] the instance's units through protocol v4 service requests (each
//! answer verified like a query's), and [`open_local`] opens an instance's key store file
//! (made on first use) and puts the two together. The embedded fleet and `tke-unitd` both
//! use it.

use std::{
    num::NonZeroUsize,
    path::{Path, PathBuf},
    sync::Arc,
};

use tke_keystore::{
    BatchRewrapFn, KeyId, KeyStore, ListCursor, Record, RewrapFn, RotationMarker, SqliteKeyStore,
    StoreError, WrappedKey,
};
use tke_kms::{GeneratedKeys, InstanceUnits, KmsError, LocalKms, UnitCallError, UnitRef};
use tke_proto::{
    der::asn1::OctetString, ModuleError, Rewrap, SecretOctets, ServiceOp, ServiceOutput,
    UnwrapData, Vp, WrapData, MAX_SERVICE_BATCH,
};
use zeroize::Zeroizing;

use crate::{Client, ClientError, InstanceId};

/// The units of one service instance of a [`Client`], for [`LocalKms`].
pub struct ClientUnits {
    client: Client,
    instance: InstanceId,
}

impl ClientUnits {
    /// The units of `instance` among `client`'s.
    pub fn new(client: Client, instance: InstanceId) -> Self {
        Self { client, instance }
    }

    fn call(&self, unit: &UnitRef, op: ServiceOp) -> Result<ServiceOutput, UnitCallError> {
        let known = self.client.unit(&unit.id).ok_or_else(|| {
            UnitCallError::Failed(Box::new(ClientError::UnknownUnit { unit: unit.id }))
        })?;
        self.client.service(known, op).map_err(|e| match e {
            ClientError::ServiceRefused { error, .. }
                if error == ModuleError::SERVICE_NO_CURRENT =>
            {
                UnitCallError::NoMasterKey
            }
            e => UnitCallError::Failed(Box::new(e)),
        })
    }
}

fn octets(bytes: &[u8]) -> Result<OctetString, UnitCallError> {
    OctetString::new(bytes).map_err(|e| UnitCallError::Failed(Box::new(e)))
}

fn wrapped_key(o: &OctetString) -> Result<WrappedKey, UnitCallError> {
    WrappedKey::new(o.as_bytes().to_vec()).map_err(|e| UnitCallError::Failed(Box::new(e)))
}

fn unexpected() -> UnitCallError {
    UnitCallError::Failed("the unit answered another operation than the one asked".into())
}

impl InstanceUnits for ClientUnits {
    fn units(&self) -> Result<Vec<UnitRef>, KmsError> {
        Ok(self
            .client
            .instance_units(&self.instance)
            .into_iter()
            .map(|u| UnitRef {
                id: u.id(),
                unit_type: u.unit_type(),
                label: format!("{} ({})", u.num, u.id().uuid()),
            })
            .collect())
    }

    fn max_batch(&self) -> NonZeroUsize {
        NonZeroUsize::new(MAX_SERVICE_BATCH).unwrap_or(NonZeroUsize::MIN)
    }

    fn generate_keys(&self, unit: &UnitRef, count: usize) -> Result<GeneratedKeys, UnitCallError> {
        let n = u32::try_from(count).map_err(|_| unexpected())?;
        match self.call(unit, ServiceOp::GenerateKeys(n))? {
            ServiceOutput::Generated(g) => Ok(GeneratedKeys {
                vp: g.vp,
                keys: g.keys.iter().map(wrapped_key).collect::<Result<_, _>>()?,
            }),
            _ => Err(unexpected()),
        }
    }

    fn wrap_data(
        &self,
        unit: &UnitRef,
        vp: &Vp,
        root: &WrappedKey,
        data: &[u8],
    ) -> Result<Vec<u8>, UnitCallError> {
        let op = ServiceOp::WrapData(WrapData {
            vp: *vp,
            root: octets(root.as_bytes())?,
            data: SecretOctets::new(data.to_vec()),
        });
        match self.call(unit, op)? {
            ServiceOutput::Wrapped(w) => Ok(w),
            _ => Err(unexpected()),
        }
    }

    fn unwrap_data(
        &self,
        unit: &UnitRef,
        vp: &Vp,
        root: &WrappedKey,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, UnitCallError> {
        let op = ServiceOp::UnwrapData(UnwrapData {
            vp: *vp,
            root: octets(root.as_bytes())?,
            wrapped: octets(wrapped)?,
        });
        match self.call(unit, op)? {
            ServiceOutput::Unwrapped(d) => Ok(Zeroizing::new(d.as_bytes().to_vec())),
            _ => Err(unexpected()),
        }
    }

    fn rewrap(
        &self,
        unit: &UnitRef,
        from: &Vp,
        to: &Vp,
        keys: &[WrappedKey],
    ) -> Result<Vec<WrappedKey>, UnitCallError> {
        let op = ServiceOp::Rewrap(Rewrap {
            from: *from,
            to: *to,
            keys: keys
                .iter()
                .map(|k| octets(k.as_bytes()))
                .collect::<Result<_, _>>()?,
        });
        match self.call(unit, op)? {
            ServiceOutput::Rewrapped(r) => r.iter().map(wrapped_key).collect(),
            _ => Err(unexpected()),
        }
    }
}

/// The key store file of `instance` in `dir`: `<dir>/<instance id>.keys`.
pub fn store_path(dir: &Path, instance: &InstanceId) -> PathBuf {
    dir.join(format!("{}.keys", instance.0))
}

/// Opens the key store of `instance` in `dir` (a private directory and a 0600 file, both
/// made by the first write: reading a store that does not exist finds it empty) and the service over it and `client`'s units of the instance.
///
/// # Errors
/// [`ClientError::KeyStore`] when the store cannot be opened.
pub fn open_local(
    dir: &Path,
    client: Client,
    instance: &InstanceId,
) -> Result<Arc<LocalKms>, ClientError> {
    // The id names a file: only a UUID is taken.
    if tke_proto::InstanceId::from_uuid(&instance.0).is_err() {
        return Err(ClientError::KeyStoreInstance {
            instance: instance.clone(),
        });
    }
    let path = store_path(dir, instance);
    let store: Box<dyn KeyStore + Send> = if path.exists() {
        Box::new(SqliteKeyStore::open(&path)?)
    } else {
        Box::new(LazyStore { path, store: None })
    };
    Ok(Arc::new(LocalKms::new(
        store,
        Box::new(ClientUnits::new(client, instance.clone())),
        instance.to_string(),
    )))
}

/// The key store of an instance that has none on disk yet: it reads as empty and is
/// created by its first write. A command that only reads (a pre-check, a refused
/// ceremony, `tke kms list`) leaves no file behind: refused commands change nothing.
struct LazyStore {
    path: PathBuf,
    store: Option<SqliteKeyStore>,
}

impl LazyStore {
    fn made(&mut self) -> Result<&mut SqliteKeyStore, StoreError> {
        if self.store.is_none() {
            if let Some(dir) = self.path.parent() {
                tke_fs::create_private_dir(dir).map_err(|source| StoreError::Create {
                    path: self.path.clone(),
                    source,
                })?;
            }
        }
        match &mut self.store {
            Some(s) => Ok(s),
            slot => Ok(slot.insert(SqliteKeyStore::create(&self.path)?)),
        }
    }

    fn not_found(&self, id: &KeyId) -> StoreError {
        StoreError::NotFound {
            store: self.path.clone(),
            id: *id,
        }
    }
}

impl KeyStore for LazyStore {
    fn location(&self) -> &Path {
        &self.path
    }

    fn insert(&mut self, record: &Record) -> Result<(), StoreError> {
        self.made()?.insert(record)
    }

    fn insert_all(&mut self, records: &[Record]) -> Result<(), StoreError> {
        self.made()?.insert_all(records)
    }

    fn get(&self, id: &KeyId) -> Result<Record, StoreError> {
        match &self.store {
            Some(s) => s.get(id),
            None => Err(self.not_found(id)),
        }
    }

    fn list(
        &self,
        after: Option<&ListCursor>,
        limit: NonZeroUsize,
    ) -> Result<Vec<Record>, StoreError> {
        self.store
            .as_ref()
            .map_or(Ok(Vec::new()), |s| s.list(after, limit))
    }

    fn delete(&mut self, id: &KeyId) -> Result<(), StoreError> {
        match &mut self.store {
            Some(s) => s.delete(id),
            None => Err(self.not_found(id)),
        }
    }

    fn count(&self) -> Result<u64, StoreError> {
        self.store.as_ref().map_or(Ok(0), KeyStore::count)
    }

    fn count_by_vp(&self, vp: &Vp) -> Result<u64, StoreError> {
        self.store.as_ref().map_or(Ok(0), |s| s.count_by_vp(vp))
    }

    fn vp_counts(&self) -> Result<Vec<(Vp, u64)>, StoreError> {
        self.store
            .as_ref()
            .map_or(Ok(Vec::new()), KeyStore::vp_counts)
    }

    fn rewrap_batch(
        &mut self,
        from: &Vp,
        to: &Vp,
        limit: NonZeroUsize,
        rewrap: &mut RewrapFn<'_>,
    ) -> Result<usize, StoreError> {
        self.made()?.rewrap_batch(from, to, limit, rewrap)
    }

    fn rewrap_batch_whole(
        &mut self,
        from: &Vp,
        to: &Vp,
        limit: NonZeroUsize,
        rewrap: &mut BatchRewrapFn<'_>,
    ) -> Result<usize, StoreError> {
        self.made()?.rewrap_batch_whole(from, to, limit, rewrap)
    }

    fn rotation(&self) -> Result<Option<RotationMarker>, StoreError> {
        self.store.as_ref().map_or(Ok(None), KeyStore::rotation)
    }

    fn begin_rotation(&mut self, marker: &RotationMarker) -> Result<(), StoreError> {
        self.made()?.begin_rotation(marker)
    }

    fn finish_rotation(&mut self, marker: &RotationMarker) -> Result<(), StoreError> {
        self.made()?.finish_rotation(marker)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.store.as_mut().map_or(Ok(()), KeyStore::sync)
    }
}
