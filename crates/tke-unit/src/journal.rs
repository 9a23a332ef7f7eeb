//! The journaled state store: the units under one directory append their state records
//! to one journal file, and a writer thread makes every pending record durable with one
//! `fdatasync` (group commit). See "The journal" in the crate docs.
//!
//! File format (`state.journal`, mode 0600): the 8 magic bytes `TKEJRNL1`, then records
//! `len: u32 LE | check: 8 bytes | body: len bytes`, where `check` is the first 8 bytes of
//! SHA-256 over `len || body`, and `body` is `kind: u8 (1 save, 2 remove) | unit id: 16
//! bytes | state record` (no state record for a removal). The last record of a unit wins.
//! A save with its command's audit record (kind 3) puts `at: u64 LE | audit len: u32 LE |
//! audit record` before the state record: `at` is where the record's line starts in the
//! unit's `audit.log`.
//!
//! Audit records: a save that carries one ([`StateStore::save_audited`]) makes it durable
//! in the journal with the state (the same `fdatasync`), then the writer appends its line
//! to the unit's `audit.log` without a sync of its own, at `at`. The log files are synced
//! at compaction, before the journal is emptied; a replay cuts each unit's log back to the
//! first `at` of its records and writes them again. So every answered command's record is
//! in the log after a crash, and nothing past it: until compaction, the journal is the
//! record of the log's tail.
//!
//! Recovery: a record cut short at the end of the file, or a last record that fails its
//! check (a write torn by a crash: it was never acknowledged), is dropped; a record that
//! fails its check with whole records after it is damage, and opening fails naming the
//! file and the byte offset.
//!
//! Compaction: each unit's latest state is written to its own `unit.json` (atomically),
//! then the journal is replaced by an empty one. The writer does it every
//! [`JournalOptions::compact_after`] records, when the journal opens and when it closes,
//! so that between runs the unit directories are complete on their own.

use core::fmt;
use std::{
    collections::{hash_map::Entry, HashMap, HashSet},
    fs::{self, File, OpenOptions},
    io::{self, Seek as _, SeekFrom, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex, PoisonError},
    thread::JoinHandle,
};

use sha2::{Digest as _, Sha256};
use tke_fs::atomic;
use tke_proto::UnitId;

use crate::{audit, state::STATE_FILE, FileStore, StateStore, AUDIT_FILE};

/// The journal's file name in the directory of the units it serves.
pub const JOURNAL_FILE: &str = "state.journal";

const MAGIC: &[u8; 8] = b"TKEJRNL1";
/// Length and check.
const HEAD: usize = 4 + 8;
/// Kind and unit id.
const BODY_HEAD: usize = 1 + 16;
/// Far above any unit's state (a few KiB): a longer record is damage.
const MAX_BODY: usize = 1 << 20;
const SAVE: u8 = 1;
const REMOVE: u8 = 2;
const SAVE_AUDITED: u8 = 3;
/// `at` and the audit record's length.
const AUDIT_HEAD: usize = 8 + 4;

/// Why a journal cannot be opened or closed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file could not be read or written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done: `read`, `write`, `remove`, `start the writer for`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file does not start with the journal's magic bytes.
    #[error(
        "{} is not a unit state journal (it does not start with {}); move it out of the \
         units directory if it is something else",
        path.display(),
        String::from_utf8_lossy(MAGIC)
    )]
    NotAJournal {
        /// The file.
        path: PathBuf,
    },
    /// A record in the middle of the journal is damaged: more of the journal follows it, so it
    /// is not a write torn by a crash.
    #[error(
        "{} is damaged: the record at byte {offset} {what}, and more of the journal follows it; \
         restore the units directory (the unit directories with their journal) from a backup",
        path.display()
    )]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The writer thread ended before it answered (it panicked).
    #[error("the writer of the journal {} stopped unexpectedly", path.display())]
    WriterGone {
        /// The journal file.
        path: PathBuf,
    },
}

/// How a [`Journal`] works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalOptions {
    /// Compact once the journal holds this many records (at least 1): each unit's latest
    /// state goes to its `unit.json` and the journal starts again empty. Bounds the
    /// journal's size and the work of the next open.
    pub compact_after: usize,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self {
            compact_after: 1024,
        }
    }
}

/// What [`Journal::open`] found in the journal left by the previous run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// Whole records replayed.
    pub records: usize,
    /// Units whose `unit.json` the replay brought up to date.
    pub units: usize,
    /// Bytes of a torn last record dropped (never acknowledged to any client).
    pub torn_bytes: u64,
}

/// Counters of a running journal, for logs, tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Records made durable.
    pub records: u64,
    /// `fdatasync` calls that made them durable: fewer than `records` when the writer
    /// grouped the commits of several units.
    pub flushes: u64,
    /// Compactions done (at open, every [`JournalOptions::compact_after`] records, at close).
    pub compactions: u64,
}

/// What the writer thread and the stores share.
struct Shared {
    root: PathBuf,
    path: PathBuf,
    /// Each unit's latest durable record since the last compaction (`None`: removed).
    latest: Mutex<HashMap<UnitId, Option<Vec<u8>>>>,
    stats: Mutex<JournalStats>,
}

