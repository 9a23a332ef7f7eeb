//! [`LocalKms`]: the key-management service over a key store and the instance's units,
//! in the process that holds both (the embedded fleet, a `tke-unitd` server).

use std::{
    collections::VecDeque,
    num::NonZeroUsize,
    ops::Range,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{mpsc, Arc, Mutex},
};

use tke_keystore::{
    BatchCursor, KeyId, KeyName, KeyStore, ReadBatch, Record, RotationMarker, StoreError,
    WrappedKey,
};
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
    /// Units that rewrap at once during re-encryption.
    rewrap_workers: NonZeroUsize,
    /// The rotation's last counts (records in all, left under `from`), so that a
    /// re-encryption step in the middle reports progress without counting the store.
    counts: Mutex<Option<(RotationMarker, u64, u64)>>,
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

/// Store transactions in flight during re-encryption: while the units rewrap the
/// records of the next ones, the store commits the first. 4 smoothed the waits of a
/// loaded machine a little better than 2 (crate documentation).
const PIPELINE_DEPTH: usize = 4;

/// Units that rewrap at once by default (crate documentation: measured on 2 cores).
pub const DEFAULT_REWRAP_WORKERS: NonZeroUsize = match NonZeroUsize::new(1) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

/// Units that rewrap at once by default when a unit of the instance keeps its master key
/// on a PKCS#11 token: there the token's calls dominate a rotation (about 13,000 keys/s
/// per SoftHSM2 unit against 750,000 for a soft unit), so each operational unit rewraps
/// beside the others (crate documentation: measured with SoftHSM2 on 2 cores).
pub const PKCS11_REWRAP_WORKERS: NonZeroUsize = match NonZeroUsize::new(4) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

/// The default of [`LocalKms::with_rewrap_workers`] for an instance whose units have the
/// backends `kinds` (`soft`, `pkcs11`, as `tke_unit::Unit::backend_kind` names them):
/// [`PKCS11_REWRAP_WORKERS`] when one of them is `pkcs11`, else
/// [`DEFAULT_REWRAP_WORKERS`]. At most one worker per operational (or failover) unit is
/// used whatever the figure.
pub fn default_rewrap_workers<'a>(kinds: impl IntoIterator<Item = &'a str>) -> NonZeroUsize {
    if kinds.into_iter().any(|k| k == "pkcs11") {
        PKCS11_REWRAP_WORKERS
    } else {
        DEFAULT_REWRAP_WORKERS
    }
}

/// One unit call of a re-encryption: keys `range` of the `seq`-th batch read.
struct Job {
    seq: usize,
    chunk: usize,
    batch: Arc<ReadBatch>,
    range: Range<usize>,
}

/// A unit call's answer, for the store's thread.
struct Done {
    seq: usize,
    chunk: usize,
    out: Result<Vec<WrappedKey>, KmsError>,
}

