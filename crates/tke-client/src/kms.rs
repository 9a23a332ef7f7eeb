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

use tke_keystore::{KeyStore, LazySqliteKeyStore, WrappedKey};
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
/// made by the first write, so that reading an instance without keys changes nothing on
/// disk) and the service over it and `client`'s units of the instance, with
/// `rewrap_workers` units rewrapping at once during re-encryption
/// ([`LocalKms::with_rewrap_workers`]; the embedded fleet and `tke-unitd` choose it by
/// their units' backends, [`tke_kms::default_rewrap_workers`]).
///
/// # Errors
/// [`ClientError::KeyStoreInstance`] when the instance id is not a UUID;
/// [`ClientError::KeyStore`] when an existing store cannot be opened.
pub fn open_local(
    dir: &Path,
    client: Client,
    instance: &InstanceId,
    rewrap_workers: NonZeroUsize,
) -> Result<Arc<LocalKms>, ClientError> {
    // The id names a file: only a UUID is taken.
    if tke_proto::InstanceId::from_uuid(&instance.0).is_err() {
        return Err(ClientError::KeyStoreInstance {
            instance: instance.clone(),
        });
    }
    // Reading a store that does not exist yet changes nothing on disk (the zeroize
    // guard asks every instance); the first write makes the directory and the file.
    let path = store_path(dir, instance);
    let store: Box<dyn KeyStore + Send> = Box::new(LazySqliteKeyStore::open(&path)?);
    Ok(Arc::new(
        LocalKms::new(
            store,
            Box::new(ClientUnits::new(client, instance.clone())),
            instance.to_string(),
        )
        .with_rewrap_workers(rewrap_workers),
    ))
}
