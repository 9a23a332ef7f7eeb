//! [`LocalKms`]: the key-management service over a key store and the instance's units,
//! in the process that holds both (the embedded fleet, a `tke-unitd` server).

use std::{num::NonZeroUsize, sync::Mutex};

use tke_keystore::{KeyId, KeyName, KeyStore, Record, RotationMarker, StoreError, WrappedKey};
use tke_proto::{UnitId, UnitType, Vp};
use zeroize::Zeroizing;

use crate::{
    file::{check_data_key, WrappedDataKey},
    KeyInfo, KeyService, KmsError, Progress, Rotation, Summary,
};

/// A crypto unit of the instance, as the service reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitRef {
    /// Its id.
    pub id: UnitId,
    /// Its type: operational units are asked first.
    pub unit_type: UnitType,
    /// How the operator knows it (e.g. its location), for messages.
    pub label: String,
}

/// Why a unit could not do a key-service operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnitCallError {
    /// The unit has no current master key (the instance was never initialized).
    #[error("it holds no current master key")]
    NoMasterKey,
    /// The unit refused (e.g. it holds no master key with the VP asked for) or could not
    /// be reached; another unit may still do it.
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

/// Root keys fresh from a unit, wrapped under its current master key.
pub struct GeneratedKeys {
    /// The VP of the master key that wraps them.
    pub vp: Vp,
    /// The wrapped root keys.
    pub keys: Vec<WrappedKey>,
}

/// The key-service operations of the instance's units (protocol v4 `ServiceOp`), as
/// [`LocalKms`] needs them. The embedded fleet and `tke-unitd` implement it over their
/// units; each call is one request to one unit, whose answer the implementation has
/// verified.
pub trait InstanceUnits: Send + Sync {
    /// The instance's units.
    ///
    /// # Errors
    /// [`KmsError::NoUnit`] or [`KmsError::Transport`] when they cannot be listed.
    fn units(&self) -> Result<Vec<UnitRef>, KmsError>;

    /// The most keys one call may carry (generate, rewrap).
    fn max_batch(&self) -> NonZeroUsize;

    /// Generates `count` (1 to [`InstanceUnits::max_batch`]) root keys inside `unit`.
    ///
    /// # Errors
    /// [`UnitCallError`].
    fn generate_keys(&self, unit: &UnitRef, count: usize) -> Result<GeneratedKeys, UnitCallError>;

    /// Wraps `data` under the root key `root` (wrapped under the master key `vp`).
    ///
    /// # Errors
    /// [`UnitCallError`].
    fn wrap_data(
        &self,
        unit: &UnitRef,
        vp: &Vp,
        root: &WrappedKey,
        data: &[u8],
    ) -> Result<Vec<u8>, UnitCallError>;

