//! The unit's audit log: one [`AuditRecord`] per command that consumed the counter, in
//! [`AUDIT_FILE`] of the unit directory (or in memory for a unit without one).
//!
//! Crash safety, with a store that does not carry the record ([`crate::FileStore`]): the
//! record is appended and made durable *before* the state that consumes the counter is
//! saved, and the state holds the record's hash (the head). The state save is the commit
//! point: a record past the saved counter belongs to a command that was never answered,
//! and [`AuditLog::open`] removes it. With a store that carries it (the journal), the
//! record is made durable inside the state's own journal record, and the journal writes
//! it to the file ([`AuditLog::note`] then only counts it). Either way a crash between the
//! two writes loses neither the state nor the record of any answered command. The unit
//! does not judge the rest of the file: it serves what it holds, and the client checks the
//! chain against the head and counter the unit signs.
//!
//! Memory: a unit with a file keeps only the offset of every [`STRIDE`]-th record (8 bytes
//! per 64 records) and reads a page's records from the file, so its memory does not grow
//! with its history.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use tke_fs::atomic;
use tke_proto::{der::asn1::OctetString, AuditPage, AuditRecord, Digest32, MAX_AUDIT_PAGE};

/// The name of the audit log in a unit directory: one record per line, the hex of its
/// DER.
pub const AUDIT_FILE: &str = "audit.log";

/// Records between two offsets kept in memory: a page read skips fewer than this many
/// lines before its first record.
const STRIDE: u64 = MAX_AUDIT_PAGE as u64;

/// The line that holds a record in [`AUDIT_FILE`].
pub(crate) fn line(der: &[u8]) -> Vec<u8> {
    let mut line = hex::encode(der).into_bytes();
    line.push(b'\n');
    line
}

/// Where the records are.
#[derive(Debug)]
enum Records {
    /// A unit without a directory: each record's DER.
    Memory(Vec<Vec<u8>>),
    /// The unit's [`AUDIT_FILE`], read at each page.
    File {
        path: PathBuf,
        /// The bytes of the file that hold the records (a page reads no further).
        len: u64,
        /// The offset of records 0, [`STRIDE`], 2 × [`STRIDE`], …
        index: Vec<u64>,
    },
}

/// The records of a unit, as stored, and where they are stored.
#[derive(Debug)]
pub(crate) struct AuditLog {
    records: Records,
    /// How many records the log holds.
    count: u64,
    /// The file's length before the last append, to take it back when the state save
    /// fails.
    undo: Option<u64>,
}

impl AuditLog {
    /// A log held in memory only.
    pub fn in_memory() -> Self {
        Self {
            records: Records::Memory(Vec::new()),
            count: 0,
            undo: None,
        }
    }

    fn file(path: PathBuf, len: u64, index: Vec<u64>, count: u64) -> Self {
        Self {
            records: Records::File { path, len, index },
            count,
            undo: None,
        }
    }

    /// Creates the empty log file of a new unit in `dir`.
    pub fn create(dir: &Path) -> io::Result<Self> {
        let path = dir.join(AUDIT_FILE);
        atomic::write_private(&path, b"")?;
        Ok(Self::file(path, 0, Vec::new(), 0))
    }