impl Shared {
    fn latest<T>(&self, f: impl FnOnce(&mut HashMap<UnitId, Option<Vec<u8>>>) -> T) -> T {
        // Every access replaces whole entries: a panic elsewhere leaves no half state.
        f(&mut self.latest.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn stats<T>(&self, f: impl FnOnce(&mut JournalStats) -> T) -> T {
        f(&mut self.stats.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn state_path(&self, unit: UnitId) -> PathBuf {
        self.root.join(unit.uuid()).join(STATE_FILE)
    }

    fn audit_path(&self, unit: UnitId) -> PathBuf {
        self.root.join(unit.uuid()).join(AUDIT_FILE)
    }
}

/// The audit records a journal holds for one unit: where each line starts in its
/// `audit.log`, and the record's DER, in order.
type AuditTail = Vec<(u64, Vec<u8>)>;

enum Msg {
    /// Append a record (`None`: the unit was removed), answer once it is durable.
    Write {
        unit: UnitId,
        record: Option<Vec<u8>>,
        /// The command's audit record, carried with the state.
        audit: Option<Vec<u8>>,
        reply: mpsc::SyncSender<io::Result<()>>,
    },
    /// Flush, compact, stop.
    Close {
        reply: mpsc::SyncSender<Result<(), JournalError>>,
    },
}

/// The journal of the units under one directory, each in `<dir>/<unit id>`: one file,
/// [`JOURNAL_FILE`], and one writer thread that appends the records of every unit and
/// makes them durable together (group commit). [`Journal::store`] gives each unit its
/// [`StateStore`]; a save returns once its record is durable.
///
/// One process at a time may open a directory's journal (the caller holds the
/// directory's lock, as `tke-unitd` does).
pub struct Journal {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
    writer: Option<JoinHandle<()>>,
    replay: Replay,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.shared.path)
            .field("replay", &self.replay)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens the journal of the unit directories under `dir` (created when absent):
    /// replays what a previous run left (dropping a torn last record), writes each unit's
    /// latest state to its `unit.json`, starts an empty journal and its writer thread.
    ///
    /// # Errors
    /// [`JournalError::NotAJournal`], [`JournalError::Corrupt`] (nothing is changed then),
    /// [`JournalError::Io`] naming the file that could not be read or written (such as
    /// the `unit.json` of a unit whose directory is gone).
    pub fn open(dir: &Path, options: JournalOptions) -> Result<Self, JournalError> {
        let path = dir.join(JOURNAL_FILE);
        let (latest, audits, replay) = match fs::read(&path) {
            Ok(bytes) => replay(&bytes, &path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                (HashMap::new(), HashMap::new(), Replay::default())
            }
            Err(source) => {
                return Err(JournalError::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        // The logs first: the compaction that follows empties the journal that holds
        // their tails. (A unit removed since has no tail.)
        for (unit, tail) in &audits {
            restore_audit(&dir.join(unit.uuid()).join(AUDIT_FILE), tail)?;
        }
        let shared = Arc::new(Shared {
            root: dir.to_owned(),
            path,
            latest: Mutex::new(latest),
            stats: Mutex::new(JournalStats::default()),
        });
        let file = compact(&shared)?;
        let (tx, rx) = mpsc::channel();
        let writer = {
            let shared = shared.clone();
            let compact_after = options.compact_after.max(1);
            std::thread::Builder::new()
                .name("state-journal".into())
                .spawn(move || Writer::new(shared, file, compact_after).run(&rx))
                .map_err(|source| JournalError::Io {
                    action: "start the writer for",
                    path: dir.join(JOURNAL_FILE),
                    source,
                })?
        };
        Ok(Self {
            shared,
            tx,
            writer: Some(writer),
            replay,
        })
    }

    /// The store of the unit `unit`, whose directory is `<dir>/<unit id>`: it loads the
    /// unit's latest record (from the journal, else from its `unit.json`) and saves
    /// through the journal.
    pub fn store(&self, unit: UnitId) -> JournalStore {
        JournalStore {
            shared: self.shared.clone(),
            tx: self.tx.clone(),
            unit,
            location: self.shared.state_path(unit),
        }
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// What opening replayed.
    pub fn replay(&self) -> Replay {
        self.replay
    }

    /// The counters so far.
    pub fn stats(&self) -> JournalStats {
        self.shared.stats(|s| *s)
    }

    /// Makes every record sent so far durable, compacts and stops the writer: the unit
    /// directories are then complete on their own. Saves made afterwards fail.
    ///
    /// # Errors
    /// [`JournalError::Io`] when the compaction fails (the journal then still holds every
    /// record, and the next open replays it); [`JournalError::WriterGone`].
    pub fn close(mut self) -> Result<(), JournalError> {
        let gone = || JournalError::WriterGone {
            path: self.shared.path.clone(),
        };
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx.send(Msg::Close { reply }).map_err(|_| gone())?;
        let result = answer.recv().map_err(|_| gone())?;
        if let Some(w) = self.writer.take() {
            w.join().map_err(|_| gone())?;
        }
        result
    }
}

/// The [`StateStore`] of one unit on a [`Journal`] ([`Journal::store`]). Its location is
/// the unit's `unit.json`, where compaction puts its state.
pub struct JournalStore {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
    unit: UnitId,
    location: PathBuf,
}

impl fmt::Debug for JournalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalStore")
            .field("journal", &self.shared.path)
            .field("unit", &self.unit.uuid())
            .finish_non_exhaustive()
    }
}

impl JournalStore {
    fn write(&self, record: Option<Vec<u8>>, audit: Option<Vec<u8>>) -> io::Result<()> {
        let closed = || {
            io::Error::other(format!(
                "the journal {} is closed",
                self.shared.path.display()
            ))
        };
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx
            .send(Msg::Write {
                unit: self.unit,
                record,
                audit,
                reply,
            })
            .map_err(|_| closed())?;
        answer.recv().map_err(|_| closed())?
    }
}

impl StateStore for JournalStore {
    fn location(&self) -> &Path {
        &self.location
    }

    fn load(&self) -> io::Result<Option<Vec<u8>>> {
        match self.shared.latest(|l| l.get(&self.unit).cloned()) {
            Some(record) => Ok(record),
            None => FileStore::new(self.location.parent().unwrap_or(Path::new("."))).load(),
        }
    }

    fn save(&mut self, record: &[u8]) -> io::Result<()> {
        self.check_size(record.len())?;
        self.write(Some(record.to_vec()), None)
    }

    fn carries_audit(&self) -> bool {
        true
    }

    fn save_audited(&mut self, record: &[u8], audit: &[u8]) -> io::Result<()> {
        self.check_size(AUDIT_HEAD + audit.len() + record.len())?;
        self.write(Some(record.to_vec()), Some(audit.to_vec()))
    }

    fn remove(&mut self) -> io::Result<()> {
        self.write(None, None)
    }
}

impl JournalStore {
    /// Refuses a record of `len` bytes that the journal does not take.
    fn check_size(&self, len: usize) -> io::Result<()> {
        if BODY_HEAD + len > MAX_BODY {
            // Refused here, or the next open would take it for damage.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a state of {} bytes is larger than the journal {} takes ({MAX_BODY} bytes)",
                    len,
                    self.shared.path.display()
                ),
            ));
        }
        Ok(())
    }
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    file: File,
    /// The journal's durable length.
    len: u64,
    /// Records in the journal since the last compaction.
    records: usize,
    compact_after: usize,
    /// Set when a failed append could not be undone: the journal's end is unknown, so
    /// nothing more is appended (every save fails) until the journal is reopened.
    broken: Option<String>,
    /// The audit logs written since the last compaction, synced by the next one.
    audit: HashMap<UnitId, AuditFile>,
    /// Units whose log missed a line after the journal made it durable: rewritten from
    /// the journal before anything else is written to them.
    repair: HashSet<UnitId>,
}

/// A unit's `audit.log` as the writer appends to it.
struct AuditFile {
    file: File,
    /// Where the next line starts.
    end: u64,
}

/// A save waiting for the flush.
struct Pending {
    unit: UnitId,
    record: Option<Vec<u8>>,
    /// The audit record, where its line goes.
    audit: Option<(u64, Vec<u8>)>,
    reply: mpsc::SyncSender<io::Result<()>>,
}

impl Writer {
    fn new(shared: Arc<Shared>, file: File, compact_after: usize) -> Self {
        Self {
            shared,
            file,
            len: MAGIC.len() as u64,
            records: 0,
            compact_after,
            broken: None,
            audit: HashMap::new(),
            repair: HashSet::new(),
        }
    }

    /// Where `der`'s line goes in `unit`'s audit log; opens the log at its first record
    /// since the last compaction.
    fn reserve(&mut self, unit: UnitId, der: &[u8]) -> io::Result<u64> {
        let log = match self.audit.entry(unit) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => {
                let path = self.shared.audit_path(unit);
                let opened = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .and_then(|file| {
                        let end = file.metadata()?.len();
                        Ok(AuditFile { file, end })
                    });
                v.insert(opened.map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot open the audit log {}: {e}", path.display()),
                    )
                })?)
            }
        };
        let at = log.end;
        log.end += audit::line(der).len() as u64;
        Ok(at)
    }

    /// Appends the lines of records the journal made durable. A line that cannot be
    /// written is not lost (the journal holds it): its log is rewritten from the journal.
    fn write_audit(&mut self, pending: &[Pending]) {
        for p in pending {
            let Some((_, der)) = &p.audit else { continue };
            if self.repair.contains(&p.unit) {
                continue;
            }
            let written = match self.audit.get_mut(&p.unit) {
                Some(log) => log.file.write_all(&audit::line(der)),
                None => Err(io::Error::other("not open")),
            };
            if written.is_err() {
                self.repair.insert(p.unit);
            }
        }
        // Tried now, and again before each compaction (which fails until it succeeds).
        let _ = self.repair();
    }

    /// Rewrites the log of each unit in `repair` from the journal.
    fn repair(&mut self) -> Result<(), JournalError> {
        if self.repair.is_empty() {
            return Ok(());
        }
        let bytes = fs::read(&self.shared.path).map_err(|source| JournalError::Io {
            action: "read",
            path: self.shared.path.clone(),
            source,
        })?;
        let (_, audits, _) = replay(&bytes, &self.shared.path)?;
        for unit in self.repair.clone() {
            if let Some(tail) = audits.get(&unit) {
                let path = self.shared.audit_path(unit);
                let end = restore_audit(&path, tail)?;
                if let Some(log) = self.audit.get_mut(&unit) {
                    log.end = end;
                }
            }
            self.repair.remove(&unit);
        }
        Ok(())
    }

    fn run(mut self, rx: &mpsc::Receiver<Msg>) {
        // Each round takes everything that arrived meanwhile: the records of every unit
        // that saved during the previous fdatasync share the next one.
        while let Ok(first) = rx.recv() {
            let mut buf = Vec::new();
            let mut written = Vec::new();
            let mut close = None;
            for msg in std::iter::once(first).chain(rx.try_iter()) {
                match msg {
                    Msg::Write {
                        unit,
                        record,
                        audit,
                        reply,
                    } => {
                        let audit = match audit.map(|der| (self.reserve(unit, &der), der)) {
                            None => None,
                            Some((Ok(at), der)) => Some((at, der)),
                            Some((Err(e), _)) => {
                                // Nothing written: the save fails, its state unchanged.
                                let _ = reply.send(Err(e));
                                continue;
                            }
                        };
                        let carried = audit.as_ref().map(|(at, der)| (*at, &der[..]));
                        encode(&mut buf, unit, record.as_deref(), carried);
                        written.push(Pending {
                            unit,
                            record,
                            audit,
                            reply,
                        });
                    }
                    Msg::Close { reply } => close = Some(reply),
                }
            }
            if !written.is_empty() {
                self.commit(&buf, written);
            }
            if let Some(reply) = close {
                let _ = reply.send(self.compact());
                return;
            }
            if self.records >= self.compact_after {
                // A failed compaction loses nothing (the journal keeps every record): it
                // is tried again after as many records.
                if self.compact().is_err() {
                    self.records = 0;
                }
            }
        }
        // Every store and the journal are gone: nothing is pending, nothing to compact
        // that the next open would not.
    }

    /// Appends `buf`, makes it durable, writes the audit lines, then answers each writer.
    fn commit(&mut self, buf: &[u8], written: Vec<Pending>) {
        let result = match &self.broken {
            Some(why) => Err(io::Error::other(why.clone())),
            None => self
                .file
                .write_all(buf)
                .and_then(|()| self.file.sync_data()),
        };
        match result {
            Ok(()) => {
                self.len += buf.len() as u64;
                self.records += written.len();
                self.shared.stats(|s| {
                    s.records += written.len() as u64;
                    s.flushes += 1;
                });
                self.write_audit(&written);
                let mut replies = Vec::with_capacity(written.len());
                self.shared.latest(|l| {
                    for p in written {
                        l.insert(p.unit, p.record);
                        replies.push(p.reply);
                    }
                });
                for r in replies {
                    let _ = r.send(Ok(()));
                }
            }
            Err(e) => {
                let path = self.shared.path.display().to_string();
                if self.broken.is_none() {
                    // Undo a partial append so that no unacknowledged record can surface
                    // at the next open; if even that fails, stop appending.
                    let undone = self
                        .file
                        .set_len(self.len)
                        .and_then(|()| self.file.sync_data());
                    if let Err(u) = undone {
                        self.broken = Some(format!(
                            "the journal {path} could not be written ({e}) nor cut back to \
                             its last durable record ({u}): it takes no more records until \
                             it is reopened"
                        ));
                    }
                }
                // The lines reserved were not written: each log ends where the batch's
                // first line for it would have started. (The logs stay open: lines
                // written by earlier batches are synced at the next compaction.)
                for p in written.iter().rev() {
                    if let (Some((at, _)), Some(log)) = (&p.audit, self.audit.get_mut(&p.unit)) {
                        log.end = *at;
                    }
                }
                for Pending { reply, .. } in written {
                    let _ = reply.send(Err(io::Error::new(
                        e.kind(),
                        format!("cannot append to the journal {path}: {e}"),
                    )));
                }
            }
        }
    }

    fn compact(&mut self) -> Result<(), JournalError> {
        if let Some(why) = &self.broken {
            return Err(JournalError::Io {
                action: "write",
                path: self.shared.path.clone(),
                source: io::Error::other(why.clone()),
            });
        }
        // The logs' tails are durable before the journal that holds them is emptied.
        self.repair()?;
        for (unit, log) in &self.audit {
            log.file.sync_data().map_err(|source| JournalError::Io {
                action: "write",
                path: self.shared.audit_path(*unit),
                source,
            })?;
        }
        self.audit.clear();
        self.file = compact(&self.shared)?;
        self.len = MAGIC.len() as u64;
        self.records = 0;
        Ok(())
    }
}