/// A batch read and sent to the units, waiting for their answers.
struct InFlight {
    batch: Arc<ReadBatch>,
    parts: Vec<Option<Vec<WrappedKey>>>,
    missing: usize,
}

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
            rewrap_workers: DEFAULT_REWRAP_WORKERS,
            counts: Mutex::new(None),
        }
    }

    /// Sets how many units rewrap at once during re-encryption, each call on its own
    /// thread asking another operational (or failover) unit first; at most one per such
    /// unit is used. Default [`DEFAULT_REWRAP_WORKERS`].
    #[must_use]
    pub fn with_rewrap_workers(mut self, workers: NonZeroUsize) -> Self {
        self.rewrap_workers = workers;
        self
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

/// The error when a re-encryption's worker thread is gone (it never should be).
fn worker_gone() -> KmsError {
    KmsError::NoUnit("a re-encryption worker stopped; nothing of its batch was stored".into())
}

impl LocalKms {
    /// Re-encrypts up to `max_records` records as a pipeline: this thread reads batches
    /// of `max_batch` × [`STORE_BATCH_CALLS`] records and commits each in one store
    /// transaction, in order, while worker threads have units rewrap the next
    /// [`PIPELINE_DEPTH`] − 1 batches, one unit call per `max_batch` keys. A batch is
    /// stored only once every one of its calls succeeded; when a unit call fails, the
    /// batches not committed yet stay under `from`, untouched.
    fn pipeline(
        &self,
        store: &mut (dyn KeyStore + Send),
        marker: &RotationMarker,
        units: &[UnitRef],
        max_records: u64,
    ) -> Result<u64, KmsError> {
        let per_call = self.units.max_batch();
        // A store transaction spans several unit calls: one commit (one fsync) per
        // STORE_BATCH_CALLS calls instead of one per call.
        let per_tx = per_call.saturating_mul(STORE_BATCH_CALLS);
        // One worker per operational (or failover) unit at most, each asking its own
        // unit first: recovery units are only the fallback, as for every operation.
        let primary = units
            .iter()
            .filter(|u| u.unit_type != UnitType::Recovery)
            .count()
            .max(1);
        let workers = self.rewrap_workers.get().min(primary);
        std::thread::scope(|scope| {
            let (done_tx, done_rx) = mpsc::channel::<Done>();
            let mut jobs = Vec::with_capacity(workers);
            for w in 0..workers {
                let (job_tx, job_rx) = mpsc::channel::<Job>();
                jobs.push(job_tx);
                let done_tx = done_tx.clone();
                // Worker w asks the w-th primary unit first, then the other primary
                // units, then the recovery units.
                let (primaries, others) = units.split_at(primary.min(units.len()));
                let mut order = primaries.to_vec();
                let first = w.min(order.len());
                order.rotate_left(first);
                order.extend_from_slice(others);
                scope.spawn(move || {
                    for job in job_rx {
                        let keys = &job.batch.wrapped()[job.range.clone()];
                        // A panic in a unit's code must not leave the store's thread
                        // waiting for an answer that never comes.
                        let out = catch_unwind(AssertUnwindSafe(|| {
                            self.rewrap_on_some(&order, marker, keys)
                        }))
                        .unwrap_or_else(|_| Err(worker_gone()));
                        let done = Done {
                            seq: job.seq,
                            chunk: job.chunk,
                            out,
                        };
                        if done_tx.send(done).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(done_tx);
            // `jobs` is dropped when this returns, which ends the workers.
            commit_in_order(
                store,
                marker,
                max_records,
                per_call,
                per_tx,
                &jobs,
                &done_rx,
            )
        })
    }

    /// One unit call of a re-encryption: `keys` rewrapped by the first of `units` that
    /// can, all of them or an error.
    fn rewrap_on_some(
        &self,
        units: &[UnitRef],
        marker: &RotationMarker,
        keys: &[WrappedKey],
    ) -> Result<Vec<WrappedKey>, KmsError> {
        on_some_unit(units, "re-encrypt the key storage", &self.instance, |u| {
            let out = self.units.rewrap(u, &marker.from, &marker.to, keys)?;
            if out.len() != keys.len() {
                return Err(UnitCallError::Failed(
                    format!("it rewrapped {} keys for {}", out.len(), keys.len()).into(),
                ));
            }
            Ok(out)
        })
    }
}

/// The store's side of [`LocalKms::pipeline`]: reads up to [`PIPELINE_DEPTH`] batches
/// ahead, hands their unit calls to the workers (`jobs`, in turn), and commits each batch,
/// in order, once `done` brought every answer of it. Returns how many records moved.
fn commit_in_order(
    store: &mut (dyn KeyStore + Send),
    marker: &RotationMarker,
    max_records: u64,
    per_call: NonZeroUsize,
    per_tx: NonZeroUsize,
    jobs: &[mpsc::Sender<Job>],
    done: &mpsc::Receiver<Done>,
) -> Result<u64, KmsError> {
    let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(PIPELINE_DEPTH);
    // The sequence number of the batch at the front of `in_flight`.
    let mut front_seq = 0;
    let mut cursor: Option<BatchCursor> = None;
    let mut to_read = max_records;
    let mut exhausted = false;
    let mut next_worker = 0;
    let mut moved = 0u64;
    loop {
        while in_flight.len() < PIPELINE_DEPTH && !exhausted && to_read > 0 {
            let n = usize::try_from(to_read).map_or(per_tx, |b| {
                NonZeroUsize::new(b.min(per_tx.get())).unwrap_or(NonZeroUsize::MIN)
            });
            // Read after the batches in flight: they are still under `from` until
            // committed, and must not be read twice.
            let batch = store.read_batch(&marker.from, cursor, n)?;
            if batch.is_empty() {
                exhausted = true;
                break;
            }
            cursor = batch.next();
            to_read = to_read.saturating_sub(batch.len() as u64);
            let batch = Arc::new(batch);
            let chunks = batch.len().div_ceil(per_call.get());
            let seq = front_seq + in_flight.len();
            for chunk in 0..chunks {
                let start = chunk * per_call.get();
                let range = start..(start + per_call.get()).min(batch.len());
                let job = Job {
                    seq,
                    chunk,
                    batch: Arc::clone(&batch),
                    range,
                };
                jobs.get(next_worker % jobs.len().max(1))
                    .ok_or_else(worker_gone)?
                    .send(job)
                    .map_err(|_| worker_gone())?;
                next_worker += 1;
            }
            in_flight.push_back(InFlight {
                batch,
                parts: (0..chunks).map(|_| None).collect(),
                missing: chunks,
            });
        }
        let Some(front) = in_flight.front() else {
            return Ok(moved);
        };
        let mut missing = front.missing;
        while missing > 0 {
            let answer = done.recv().map_err(|_| worker_gone())?;
            // The first failure ends the run: the batches not committed yet stay
            // under `from`, and the call after resumes from them.
            let out = answer.out?;
            let slot = in_flight
                .get_mut(answer.seq.wrapping_sub(front_seq))
                .ok_or_else(worker_gone)?;
            if let Some(part) = slot.parts.get_mut(answer.chunk) {
                *part = Some(out);
                slot.missing = slot.missing.saturating_sub(1);
            }
            missing = in_flight.front().map_or(0, |f| f.missing);
        }
        let Some(front) = in_flight.pop_front() else {
            return Ok(moved);
        };
        front_seq += 1;
        let new: Vec<WrappedKey> = front.parts.into_iter().flatten().flatten().collect();
        moved += store.commit_batch(&marker.from, &marker.to, &front.batch, &new)? as u64;
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
        let mut store = self.store();
        store.delete(id).map_err(|e| no_such_key(e, id))?;
        // The rotation's counts are taken again at its next step.
        *self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        Ok(())
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
        let mut store = self.store();
        let moved = self.pipeline(&mut **store, &marker, &units, max_records);
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let moved = match moved {
            Ok(m) => m,
            Err(e) => {
                *counts = None;
                return Err(e);
            }
        };
        // In the middle of a rotation (the ceremony calls this every few thousand
        // records), the counts follow from the last ones: counting a million records
        // takes longer than rewrapping thousands. The first step, and any step that
        // would leave none or moved none, counts the store: whether the rotation is done
        // is never taken from an estimate (records deleted by another process meanwhile
        // make the estimate too high, and then a step moves none and counts).
        let (total, left) = match *counts {
            Some((of, total, left)) if of == marker && moved > 0 && left > moved => {
                (total, left - moved)
            }
            _ => (store.count()?, store.count_by_vp(&marker.from)?),
        };
        *counts = Some((marker, total, left));
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
