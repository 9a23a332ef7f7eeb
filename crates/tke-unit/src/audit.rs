//! The unit's audit log: one [`AuditRecord`] per command that consumed the counter, in
//! [`AUDIT_FILE`] of the unit directory (or in memory for a unit without one).
//!
//! Crash safety: the record is appended and made durable *before* the state that consumes
//! the counter is saved, and the state holds the record's hash (the head). The state save
//! is the commit point: a record past the saved counter belongs to a command that was
//! never answered, and [`AuditLog::open`] removes it. So a crash between the two writes
//! loses neither the state nor the record of any answered command. The unit does not
//! judge the rest of the file: it serves what it holds, and the client checks the chain
//! against the head and counter the unit signs.

use std::{
    fs::{self, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use tke_fs::atomic;
use tke_proto::{der::asn1::OctetString, AuditPage, AuditRecord, Digest32, MAX_AUDIT_PAGE};

/// The name of the audit log in a unit directory: one record per line, the hex of its
/// DER.
pub const AUDIT_FILE: &str = "audit.log";

/// The records of a unit, as stored, and where they are stored.
#[derive(Debug)]
pub(crate) struct AuditLog {
    /// `None` for a unit without a directory: the records live only in memory.
    path: Option<PathBuf>,
    /// Each record's DER (or, for a line that is not hex, the line's bytes: the client
    /// reports it).
    records: Vec<Vec<u8>>,
    /// The file's length before the last append, to take it back when the state save
    /// fails.
    undo: Option<u64>,
}

impl AuditLog {
    /// A log held in memory only.
    pub fn in_memory() -> Self {
        Self {
            path: None,
            records: Vec::new(),
            undo: None,
        }
    }

    /// Creates the empty log file of a new unit in `dir`.
    pub fn create(dir: &Path) -> io::Result<Self> {
        let path = dir.join(AUDIT_FILE);
        atomic::write_private(&path, b"")?;
        Ok(Self {
            path: Some(path),
            records: Vec::new(),
            undo: None,
        })
    }

    /// Opens the log of `dir` for a unit whose saved counter is `counter`: creates it
    /// empty if absent (a unit made before the log existed), and removes a last record
    /// past `counter` (its command was never committed).
    pub fn open(dir: &Path, counter: u64) -> io::Result<Self> {
        let path = dir.join(AUDIT_FILE);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Self::create(dir),
            Err(e) => return Err(e),
        };
        let mut records = Vec::new();
        let mut ends = Vec::new();
        let mut offset = 0u64;
        for line in text.split_inclusive(|b| *b == b'\n') {
            offset += line.len() as u64;
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            records.push(hex::decode(body).unwrap_or_else(|_| body.to_vec()));
            ends.push(offset);
        }
        let uncommitted = records
            .last()
            .and_then(|r| AuditRecord::decode_checked(r).ok())
            .is_some_and(|r| r.counter == counter.saturating_add(1));
        if uncommitted {
            records.pop();
            ends.pop();
            let len = ends.last().copied().unwrap_or(0);
            let file = OpenOptions::new().write(true).open(&path)?;
            file.set_len(len)?;
            file.sync_all()?;
        }
        Ok(Self {
            path: Some(path),
            records,
            undo: None,
        })
    }

    /// Appends a record and makes it durable.
    pub fn append(&mut self, der: Vec<u8>) -> io::Result<()> {
        if let Some(path) = &self.path {
            let mut file = OpenOptions::new().append(true).open(path)?;
            let before = file.metadata()?.len();
            let mut line = hex::encode(&der).into_bytes();
            line.push(b'\n');
            let written = file.write_all(&line).and_then(|()| file.sync_data());
            if let Err(e) = written {
                let _ = file.set_len(before);
                return Err(e);
            }
            self.undo = Some(before);
        }
        self.records.push(der);
        Ok(())
    }

    /// Takes back the last append: the state that would have committed it was not saved.
    /// If the file cannot be cut, the next open removes the record.
    pub fn undo_append(&mut self) {
        self.records.pop();
        if let (Some(path), Some(len)) = (&self.path, self.undo.take()) {
            if let Ok(file) = OpenOptions::new().write(true).open(path) {
                let _ = file.set_len(len).and_then(|()| file.sync_all());
            }
        }
    }

    /// The page of records from counter `from` on, for a unit whose first record has
    /// counter `first` and whose last record hashes to `head`. Records are found by their
    /// place in the log.
    pub fn page(
        &self,
        from: u64,
        first: u64,
        head: Digest32,
    ) -> Result<AuditPage, tke_proto::der::Error> {
        let start = usize::try_from(from.max(first) - first).unwrap_or(usize::MAX);
        let start = start.min(self.records.len());
        let end = start.saturating_add(MAX_AUDIT_PAGE).min(self.records.len());
        let prev = match start {
            0 => Digest32([0; 32]),
            i => Digest32::sha256(&self.records[i - 1]),
        };
        Ok(AuditPage {
            first,
            head,
            prev,
            records: self.records[start..end]
                .iter()
                .map(|r| OctetString::new(r.clone()))
                .collect::<Result<_, _>>()?,
        })
    }
}