/// Writes each unit's latest state to its `unit.json` (or removes it), then replaces the
/// journal with an empty one, and returns it open for appending. A crash at any point
/// leaves the journal whole, or the unit files complete: the next open replays to the
/// same states.
fn compact(shared: &Shared) -> Result<File, JournalError> {
    let latest = shared.latest(|l| l.clone());
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| JournalError::Io {
            action,
            path,
            source,
        }
    };
    for (unit, record) in &latest {
        let path = shared.state_path(*unit);
        match record {
            Some(r) => atomic::write_private(&path, r).map_err(io("write", &path))?,
            None => {
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io("remove", &path)(e))
                    }
                    _ => {}
                }
                let dir = path.parent().unwrap_or(Path::new("."));
                if dir.is_dir() {
                    File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(io("write", dir))?;
                }
            }
        }
    }
    atomic::write_private(&shared.path, MAGIC).map_err(io("write", &shared.path))?;
    let file = OpenOptions::new()
        .append(true)
        .open(&shared.path)
        .map_err(io("write", &shared.path))?;
    // Only the writer (or open, before it starts) changes the map: what was just written
    // out is what it holds.
    shared.latest(HashMap::clear);
    shared.stats(|s| s.compactions += 1);
    Ok(file)
}

/// The journal beside the unit directory `dir` when it holds records not yet compacted
/// into the unit files.
pub(crate) fn pending(dir: &Path) -> Option<PathBuf> {
    let journal = dir.parent()?.join(JOURNAL_FILE);
    let len = fs::metadata(&journal).ok()?.len();
    (len > MAGIC.len() as u64).then_some(journal)
}