    /// Opens the log of `dir` for a unit whose saved counter is `counter`: creates it
    /// empty if absent (a unit made before the log existed), and removes a last record
    /// past `counter` (its command was never committed). Reads the file once to index it.
    pub fn open(dir: &Path, counter: u64) -> io::Result<Self> {
        let path = dir.join(AUDIT_FILE);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Self::create(dir),
            Err(e) => return Err(e),
        };
        let mut reader = BufReader::new(file);
        let (mut index, mut count, mut len) = (Vec::new(), 0u64, 0u64);
        let (mut last, mut line) = (0u64, Vec::new());
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)? as u64;
            if n == 0 {
                break;
            }
            if count.is_multiple_of(STRIDE) {
                index.push(len);
            }
            last = len;
            len += n;
            count += 1;
        }
        // `line` is empty now; read the last record again to judge it.
        if count > 0 {
            let mut f = reader.into_inner();
            f.seek(SeekFrom::Start(last))?;
            f.take(len - last).read_to_end(&mut line)?;
        }
        let uncommitted = AuditRecord::decode_checked(&decode_line(&line))
            .is_ok_and(|r| r.counter == counter.saturating_add(1));
        if uncommitted {
            count -= 1;
            len = last;
            if count.is_multiple_of(STRIDE) {
                index.pop();
            }
            let file = OpenOptions::new().write(true).open(&path)?;
            file.set_len(len)?;
            file.sync_all()?;
        }
        Ok(Self::file(path, len, index, count))
    }

    /// Appends a record and makes it durable.
    pub fn append(&mut self, der: Vec<u8>) -> io::Result<()> {
        if let Records::File { path, .. } = &self.records {
            let mut file = OpenOptions::new().append(true).open(path)?;
            let before = file.metadata()?.len();
            let written = file.write_all(&line(&der)).and_then(|()| file.sync_data());
            if let Err(e) = written {
                let _ = file.set_len(before);
                return Err(e);
            }
            self.undo = Some(before);
            self.note_at(before, &der);
        } else {
            self.note(der);
        }
        Ok(())
    }

    /// Counts a record that the state store made durable with the state and wrote to the
    /// file itself (the journal, [`crate::StateStore::save_audited`]).
    pub fn note(&mut self, der: Vec<u8>) {
        match &mut self.records {
            Records::Memory(records) => {
                records.push(der);
                self.count += 1;
            }
            Records::File { len, .. } => {
                let at = *len;
                self.note_at(at, &der);
            }
        }
    }

    /// Counts a record whose line starts at `at` in the file.
    fn note_at(&mut self, at: u64, der: &[u8]) {
        if let Records::File { len, index, .. } = &mut self.records {
            if self.count.is_multiple_of(STRIDE) {
                index.push(at);
            }
            *len = at + line(der).len() as u64;
            self.count += 1;
        }
    }

    /// Takes back the last append: the state that would have committed it was not saved.
    /// If the file cannot be cut, the next open removes the record.
    pub fn undo_append(&mut self) {
        match &mut self.records {
            Records::Memory(records) => {
                if records.pop().is_some() {
                    self.count -= 1;
                }
            }
            Records::File { path, len, index } => {
                if let Some(before) = self.undo.take() {
                    self.count -= 1;
                    if self.count.is_multiple_of(STRIDE) {
                        index.pop();
                    }
                    *len = before;
                    if let Ok(file) = OpenOptions::new().write(true).open(&*path) {
                        let _ = file.set_len(before).and_then(|()| file.sync_all());
                    }
                }
            }
        }
    }

    /// Records `start..start + n` (places in the log, clamped to its end).
    fn read(&self, start: u64, n: u64) -> io::Result<Vec<Vec<u8>>> {
        let end = start.saturating_add(n).min(self.count);
        if start >= end {
            return Ok(Vec::new());
        }
        match &self.records {
            Records::Memory(records) => {
                // Both ends are at most `count`, the vector's length.
                let range = usize::try_from(start).unwrap_or(usize::MAX)
                    ..usize::try_from(end).unwrap_or(usize::MAX);
                Ok(records.get(range).unwrap_or_default().to_vec())
            }
            Records::File { path, len, index } => {
                let slot = usize::try_from(start / STRIDE).unwrap_or(usize::MAX);
                let from = index.get(slot).copied().unwrap_or(*len);
                let mut file = File::open(path)?;
                file.seek(SeekFrom::Start(from))?;
                let mut reader = BufReader::new(file.take(len.saturating_sub(from)));
                let mut out = Vec::new();
                let mut line = Vec::new();
                for place in slot as u64 * STRIDE..end {
                    line.clear();
                    if reader.read_until(b'\n', &mut line)? == 0 {
                        // The file got shorter under the unit (an edit): serve what is
                        // there, the client finds the rest missing.
                        break;
                    }
                    if place >= start {
                        out.push(decode_line(&line));
                    }
                }
                Ok(out)
            }
        }
    }

    /// The page of records from counter `from` on, for a unit whose first record has
    /// counter `first` and whose last record hashes to `head`. Records are found by their
    /// place in the log.
    pub fn page(&self, from: u64, first: u64, head: Digest32) -> Result<AuditPage, PageError> {
        let start = (from.max(first) - first).min(self.count);
        let page = MAX_AUDIT_PAGE as u64;
        let (prev, records) = match start {
            0 => (Digest32([0; 32]), self.read(0, page)?),
            _ => {
                // The record before the page too, for its hash.
                let mut records = self.read(start - 1, page + 1)?;
                match records.is_empty() {
                    true => (Digest32([0; 32]), records),
                    false => (Digest32::sha256(&records.remove(0)), records),
                }
            }
        };
        Ok(AuditPage {
            first,
            head,
            prev,
            records: records
                .into_iter()
                .map(OctetString::new)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A line's record: its DER, or for a line that is not hex, its bytes (the client reports
/// it).
fn decode_line(line: &[u8]) -> Vec<u8> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    hex::decode(body).unwrap_or_else(|_| body.to_vec())
}

/// Why a unit cannot serve a page of its log.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PageError {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] io::Error),
    /// A record could not be encoded into the page.
    #[error(transparent)]
    Encode(#[from] tke_proto::der::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every page of `file` equals the same page of `memory`, for every start.
    fn same_pages(file: &AuditLog, memory: &AuditLog) {
        assert_eq!(file.count, memory.count);
        let head = Digest32([7; 32]);
        for from in 0..=file.count + 2 {
            let (f, m) = (
                file.page(from, 1, head).unwrap(),
                memory.page(from, 1, head).unwrap(),
            );
            assert_eq!(f, m, "page from {from}");
        }
    }

    fn record(i: u64) -> Vec<u8> {
        // Records of varied lengths: offsets are not a multiple of anything.
        vec![u8::try_from(i % 251).unwrap(); 1 + usize::try_from(i % 17).unwrap()]
    }

    #[test]
    fn pages_read_from_the_file_match_the_records_across_the_index_stride() {
        let d = tempfile::tempdir().unwrap();
        let mut file = AuditLog::create(d.path()).unwrap();
        let mut memory = AuditLog::in_memory();
        for i in 0..2 * STRIDE + 1 {
            file.append(record(i)).unwrap();
            memory.append(record(i)).unwrap();
        }
        same_pages(&file, &memory);
        // Taken back at the stride's boundary (record 128 had an index entry), then
        // another record in its place.
        file.undo_append();
        memory.undo_append();
        same_pages(&file, &memory);
        file.append(record(1000)).unwrap();
        memory.append(record(1000)).unwrap();
        same_pages(&file, &memory);
        // A record that the journal wrote to the file itself, then counted.
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.path().join(AUDIT_FILE))
            .unwrap();
        f.write_all(&line(&record(1001))).unwrap();
        file.note(record(1001));
        memory.note(record(1001));
        same_pages(&file, &memory);
        // Reopened: the index built from the file gives the same pages.
        let reopened = AuditLog::open(d.path(), u64::MAX - 1).unwrap();
        same_pages(&reopened, &memory);
    }
}