    /// Unwraps `wrapped` with the root key `root` (wrapped under the master key `vp`).
    ///
    /// # Errors
    /// [`UnitCallError`].
    fn unwrap_data(
        &self,
        unit: &UnitRef,
        vp: &Vp,
        root: &WrappedKey,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, UnitCallError>;

    /// Rewraps `keys` from the master key `from` (the unit's current register) to `to`
    /// (its committed new register), in one call: all of them, in the same order, or an
    /// error.
    ///
    /// # Errors
    /// [`UnitCallError`].
    fn rewrap(
        &self,
        unit: &UnitRef,
        from: &Vp,
        to: &Vp,
        keys: &[WrappedKey],
    ) -> Result<Vec<WrappedKey>, UnitCallError>;
}

/// The key-management service of one instance, in-process: its key store and its units.
pub struct LocalKms {
    store: Mutex<Box<dyn KeyStore + Send>>,
    units: Box<dyn InstanceUnits>,
    /// The instance, as the operator knows it, for messages.
    instance: String,
}

impl core::fmt::Debug for LocalKms {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LocalKms")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// Unit calls (of [`InstanceUnits::max_batch`] keys each) per store transaction during
/// re-encryption: 8 × 1024 keys per commit. Measured on the rotation of 1,000,000 keys
/// (crate documentation).
const STORE_BATCH_CALLS: NonZeroUsize = match NonZeroUsize::new(8) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

/// The order units are asked in: operational, failover, then recovery units (which hold
/// the master key too, but exist to restore it).
fn preference(t: UnitType) -> u8 {
    match t {
        UnitType::Operational => 0,
        UnitType::Failover => 1,
        UnitType::Recovery => 2,
    }
}

/// Tries `op` on each unit in turn until one does it; says which failed when none does.
fn on_some_unit<T>(
    units: &[UnitRef],
    what: &str,
    instance: &str,
    mut op: impl FnMut(&UnitRef) -> Result<T, UnitCallError>,
) -> Result<T, KmsError> {
    let mut failures = Vec::new();
    let mut no_mk = 0;
    for unit in units {
        match op(unit) {
            Ok(v) => return Ok(v),
            Err(UnitCallError::NoMasterKey) => no_mk += 1,
            Err(e) => failures.push(format!("crypto unit {}: {e}", unit.label)),
        }
    }
    if units.is_empty() {
        return Err(KmsError::NoUnit(format!(
            "service instance {instance} has no crypto unit to {what}"
        )));
    }
    if no_mk == units.len() {
        return Err(KmsError::NoMasterKey {
            instance: instance.to_owned(),
        });
    }
    Err(KmsError::NoUnit(format!(
        "no crypto unit of service instance {instance} could {what}: {}",
        failures.join("; ")
    )))
}

impl LocalKms {
    /// The service over `store` and `units`; `instance` names the instance in messages.
    pub fn new(
        store: Box<dyn KeyStore + Send>,
        units: Box<dyn InstanceUnits>,
        instance: impl Into<String>,
    ) -> Self {
        Self {
            store: Mutex::new(store),
            units,
            instance: instance.into(),
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Box<dyn KeyStore + Send>> {
        // A panic while the lock was held left no half-done change: every store
        // operation is one transaction.
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn units(&self) -> Result<Vec<UnitRef>, KmsError> {
        let mut units = self.units.units()?;
        units.sort_by_key(|u| preference(u.unit_type));
        Ok(units)
    }

    fn marker(&self) -> Result<Option<RotationMarker>, KmsError> {
        Ok(self.store().rotation()?)
    }

    fn refuse_during_rotation(&self) -> Result<(), KmsError> {
        match self.marker()? {
            Some(_) => Err(KmsError::RotationInProgress),
            None => Ok(()),
        }
    }

    fn record(&self, id: &KeyId) -> Result<Record, KmsError> {
        self.store().get(id).map_err(|e| no_such_key(e, id))
    }

    fn in_progress(&self) -> Result<RotationMarker, KmsError> {
        self.marker()?.ok_or_else(|| {
            KmsError::Rotation(format!(
                "no master key rotation is in progress in the key storage of service \
                 instance {}",
                self.instance
            ))
        })
    }
}

fn no_such_key(e: StoreError, id: &KeyId) -> KmsError {
    match e {
        StoreError::NotFound { .. } => KmsError::NoSuchKey(*id),
        e => KmsError::Store(e),
    }
}

fn info(r: &Record) -> KeyInfo {
    KeyInfo {
        id: r.id,
        name: r.name.clone(),
        created: r.created,
        vp: r.vp,
    }
}

/// The name of key `i` (from 1) of a batch of `count`.
fn batch_name(name: &KeyName, i: usize, count: usize) -> Result<KeyName, KmsError> {
    if count == 1 {
        return Ok(name.clone());
    }
    KeyName::new(&format!("{name}-{i}")).map_err(|e| {
        KmsError::Input(format!(
            "with --count {count} the keys are named {name}-1 … {name}-{count}: {e}"
        ))
    })
}

/// The rotation as the store records it.
fn marker_of(r: Rotation) -> RotationMarker {
    RotationMarker {
        from: r.from,
        to: r.to,
    }
}

impl KeyService for LocalKms {
    fn create(&self, name: &KeyName, count: u32) -> Result<Vec<KeyInfo>, KmsError> {
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count == 0 {
            return Err(KmsError::Input(
                "the number of keys to create must be at least 1".into(),
            ));
        }
        // Names are checked before any unit is asked.
        let names = (1..=count)
            .map(|i| batch_name(name, i, count))
            .collect::<Result<Vec<_>, _>>()?;
        self.refuse_during_rotation()?;
        let units = self.units()?;
        let max = self.units.max_batch().get();
        let mut vp: Option<Vp> = None;
        let mut wrapped = Vec::with_capacity(count);
        while wrapped.len() < count {
            let n = (count - wrapped.len()).min(max);
            let got = on_some_unit(&units, "generate root keys", &self.instance, |u| {
                let g = self.units.generate_keys(u, n)?;
                if g.keys.len() != n {
                    return Err(UnitCallError::Failed(
                        format!("it returned {} keys for {n}", g.keys.len()).into(),
                    ));
                }
                Ok(g)
            })?;
            // Every key of the batch under one master key: a rotation that started
            // between two calls is the caller's to retry.
            if vp.is_some_and(|v| v != got.vp) {
                return Err(KmsError::RotationInProgress);
            }
            vp = Some(got.vp);
            wrapped.extend(got.keys);
        }
        let Some(vp) = vp else {
            return Ok(Vec::new());
        };
        let records: Vec<Record> = names
            .into_iter()
            .zip(wrapped)
            .map(|(n, w)| Record::new(n, w, vp))
            .collect();
        let mut store = self.store();
        // Checked again under the lock: a rotation begun meanwhile must see no new
        // record under its old key after it started.
        if store.rotation()?.is_some() {
            return Err(KmsError::RotationInProgress);
        }
        store.insert_all(&records)?;
        Ok(records.iter().map(info).collect())
    }

    fn list(&self) -> Result<Vec<KeyInfo>, KmsError> {
        let store = self.store();
        let page = NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN);
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let records = store.list(after.as_ref(), page)?;
            let Some(last) = records.last() else {
                return Ok(out);
            };
            after = Some(tke_keystore::ListCursor::after(last));
            out.extend(records.iter().map(info));
        }
    }

    fn show(&self, id: &KeyId) -> Result<KeyInfo, KmsError> {
        Ok(info(&self.record(id)?))
    }

    fn delete(&self, id: &KeyId) -> Result<(), KmsError> {
        self.store().delete(id).map_err(|e| no_such_key(e, id))
    }

    fn wrap(&self, id: &KeyId, data_key: &[u8]) -> Result<Vec<u8>, KmsError> {
        check_data_key(data_key)?;
        self.refuse_during_rotation()?;
        let record = self.record(id)?;
        let units = self.units()?;
        let wrapped = on_some_unit(&units, "wrap the data key", &self.instance, |u| {
            self.units
                .wrap_data(u, &record.vp, &record.wrapped, data_key)
        })?;
        Ok(WrappedDataKey { root: *id, wrapped }.to_bytes())
    }

    fn unwrap(&self, id: &KeyId, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let file = WrappedDataKey::parse(wrapped)?;
        if file.root != *id {
            return Err(KmsError::Input(format!(
                "this data key was wrapped under root key {}, not {id}; unwrap it with \
                 --key {}",
                file.root, file.root
            )));
        }
        self.refuse_during_rotation()?;
        let record = self.record(id)?;
        let units = self.units()?;
        on_some_unit(&units, "unwrap the data key", &self.instance, |u| {
            self.units
                .unwrap_data(u, &record.vp, &record.wrapped, &file.wrapped)
        })
    }

    fn summary(&self) -> Result<Summary, KmsError> {
        let store = self.store();
        Ok(Summary {
            total: store.count()?,
            by_vp: store.vp_counts()?,
            rotation: store.rotation()?.map(|m| Rotation {
                from: m.from,
                to: m.to,
            }),
            location: store.location().display().to_string(),
        })
    }

    fn begin_rotation(&self, rotation: Rotation) -> Result<(), KmsError> {
        self.store()
            .begin_rotation(&marker_of(rotation))
            .map_err(rotation_err)
    }

    fn reencrypt(&self, max_records: u64) -> Result<Progress, KmsError> {
        let marker = self.in_progress()?;
        let units = self.units()?;
        let per_call = self.units.max_batch();
        // A store transaction spans several unit calls: one commit (one fsync) per
        // STORE_BATCH_CALLS calls instead of one per call.
        let per_tx = per_call.saturating_mul(STORE_BATCH_CALLS);
        let mut budget = max_records;
        let mut store = self.store();
        while budget > 0 {
            let n = usize::try_from(budget).map_or(per_tx, |b| {
                NonZeroUsize::new(b.min(per_tx.get())).unwrap_or(NonZeroUsize::MIN)
            });
            let mut failure = None;
            let moved = store.rewrap_batch_whole(&marker.from, &marker.to, n, &mut |batch| {
                let mut out = Vec::with_capacity(batch.len());
                for chunk in batch.chunks(per_call.get()) {
                    let rewrapped =
                        on_some_unit(&units, "re-encrypt the key storage", &self.instance, |u| {
                            self.units.rewrap(u, &marker.from, &marker.to, chunk)
                        })
                        .map_err(|e| {
                            let text = e.to_string();
                            failure = Some(e);
                            text
                        })?;
                    out.extend(rewrapped);
                }
                Ok(out)
            });
            let moved = match (moved, failure) {
                (Ok(m), _) => m,
                // The units' own error, not the store's wrapping of it.
                (Err(StoreError::RewrapBatch { .. }), Some(e)) => return Err(e),
                (Err(e), _) => return Err(e.into()),
            };
            if moved == 0 {
                break;
            }
            budget = budget.saturating_sub(moved as u64);
        }
        let total = store.count()?;
        let left = store.count_by_vp(&marker.from)?;
        Ok(Progress {
            done: total.saturating_sub(left),
            total,
        })
    }

    fn finish_rotation(&self) -> Result<(), KmsError> {
        let marker = self.in_progress()?;
        self.store().finish_rotation(&marker).map_err(rotation_err)
    }
}

/// Store errors about the rotation are the caller's mistake, said as such.
fn rotation_err(e: StoreError) -> KmsError {
    match e {
        StoreError::OtherRotation { .. }
        | StoreError::NotThisRotation { .. }
        | StoreError::RecordsLeft { .. }
        | StoreError::SameVp { .. } => KmsError::Rotation(e.to_string()),
        e => KmsError::Store(e),
    }
}