fn encode(buf: &mut Vec<u8>, unit: UnitId, record: Option<&[u8]>, audit: Option<(u64, &[u8])>) {
    let payload = record.unwrap_or_default();
    let carried = audit.map_or(0, |(_, der)| AUDIT_HEAD + der.len());
    let len = BODY_HEAD + carried + payload.len();
    // Saves above MAX_BODY are refused before they get here.
    let len_bytes = u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes();
    let start = buf.len();
    buf.extend_from_slice(&len_bytes);
    buf.extend_from_slice(&[0; 8]);
    buf.push(match (record, audit) {
        (None, _) => REMOVE,
        (Some(_), None) => SAVE,
        (Some(_), Some(_)) => SAVE_AUDITED,
    });
    buf.extend_from_slice(unit.as_bytes());
    if let Some((at, der)) = audit {
        buf.extend_from_slice(&at.to_le_bytes());
        // Saves above MAX_BODY are refused before they get here.
        buf.extend_from_slice(&u32::try_from(der.len()).unwrap_or(u32::MAX).to_le_bytes());
        buf.extend_from_slice(der);
    }
    buf.extend_from_slice(payload);
    let check = checksum(&len_bytes, &buf[start + HEAD..]);
    buf[start + 4..start + HEAD].copy_from_slice(&check);
}

fn checksum(len: &[u8; 4], body: &[u8]) -> [u8; 8] {
    let digest = Sha256::new()
        .chain_update(len)
        .chain_update(body)
        .finalize();
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// One decoded record, or why the bytes at an offset are not one.
enum Decoded<'a> {
    Record {
        unit: UnitId,
        record: Option<&'a [u8]>,
        /// The audit record carried, and where its line starts in the unit's log.
        audit: Option<(u64, &'a [u8])>,
        used: usize,
    },
    /// The bytes end before the record does.
    Short,
    /// A whole record (of `used` bytes, when its length is plausible) that is wrong.
    Bad {
        used: Option<usize>,
        what: &'static str,
    },
}

fn decode(rest: &[u8]) -> Decoded<'_> {
    let Some((len_bytes, after)) = rest.split_first_chunk::<4>() else {
        return Decoded::Short;
    };
    let len = u32::from_le_bytes(*len_bytes) as usize;
    if !(BODY_HEAD..=MAX_BODY).contains(&len) {
        return Decoded::Bad {
            used: None,
            what: "has an impossible length",
        };
    }
    let Some((check, after)) = after.split_first_chunk::<8>() else {
        return Decoded::Short;
    };
    let Some(body) = after.get(..len) else {
        return Decoded::Short;
    };
    let used = Some(HEAD + len);
    if checksum(len_bytes, body) != *check {
        return Decoded::Bad {
            used,
            what: "fails its checksum",
        };
    }
    let (kind, after) = (body[0], &body[1..]);
    let Ok(unit) = UnitId::from_slice(&after[..16]) else {
        return Decoded::Bad {
            used,
            what: "has no unit id",
        };
    };
    let payload = &after[16..];
    let unknown = Decoded::Bad {
        used,
        what: "has an unknown kind",
    };
    let (record, audit) = match kind {
        SAVE => (Some(payload), None),
        REMOVE if payload.is_empty() => (None, None),
        SAVE_AUDITED => match split_audit(payload) {
            Some((at, der, state)) => (Some(state), Some((at, der))),
            None => {
                return Decoded::Bad {
                    used,
                    what: "has an audit record longer than itself",
                }
            }
        },
        _ => return unknown,
    };
    Decoded::Record {
        unit,
        record,
        audit,
        used: HEAD + len,
    }
}

/// `at`, the audit record and the state record of a [`SAVE_AUDITED`] payload.
fn split_audit(payload: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let (at, rest) = payload.split_first_chunk::<8>()?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    (len <= rest.len()).then(|| (u64::from_le_bytes(*at), &rest[..len], &rest[len..]))
}

type Latest = HashMap<UnitId, Option<Vec<u8>>>;
type Audits = HashMap<UnitId, AuditTail>;

/// Cuts the audit log `path` back to where the first record of `tail` starts and writes
/// the records of `tail` after it, then makes it durable; returns its length.
fn restore_audit(path: &Path, tail: &AuditTail) -> Result<u64, JournalError> {
    let Some((start, _)) = tail.first() else {
        return Ok(0);
    };
    let mut lines = Vec::new();
    for (_, der) in tail {
        lines.extend_from_slice(&audit::line(der));
    }
    let restored = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| {
            file.set_len(*start)?;
            file.seek(SeekFrom::Start(*start))?;
            file.write_all(&lines)?;
            file.sync_data()
        });
    restored.map_err(|source| JournalError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })?;
    Ok(start + lines.len() as u64)
}

/// Reads a journal: each unit's last record, the audit records it carries, and what was
/// found.
fn replay(bytes: &[u8], path: &Path) -> Result<(Latest, Audits, Replay), JournalError> {
    let mut latest = HashMap::new();
    let mut audits: Audits = HashMap::new();
    let mut found = Replay::default();
    if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
        // Only an interrupted creation could leave this: no record was ever in it.
        return Ok((latest, audits, found));
    }
    let Some(mut rest) = bytes.strip_prefix(MAGIC) else {
        return Err(JournalError::NotAJournal {
            path: path.to_owned(),
        });
    };
    while !rest.is_empty() {
        match decode(rest) {
            Decoded::Record {
                unit,
                record,
                audit,
                used,
            } => {
                match (record, audit) {
                    (None, _) => {
                        audits.remove(&unit);
                    }
                    (Some(_), Some((at, der))) => {
                        audits.entry(unit).or_default().push((at, der.to_vec()));
                    }
                    (Some(_), None) => {}
                }
                latest.insert(unit, record.map(<[u8]>::to_vec));
                found.records += 1;
                rest = &rest[used..];
            }
            Decoded::Short => {
                found.torn_bytes = rest.len() as u64;
                break;
            }
            // A last record torn by a crash: its end at the end of the file, or zeros
            // where the file grew but its data never reached the disk.
            Decoded::Bad { used, .. }
                if used == Some(rest.len()) || rest.iter().all(|b| *b == 0) =>
            {
                found.torn_bytes = rest.len() as u64;
                break;
            }
            Decoded::Bad { what, .. } => {
                return Err(JournalError::Corrupt {
                    path: path.to_owned(),
                    offset: (bytes.len() - rest.len()) as u64,
                    what,
                })
            }
        }
    }
    found.units = latest.len();
    Ok((latest, audits, found))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_dir(root: &Path, unit: UnitId) -> PathBuf {
        let d = root.join(unit.uuid());
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn state(root: &Path, unit: UnitId) -> Option<Vec<u8>> {
        FileStore::new(&root.join(unit.uuid())).load().unwrap()
    }

    /// A journal left as a crash leaves it: its records not compacted.
    fn crashed(root: &Path, writes: &[(UnitId, &[u8])]) -> Vec<u8> {
        let j = Journal::open(
            root,
            JournalOptions {
                compact_after: usize::MAX,
            },
        )
        .unwrap();
        for (u, r) in writes {
            j.store(*u).save(r).unwrap();
        }
        // Dropped, not closed: nothing compacts.
        drop(j);
        fs::read(root.join(JOURNAL_FILE)).unwrap()
    }

    #[test]
    fn saves_are_replayed_and_compacted_into_the_unit_files() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (UnitId::random(), UnitId::random());
        unit_dir(d.path(), a);
        unit_dir(d.path(), b);
        let bytes = crashed(
            d.path(),
            &[(a, b"a1"), (b, b"b1"), (a, b"a2"), (b, b"b2"), (a, b"a3")],
        );
        assert!(bytes.starts_with(MAGIC) && bytes.len() > MAGIC.len());
        assert_eq!(state(d.path(), a), None, "not compacted yet");

        let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
        assert_eq!(
            j.replay(),
            Replay {
                records: 5,
                units: 2,
                torn_bytes: 0
            }
        );
        assert_eq!(state(d.path(), a).as_deref(), Some(&b"a3"[..]));
        assert_eq!(state(d.path(), b).as_deref(), Some(&b"b2"[..]));
        assert_eq!(fs::read(j.path()).unwrap(), MAGIC, "an empty journal again");
        assert_eq!(j.store(a).load().unwrap().as_deref(), Some(&b"a3"[..]));
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(j.path()).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);

        // Saved, visible at once, in the unit file after close.
        let mut s = j.store(b);
        s.save(b"b3").unwrap();
        assert_eq!(s.load().unwrap().as_deref(), Some(&b"b3"[..]));
        assert_eq!(state(d.path(), b).as_deref(), Some(&b"b2"[..]));
        let mut ra = j.store(a);
        ra.remove().unwrap();
        assert_eq!(ra.load().unwrap(), None);
        j.close().unwrap();
        assert_eq!(state(d.path(), b).as_deref(), Some(&b"b3"[..]));
        assert_eq!(state(d.path(), a), None);
        assert!(s.save(b"b4").unwrap_err().to_string().contains("is closed"));
    }

    #[test]
    fn a_failed_append_fails_every_waiting_save_and_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let u = UnitId::random();
        unit_dir(d.path(), u);
        let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
        j.store(u).save(b"before").unwrap();
        // A writer whose journal is a device that takes no data (ENOSPC) and cannot be cut
        // back either: the save fails, and so does every later one.
        let (tx, rx) = mpsc::channel();
        let full = OpenOptions::new().append(true).open("/dev/full").unwrap();
        let writer = Writer::new(j.shared.clone(), full, usize::MAX);
        let thread = std::thread::spawn(move || writer.run(&rx));
        let mut s = JournalStore {
            shared: j.shared.clone(),
            tx,
            unit: u,
            location: j.shared.state_path(u),
        };
        let e = s.save(b"after").unwrap_err();
        assert!(
            e.to_string().contains("cannot append to the journal"),
            "{e}"
        );
        assert!(e.to_string().contains(JOURNAL_FILE), "{e}");
        let e = s.save(b"again").unwrap_err();
        assert!(e.to_string().contains("until it is reopened"), "{e}");
        assert_eq!(s.load().unwrap().as_deref(), Some(&b"before"[..]));
        assert_eq!(j.stats().records, 1, "only the first save counted");
        drop(s);
        thread.join().unwrap();
    }

    #[test]
    fn a_state_too_large_for_the_journal_is_refused_and_nothing_changes() {
        let d = tempfile::tempdir().unwrap();
        let u = UnitId::random();
        unit_dir(d.path(), u);
        let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
        let mut s = j.store(u);
        s.save(b"small").unwrap();
        let e = s.save(&vec![b'x'; MAX_BODY]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains(JOURNAL_FILE), "{e}");
        assert_eq!(s.load().unwrap().as_deref(), Some(&b"small"[..]));
        assert_eq!(j.stats().records, 1);
    }

    #[test]
    fn every_truncated_tail_opens_to_the_last_whole_record() {
        let d = tempfile::tempdir().unwrap();
        let u = UnitId::random();
        unit_dir(d.path(), u);
        let writes: Vec<(UnitId, Vec<u8>)> = (1..=4)
            .map(|i| (u, format!("state {i} {}", "x".repeat(i * 7)).into_bytes()))
            .collect();
        let refs: Vec<(UnitId, &[u8])> = writes.iter().map(|(u, r)| (*u, &r[..])).collect();
        let full = crashed(d.path(), &refs);
        // Where each record ends.
        let mut ends = vec![MAGIC.len()];
        for (_, r) in &writes {
            ends.push(ends.last().unwrap() + HEAD + BODY_HEAD + r.len());
        }
        assert_eq!(*ends.last().unwrap(), full.len());
        for cut in 0..=full.len() {
            let root = tempfile::tempdir().unwrap();
            unit_dir(root.path(), u);
            fs::write(root.path().join(JOURNAL_FILE), &full[..cut]).unwrap();
            let j = Journal::open(root.path(), JournalOptions::default())
                .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            let whole = ends.iter().filter(|e| **e <= cut).count().saturating_sub(1);
            let expected = whole.checked_sub(1).map(|i| writes[i].1.clone());
            assert_eq!(state(root.path(), u), expected, "cut at {cut}");
            let torn = if cut < MAGIC.len() {
                0
            } else {
                cut - ends[whole]
            };
            assert_eq!(j.replay().records, whole, "cut at {cut}");
            assert_eq!(j.replay().torn_bytes, torn as u64, "cut at {cut}");
            // The journal goes on after the dropped tail.
            j.store(u).save(b"after").unwrap();
            drop(j);
            Journal::open(root.path(), JournalOptions::default()).unwrap();
            assert_eq!(state(root.path(), u).as_deref(), Some(&b"after"[..]));
        }
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_damage_in_the_middle_is_named() {
        let d = tempfile::tempdir().unwrap();
        let u = UnitId::random();
        unit_dir(d.path(), u);
        let full = crashed(d.path(), &[(u, b"one"), (u, b"two"), (u, b"three")]);
        let second = MAGIC.len() + HEAD + BODY_HEAD + 3;
        let open = |bytes: &[u8]| {
            fs::write(d.path().join(JOURNAL_FILE), bytes).unwrap();
            Journal::open(d.path(), JournalOptions::default()).map(|j| j.replay())
        };

        // The last record's bytes garbled, or zeros where the file grew: torn, dropped.
        let mut last_garbled = full.clone();
        *last_garbled.last_mut().unwrap() ^= 1;
        assert_eq!(open(&last_garbled).unwrap().records, 2);
        assert_eq!(state(d.path(), u).as_deref(), Some(&b"two"[..]));
        let mut zeros = full.clone();
        zeros.extend_from_slice(&[0; 100]);
        let r = open(&zeros).unwrap();
        assert_eq!((r.records, r.torn_bytes), (3, 100));

        // The second record garbled, with a whole record after it: damage, named.
        let mut middle = full.clone();
        middle[second + HEAD + 2] ^= 1;
        let e = open(&middle).unwrap_err();
        assert!(
            matches!(e, JournalError::Corrupt { offset, what: "fails its checksum", .. } if offset == second as u64),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains(JOURNAL_FILE) && text.contains(&format!("byte {second}")),
            "{text}"
        );
        // Nothing changed: the damaged journal is still there for whoever restores it.
        assert_eq!(fs::read(d.path().join(JOURNAL_FILE)).unwrap(), middle);

        let mut length = full.clone();
        length[second..second + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = open(&length).unwrap_err();
        assert!(
            matches!(
                e,
                JournalError::Corrupt {
                    what: "has an impossible length",
                    ..
                }
            ),
            "{e:?}"
        );

        let e = open(b"TKEJRNL2").unwrap_err();
        assert!(matches!(e, JournalError::NotAJournal { .. }), "{e:?}");
        assert!(e.to_string().contains("is not a unit state journal"), "{e}");
    }

    #[test]
    fn concurrent_saves_are_all_durable() {
        let d = tempfile::tempdir().unwrap();
        let units: Vec<UnitId> = (0..8).map(|_| UnitId::random()).collect();
        for u in &units {
            unit_dir(d.path(), *u);
        }
        let j = Journal::open(d.path(), JournalOptions { compact_after: 100 }).unwrap();
        std::thread::scope(|s| {
            for u in &units {
                let mut store = j.store(*u);
                s.spawn(move || {
                    for i in 0..60 {
                        store.save(format!("{i}").as_bytes()).unwrap();
                    }
                });
            }
        });
        let stats = j.stats();
        assert_eq!(stats.records, 480);
        assert!(stats.flushes <= 480);
        // Opening compacted once; 480 records, 100 at a time, at least four more times.
        assert!(stats.compactions >= 5, "{stats:?}");
        drop(j);
        Journal::open(d.path(), JournalOptions::default()).unwrap();
        for u in &units {
            assert_eq!(state(d.path(), *u).as_deref(), Some(&b"59"[..]));
        }
    }

    #[test]
    fn carried_audit_records_are_written_synced_at_compaction_and_restored_at_replay() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (UnitId::random(), UnitId::random());
        for u in [a, b] {
            fs::write(unit_dir(d.path(), u).join(AUDIT_FILE), b"").unwrap();
        }
        let log = |u: UnitId| fs::read(d.path().join(u.uuid()).join(AUDIT_FILE)).unwrap();
        let no_compaction = JournalOptions {
            compact_after: usize::MAX,
        };
        let j = Journal::open(d.path(), no_compaction).unwrap();
        let (mut sa, mut sb) = (j.store(a), j.store(b));
        assert!(sa.carries_audit());
        sa.save_audited(b"a1", b"\x01\x02").unwrap();
        sb.save_audited(b"b1", b"\x03").unwrap();
        sa.save(b"a2").unwrap();
        sa.save_audited(b"a3", b"\x04").unwrap();
        // Written by the time the save returns.
        assert_eq!(log(a), b"0102\n04\n");
        assert_eq!(log(b), b"03\n");
        drop(j);
        // A crash: unit a's log lost its tail, and b's got a torn line after its records.
        fs::write(d.path().join(a.uuid()).join(AUDIT_FILE), b"01").unwrap();
        let mut torn = log(b);
        torn.extend_from_slice(b"0a0b");
        fs::write(d.path().join(b.uuid()).join(AUDIT_FILE), torn).unwrap();

        let j = Journal::open(d.path(), no_compaction).unwrap();
        assert_eq!(j.replay().records, 4);
        assert_eq!(log(a), b"0102\n04\n", "restored from the journal");
        assert_eq!(log(b), b"03\n", "the torn line is gone");
        assert_eq!(state(d.path(), a).as_deref(), Some(&b"a3"[..]));
        // The next records go on at the logs' ends; a unit removed meanwhile leaves its
        // records out of the replay.
        j.store(b).save_audited(b"b2", b"\x05").unwrap();
        j.store(a).remove().unwrap();
        drop(j);
        fs::remove_dir_all(d.path().join(a.uuid())).unwrap();
        let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
        assert_eq!(log(b), b"03\n05\n");
        j.close().unwrap();
        assert_eq!(fs::read(d.path().join(JOURNAL_FILE)).unwrap(), MAGIC);
    }

    #[test]
    fn a_failed_append_gives_back_the_log_lines_it_reserved_and_keeps_the_log_to_sync() {
        let d = tempfile::tempdir().unwrap();
        let u = UnitId::random();
        fs::write(unit_dir(d.path(), u).join(AUDIT_FILE), b"").unwrap();
        let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.path().join("other.journal"))
            .unwrap();
        let mut w = Writer::new(j.shared.clone(), file, usize::MAX);
        let batch = |w: &mut Writer, der: &[u8]| {
            let at = w.reserve(u, der).unwrap();
            let mut buf = Vec::new();
            encode(&mut buf, u, Some(b"state"), Some((at, der)));
            let (reply, answer) = mpsc::sync_channel(1);
            let pending = Pending {
                unit: u,
                record: Some(b"state".to_vec()),
                audit: Some((at, der.to_vec())),
                reply,
            };
            w.commit(&buf, vec![pending]);
            (at, answer.recv().unwrap())
        };
        let (first, done) = batch(&mut w, b"\x01");
        assert_eq!((first, done.is_ok()), (0, true));
        // An append that fails (as a full disk would make it) writes no line...
        w.broken = Some("no space".into());
        let (second, failed) = batch(&mut w, b"\x02\x02");
        assert!(failed.is_err());
        assert_eq!(second, 3);
        // ...keeps the log open, for the next compaction to sync the first line...
        assert!(w.audit.contains_key(&u));
        // ...and the next line goes where the failed one would have.
        w.broken = None;
        let (third, done) = batch(&mut w, b"\x03");
        assert_eq!((third, done.is_ok()), (3, true));
        assert_eq!(
            fs::read(d.path().join(u.uuid()).join(AUDIT_FILE)).unwrap(),
            b"01\n03\n"
        );
    }
}
